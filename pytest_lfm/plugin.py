"""pytest-lfm's hooks (its default fixtures are in ``fixtures``, registered with it). The logic lives in the
modules these call."""

from __future__ import annotations

import inspect
import os
import signal
from collections.abc import Generator
from importlib import metadata
from typing import Any

import pytest

from pytest_lfm import report
from pytest_lfm.markers import MARKERS, launch_variants, marker_kwargs
from pytest_lfm.matrix import LaunchConfig, MatrixError, load_matrix
from pytest_lfm.measure.fidelity import FIDELITY_MARKER
from pytest_lfm.messages import Messages
from pytest_lfm.recording.store import unreplayable
from pytest_lfm.runtime import compat, hosts, plan
from pytest_lfm.runtime.schedule import default_max_starting
from pytest_lfm.selection import (
    FIDELITY_OPT_IN,
    order_key,
    quick_leaves_out,
    restore_xdist_group_ids,
)
from pytest_lfm.settings import Settings, add_options, describe, resolve
from pytest_lfm.signals import end_on_signals
from pytest_lfm.state import RUN, Run

pytest_plugins = ("pytest_lfm.fixtures",)


def pytest_addoption(parser: pytest.Parser) -> None:
    add_options(parser)


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    for name, func in MARKERS.items():
        doc = (func.__doc__ or "").split(": ", 1)[-1]
        config.addinivalue_line("markers", f"{name}{inspect.signature(func)}: {doc}".replace(" -> None", ""))
    settings = resolve(config, dict(os.environ))
    try:
        matrix = load_matrix(settings.matrix_paths)
    except MatrixError as exc:
        raise pytest.UsageError(f"pytest-lfm: {exc}") from None
    try:
        selected = matrix.select(settings.models)
    except KeyError as exc:
        raise pytest.UsageError(
            f"pytest-lfm: {matrix.selection_error(exc.args[0], settings.sources['model'])}") from None
    if settings.base_url and len(selected) != 1:
        raise pytest.UsageError(
            f"pytest-lfm: --lfm-base-url {settings.base_url} tests one running server, but the model selection "
            f"({', '.join(settings.models)}) names {len(selected)} models. Pass --lfm-model with the id of the "
            "model that server serves.")
    if problem := unreplayable(settings, selected):
        raise pytest.UsageError(problem)
    config.stash[RUN] = Run(settings, matrix, selected, Messages(config))
    if getattr(config.option, "numprocesses", None) and getattr(config.option, "dist", "no") == "load":
        config.option.dist = "loadgroup"  # all tests of one model on one worker (xdist_group marks below)
    if getattr(config, "workerinput", {}).get("lfm_loadgroup"):
        config.option.loadgroup = True  # a worker derives loadgroup from its own arguments: see pytest_configure_node
    config.addinivalue_line("markers", FIDELITY_MARKER)
    config.pluginmanager.register(RuntimeHooks(config), "lfm-runtime")
    end_on_signals(config)
    report.register(config)


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node: Any) -> None:
    """xdist: tell the worker that the controller schedules by xdist_group (the switch in pytest_configure)."""
    node.workerinput["lfm_loadgroup"] = node.config.option.dist == "loadgroup"


def pytest_unconfigure(config: pytest.Config) -> None:
    run = config.stash.get(RUN, None)
    if run is None:  # configure stopped before the run was set up
        return
    if run.pool is not None:
        run.pool.stop()
    for sig, handler in run.signal_handlers.items():
        signal.signal(sig, handler)


def pytest_report_header(config: pytest.Config) -> list[str]:
    settings = config.stash[RUN].settings
    versions = []
    for dist in ("sglang", "torch", "transformers"):
        try:
            versions.append(f"{dist} {metadata.version(dist)}")
        except metadata.PackageNotFoundError:
            versions.append(f"{dist} not installed")
    gpus = hosts.list_gpus()
    gpu_line = ", ".join(f"{g.index}: {g.name}" for g in gpus) if gpus else "none (CUDA runtime tests will skip)"
    return [
        "pytest-lfm settings (value, source):",
        *describe(settings),
        f"pytest-lfm models: {', '.join(m.id for m in config.stash[RUN].selected)}",
        *config.stash[RUN].matrix.describe_overrides(),
        *config.stash[RUN].matrix.describe_legacy(config.stash[RUN].selected),
        f"pytest-lfm runtime: {'; '.join(versions)}; GPUs: {gpu_line}",
    ]


