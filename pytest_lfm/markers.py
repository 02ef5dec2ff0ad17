"""The plugin's markers, each declared by a function whose signature is the marker's: a marker is checked by
calling its function with the marker's arguments."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import pytest

from pytest_lfm.matrix_schema import CAPABILITIES, PROFILES
from pytest_lfm.settings import DTYPES


def requires_marker(*capabilities: str) -> None:
    """Marker signature: the test needs these model capabilities (``matrix.CAPABILITIES``)."""
    unknown = set(capabilities) - set(CAPABILITIES)
    if unknown or not capabilities:
        raise ValueError(f"lfm_requires takes capabilities from {CAPABILITIES}, got {capabilities}")


def launch_marker(
    *, dtype: str | None = None, profile: str = "default", extra_args: Sequence[str] = (),
    env: dict[str, str] | None = None,
) -> None:
    """Marker signature: run the test on this variant of each selected model's runtime."""
    if dtype is not None and dtype not in DTYPES:
        raise ValueError(f"lfm_launch dtype must be one of {DTYPES}, got {dtype!r}")
    if profile not in PROFILES:
        raise ValueError(f"lfm_launch profile must be one of {tuple(PROFILES)}, got {profile!r}")


def live_marker() -> None:
    """Marker signature: the test needs a runtime of its own or its timings (an Engine, a second launch, latency),
    which a recording cannot answer: deselected under --lfm-replay."""


MARKERS: dict[str, Callable[..., None]] = {"lfm_requires": requires_marker, "lfm_launch": launch_marker,
                                           "lfm_live": live_marker}


def launch_variants(node: pytest.Function | pytest.Item) -> list[dict[str, Any]]:
    """The launch variants a test runs on: one per ``lfm_launch`` marker (stacked markers run it on each, ``{}`` being
    the configuration under test), else ``[{}]``."""
    variants = []
    for marker in node.iter_markers("lfm_launch"):
        try:
            launch_marker(*marker.args, **marker.kwargs)
        except (TypeError, ValueError) as exc:
            raise pytest.UsageError(f"{node.nodeid}: bad @pytest.mark.lfm_launch: {exc}") from None
        variants.append(dict(marker.kwargs))
    return variants or [{}]


def marker_kwargs(node: pytest.Function | pytest.Item, name: str) -> tuple[tuple[Any, ...], dict[str, Any]]:
    marker = node.get_closest_marker(name)
    if marker is None:
        return (), {}
    try:
        MARKERS[name](*marker.args, **marker.kwargs)
    except (TypeError, ValueError) as exc:
        raise pytest.UsageError(f"{node.nodeid}: bad @pytest.mark.{name}: {exc}") from None
    return marker.args, dict(marker.kwargs)
