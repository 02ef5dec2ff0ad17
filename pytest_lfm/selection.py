"""Which collected tests run and in what order: the quick level's selection, the order that makes each runtime
configuration launch once (and timing checks run alone), and xdist's grouping by model."""

from __future__ import annotations

import pytest

from pytest_lfm.markers import launch_variants
from pytest_lfm.matrix import LaunchConfig
from pytest_lfm.runtime import plan
from pytest_lfm.settings import Settings

QUICK_LEAVES_OUT = "not in the quick level (--lfm-level quick): a launch variant, an engine or a timing/memory check"
FIDELITY_OPT_IN = "opt-in (it starts sglang.bench_serving several times): select it with -m lfm_fidelity"


def own_launch(settings: Settings, launch: LaunchConfig) -> bool:
    """Whether ``launch`` is its model's own configuration in a dtype the run asks for (not a variant)."""
    return launch.dtype in settings.dtypes and launch == LaunchConfig(
        launch.model, launch.dtype, "default", settings.server_args)


def quick_leaves_out(item: pytest.Item, settings: Settings) -> bool:
    """The quick level runs the functional suites on each model's own server only: a test's variants (what an
    ``lfm_launch`` marker with arguments asks for) are left out, and of stacked markers the one without arguments
    (the configuration under test) stays."""
    launch = plan.launch_of(item)
    variant = launch is not None and not ({} in launch_variants(item) and own_launch(settings, launch))
    names = set(getattr(item, "fixturenames", ()))
    return variant or "lfm_engine" in names or plan.is_quiet(item) or (
        "lfm_runtime_pool" in plan.own_args(item) and "lfm_server" not in names)


def order_key(settings: Settings, models: list[str], item: pytest.Item, first: dict[str, int]) -> tuple[int, ...]:
    """Timing and memory checks last (no runtime starts or serves beside them); before them each selected model's
    own configurations in selection order, its engine before its server (the engine's start overlaps the server's),
    then the variants markers ask for (float16 probe, low-latency profile) in order of appearance; within a
    configuration, tests that drive the pool themselves last (they stop what they test), and an engine's tests that
    need its server too after those that do not."""
    launch = plan.launch_of(item)
    if launch is None:
        return (-1, 0, 0, 0, 0)
    names = getattr(item, "fixturenames", ())
    kind = "engine" if "lfm_engine" in names else "server"
    order = first.setdefault(plan.launch_key(kind, launch), len(first))
    # an engine test that compares with the server waits for it: the engine's own tests go first
    drives = int("lfm_runtime_pool" in plan.own_args(item)) * 2 + int(kind == "engine" and "lfm_server" in names)
    block = ((0, models.index(launch.model.id), settings.dtypes.index(launch.dtype), kind != "engine")
             if own_launch(settings, launch) else (1, order, 0, 0))
    return (int(plan.is_quiet(item)), *block, drives)




def restore_xdist_group_ids(items: list[pytest.Item]) -> None:
    """xdist <= 3.8 groups by an "@group" suffix it writes to ``item._nodeid``, which pytest >= 9.2 no longer reads
    (pytest-xdist#1386): without this, --dist loadgroup silently spreads one model over every worker."""
    for item in items:
        groups = sorted({str(m.args[0] if m.args else m.kwargs.get("name", "default"))
                         for m in item.iter_markers("xdist_group")})
        if groups and hasattr(item, "_id") and item.nodeid.rfind("@") <= item.nodeid.rfind("]"):
            from _pytest.nodeid import NodeId

            item._id = NodeId.parse(f"{item.nodeid}@{'_'.join(groups)}")