def _launch_configs(metafunc: pytest.Metafunc) -> list[Any]:
    config = metafunc.config
    settings = config.stash[RUN].settings
    required, _ = marker_kwargs(metafunc.definition, "lfm_requires")
    params = []
    launches: list[LaunchConfig] = []
    for model in config.stash[RUN].selected:
        for variant in launch_variants(metafunc.definition):
            launches += [LaunchConfig(model, dtype, variant.get("profile", "default"),
                                      (*settings.server_args, *variant.get("extra_args", ())),
                                      tuple(sorted(variant.get("env", {}).items())))
                         for dtype in ((variant["dtype"],) if variant.get("dtype") else settings.dtypes)]
    for launch in dict.fromkeys(launches):  # stacked variants that make one configuration run once
        model = launch.model
        missing = set(required) - model.capabilities
        marks = [pytest.mark.xdist_group(model.id)]  # all tests of one model on one worker (loadgroup)
        if missing:
            marks.append(pytest.mark.skip(reason=f"{model.id} lacks capability {', '.join(sorted(missing))}"))
        elif launch.dtype not in model.dtypes:
            marks.append(pytest.mark.skip(reason=f"{model.id} is not qualified for {launch.dtype} (matrix dtypes)"))
        params.append(pytest.param(launch, id=launch.id, marks=marks))
    return params


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "lfm_launch" in metafunc.fixturenames:
        metafunc.parametrize("lfm_launch", _launch_configs(metafunc), indirect=True, scope="session")


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Leave out what the run does not ask for (the quick level's exclusions; under --lfm-replay the ``lfm_live``
    tests, which a recording cannot answer), mark opt-in tests to skip at collection (they then launch nothing),
    order the tests by runtime configuration and make the launch plan from that order."""
    settings = config.stash[RUN].settings
    dropped = [item for item in items if (settings.replay_dir and item.get_closest_marker("lfm_live"))
               or (settings.level == "quick" and quick_leaves_out(item, settings))]
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        kept = set(map(id, dropped))
        items[:] = [item for item in items if id(item) not in kept]
    fidelity_asked = "lfm_fidelity" in (config.getoption("markexpr", "") or "")
    installed = compat.installed_sglang_version() if not settings.base_url and not settings.replay_dir else None
    for item in items:
        if item.get_closest_marker("lfm_fidelity") and not fidelity_asked:
            item.add_marker(pytest.mark.skip(reason=FIDELITY_OPT_IN))
        launch = plan.launch_of(item)
        if installed and launch is not None and not compat.at_least(installed, launch.model.min_sglang):
            item.add_marker(pytest.mark.skip(reason=(
                f"sglang {installed} is installed; {launch.model.id} needs sglang >= {launch.model.min_sglang} "
                f"(min_sglang in {launch.model.source})")))
    models = [m.id for m in config.stash[RUN].selected]
    first: dict[str, int] = {}
    items.sort(key=lambda item: order_key(settings, models, item, first))
    if getattr(config.option, "loadgroup", False):
        restore_xdist_group_ids(items)
    config.stash[RUN].plan = plan.build_plan(items) if _launches_here(settings) else []


def _launches_here(settings: Settings) -> bool:
    return not settings.base_url and not settings.replay_dir and bool(_visible_gpus(settings))


def _visible_gpus(settings: Settings) -> list[int]:
    visible = [g.index for g in hosts.list_gpus()]
    return list(settings.gpus) if settings.gpus is not None and visible else visible


def pytest_collection_finish(session: pytest.Session) -> None:
    """Show the launch plan before anything runs (also under --collect-only)."""
    config = session.config
    if hasattr(config, "workerinput"):
        return
    settings = config.stash[RUN].settings
    planned = config.stash[RUN].plan
    if settings.base_url:
        where = f"--lfm-base-url {settings.base_url}"
    elif settings.replay_dir:
        where = f"--lfm-replay {settings.replay_dir}"
    elif not planned:
        where = "no CUDA GPU visible" if not _visible_gpus(settings) else "no selected test needs a runtime"
    else:
        gpus = {g.index: g for g in hosts.list_gpus()}
        chosen = _visible_gpus(settings)
        where = ", ".join(f"GPU {i} ({gpus[i].name}, {gpus[i].memory_total_mib} MiB)" for i in chosen if i in gpus)
    estimates = {p.key: plan.estimate_mib(p.config) for p in planned}
    terminal = config.pluginmanager.get_plugin("terminalreporter")
    if terminal is not None:
        for line in plan.describe(planned, where=where, estimates=estimates, max_starting=default_max_starting()):
            terminal.write_line(line)


class RuntimeHooks:
    """Per-test hooks of the runtime pool, registered at configure: tell the pool which models this worker runs and
    which tests are done (it stops a runtime after its last test), and write the pool's messages."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtest_setup(self, item: pytest.Item) -> None:
        launch = plan.launch_of(item)
        if launch is not None:
            self.config.stash[RUN].current_model = launch.model.id
            pool = self.config.stash[RUN].pool
            if pool is not None:
                pool.activate(launch.model.id)

    def pytest_runtest_logfinish(self, nodeid: str) -> None:
        run = self.config.stash[RUN]
        if run.pool is not None:
            run.pool.test_done(nodeid)
        run.messages.flush()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None],
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """A failed test against a server someone else started says whether that server is still healthy (it is
    checked once when first used, not before every test: sglang's health endpoints take a second or more)."""
    report: pytest.TestReport = yield
    external = item.config.stash[RUN].external
    if report.failed and external is not None and "lfm_server" in getattr(item, "fixturenames", ()):
        problem = external.health()
        report.sections.append(("pytest-lfm server health", f"{external.base_url} after this failure: "
                                + ("healthy" if problem is None else f"NOT healthy: {problem}")))
    return report


