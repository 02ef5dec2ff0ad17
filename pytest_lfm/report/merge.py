"""Merge the reports of one qualification that ran in parts (over hosts, GPUs, or one ``--lfm-model`` per run) into
one report, which ``pytest-lfm compare`` and :func:`pytest_lfm.report.markdown.render_markdown` read like any other:

    pytest-lfm merge A.json B.json ... -o QUALIFICATION.json     # also writes QUALIFICATION.md

How each field of the merged report comes about (a :class:`~pytest_lfm.report.compare.ReportError` names the files and
what differs where the parts cannot be one qualification):

- every input must be a report of this schema version (:func:`pytest_lfm.report.compare.validate`) with the fields a run
  writes, each given once; the merged report has the same ``schema``;
- ``checks``: the union keyed by node id. A check that several parts ran (one that does not depend on the model,
  such as the parser corpus) must have the same verdict (``status``) in each, and the first part's entry is kept;
  different verdicts are an error;
- ``summary``, ``latency``, ``fidelity``, ``scripted_turns``: computed again from the merged checks, as a run does;
- ``versions``: every part must have run the same sglang; another package keeps its version where the parts agree,
  otherwise the parts' versions joined with ", " (each part's own stay in ``merged.parts``);
- ``settings``: ``models`` and ``dtypes`` (the selections) are unioned; ``server_args`` (added to every launch) must
  agree; ``base_url`` is the parts' common URL, or their URLs joined with ", " (each part may test its own server);
- ``models``: unioned by id; the same id defined differently (launch arguments, template) is an error;
- ``gpus``: unioned, each tagged with its part's ``host`` (two parts on one host list its GPUs once);
- ``launches``: concatenated in input order, each tagged ``report``: the file it came from;
- ``created``: the earliest part's; ``host``: the parts' hosts joined with ", "; ``args``: empty, as no single
  command ran it (each part's command is in ``merged.parts``);
- ``duration_s``: the longest part's, the wall time when the parts ran side by side; ``merged.duration_sum_s``:
  the parts' durations added up;
- ``time_split`` (a run's split of its time, a flat object of numbers such as ``launching_s`` and ``wall_s``):
  summed field by field over the parts that have one (a field a part lacks counts 0); absent when no part has one;
- ``merged``: ``{"parts": [{file, host, created, duration_s, args, versions, settings, summary, time_split}],
  "duration_sum_s"}``, ``time_split`` null for a part without one. A merged report given as input contributes its
  own parts, so merged reports merge again.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from pytest_lfm.report.compare import FIX, ReportError, load, validate
from pytest_lfm.report.schema import (
    SCHEMA_VERSION,
    STATUSES,
    Check,
    fidelity_rows,
    grammar_rows,
    latency_rows,
    scripted_turn_rows,
)

MERGED = "merged"
TIME_SPLIT = "time_split"
# the fields of a run's report that the merge combines, with their JSON types
REQUIRED: dict[str, type | tuple[type, ...]] = {
    "created": str, "duration_s": (int, float), "host": str, "args": list, "versions": dict, "settings": dict,
    "gpus": list, "models": list, "launches": list, "summary": dict}
# what ``merged.parts`` records of each part (and reads back from a merged report given as input)
PART: dict[str, type | tuple[type, ...]] = {
    "file": str, "host": str, "created": str, "duration_s": (int, float), "args": list, "versions": dict,
    "settings": dict}
_CONFLICTS_SHOWN = 10


def _distinct(values: Iterable[Any]) -> list[Any]:
    out: list[Any] = []
    for value in values:
        if value not in out:
            out.append(value)
    return out


def _joined(values: Iterable[str | None]) -> str | None:
    """The one value all parts share, or the distinct values joined with ", "."""
    distinct = _distinct(values)
    return distinct[0] if len(distinct) == 1 else ", ".join(str(v) for v in distinct)


def _agreed(parts: Sequence[tuple[str, Mapping[str, Any]]], value: Callable[[Mapping[str, Any]], Any], what: str,
            fix: str) -> Any:
    """The value every part has, or :class:`ReportError` listing which files have which."""
    by_value: dict[str, list[str]] = {}
    for name, data in parts:
        by_value.setdefault(repr(value(data)), []).append(name)
    if len(by_value) > 1:
        found = "; ".join(f"{v} in {', '.join(names)}" for v, names in by_value.items())
        raise ReportError(f"{what} differs between the reports: {found}. {fix}")
    return value(parts[0][1])


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _is_part(record: Any) -> bool:
    return isinstance(record, dict) and all(isinstance(record.get(key), kind) for key, kind in PART.items())


def _check_part(name: str, data: Mapping[str, Any]) -> None:
    """:class:`ReportError` unless ``data`` is a report of this schema with every field the merge combines."""
    validate(data, name)
    wrong = [key for key, kind in REQUIRED.items() if not isinstance(data.get(key), kind)]
    wrong += [key for key in ("gpus", "models", "launches") if key not in wrong and not all(
        isinstance(x, dict) for x in data[key])]
    if "models" not in wrong and not all(isinstance(m.get("id"), str) for m in data["models"]):
        wrong.append("models")
    split = data.get(TIME_SPLIT)
    if split is not None and not (isinstance(split, dict) and all(map(_is_number, split.values()))):
        wrong.append(TIME_SPLIT)
    part_of = data.get(MERGED)
    if part_of is not None and not (isinstance(part_of, dict) and isinstance(part_of.get("parts"), list)
                                    and all(map(_is_part, part_of["parts"]))):
        wrong.append(MERGED)
    if wrong:
        raise ReportError(f"{name}: {', '.join(repr(k) for k in wrong)} missing or not as a run writes it: not a "
                          f"complete report; {FIX}")
    try:
        dt.datetime.fromisoformat(data["created"])
    except ValueError:
        raise ReportError(f"{name}: 'created' is {data['created']!r}, not an ISO date and time; {FIX}") from None


def _checks(parts: Sequence[tuple[str, Mapping[str, Any]]]) -> list[dict[str, Any]]:
    """The union of the parts' checks by node id; :class:`ReportError` where two parts disagree on a verdict."""
    kept: dict[str, tuple[str, dict[str, Any]]] = {}
    conflicts: list[str] = []
    for name, data in parts:
        for check in data["checks"]:
            first = kept.setdefault(check["nodeid"], (name, check))
            if first[1]["status"] != check["status"]:
                conflicts.append(f"{check['nodeid']} is {first[1]['status']} in {first[0]} but {check['status']} "
                                 f"in {name}")
    if conflicts:
        more = f" (and {len(conflicts) - _CONFLICTS_SHOWN} more)" if len(conflicts) > _CONFLICTS_SHOWN else ""
        raise ReportError(f"{len(conflicts)} check(s) have different verdicts in two reports: "
                          f"{'; '.join(conflicts[:_CONFLICTS_SHOWN])}{more}. Run those checks again in one part, "
                          "or leave out the report that should not count")
    return [kept[nodeid][1] for nodeid in sorted(kept)]


def _models(parts: Sequence[tuple[str, Mapping[str, Any]]]) -> list[dict[str, Any]]:
    kept: dict[str, tuple[str, dict[str, Any]]] = {}
    for name, data in parts:
        for model in data["models"]:
            first = kept.setdefault(model["id"], (name, model))
            if first[1] != model:
                raise ReportError(f"model {model['id']} is defined differently in {first[0]} ({first[1]}) and in "
                                  f"{name} ({model}): the parts ran other launch configurations, so they are not "
                                  "one qualification; run them with the same matrix (--lfm-matrix)")
    return [model for _, model in kept.values()]


def _time_split(parts: Sequence[tuple[str, Mapping[str, Any]]]) -> dict[str, float] | None:
    splits = [data[TIME_SPLIT] for _, data in parts if data.get(TIME_SPLIT) is not None]
    if not splits:
        return None
    fields = _distinct(key for split in splits for key in split)
    return {key: round(sum(split.get(key, 0) for split in splits), 3) for key in fields}


def _part_records(name: str, data: Mapping[str, Any]) -> list[dict[str, Any]]:
    if MERGED in data:
        return list(data[MERGED]["parts"])
    return [{"file": name, "host": data["host"], "created": data["created"], "duration_s": data["duration_s"],
             "args": data["args"], "versions": data["versions"], "settings": data["settings"],
             "summary": data["summary"], TIME_SPLIT: data.get(TIME_SPLIT)}]


def merge(parts: Sequence[tuple[str, Mapping[str, Any]]]) -> dict[str, Any]:
    """One report from ``parts``, (name, report dict) pairs of one qualification; the names (file names) label the
    launches and the errors. The rules are the module's."""
    if not parts:
        raise ReportError("no reports to merge; pass the JSON files that --lfm-report wrote in each part")
    for name, data in parts:
        _check_part(name, data)
    _agreed(parts, lambda d: d["versions"].get("sglang"), "the sglang version",
            "Reports of different sglang versions are not one qualification: merge the parts of one, and compare "
            "the two (pytest-lfm compare OLD.json NEW.json)")
    server_args = _agreed(parts, lambda d: d["settings"].get("server_args"), "settings.server_args",
                          "The parts of one qualification add the same arguments to every launch: run them with the "
                          "same --lfm-server-args")
    checks = _checks(parts)
    check_objects = [Check(c["nodeid"], c["status"], c.get("reason", ""), c.get("duration_s", 0.0),
                           c.get("notes", {})) for c in checks]
    records = [record for name, data in parts for record in _part_records(name, data)]
    packages = _distinct(key for record in records for key in record["versions"])
    merged: dict[str, Any] = {
        "schema": SCHEMA_VERSION,
        "created": min((data["created"] for _, data in parts),
                       key=lambda created: dt.datetime.fromisoformat(created).timestamp()),
        "duration_s": max(data["duration_s"] for _, data in parts),
        "host": ", ".join(_distinct(record["host"] for record in records)),
        "args": [],
        "versions": {key: _joined(record["versions"].get(key) for record in records) for key in packages},
        "gpus": _distinct({**gpu, "host": gpu.get("host", data["host"])} for _, data in parts
                          for gpu in data["gpus"]),
        "settings": {
            "models": _distinct(m for _, data in parts for m in data["settings"].get("models", [])),
            "dtypes": _distinct(d for _, data in parts for d in data["settings"].get("dtypes", [])),
            "base_url": _joined(record["settings"].get("base_url") for record in records),
            "server_args": server_args,
        },
        "models": _models(parts),
        "launches": [{**launch, "report": launch.get("report", name)} for name, data in parts
                     for launch in data["launches"]],
        "summary": {status: sum(1 for c in checks if c["status"] == status) for status in STATUSES},
        "checks": checks,
        "latency": latency_rows(check_objects),
        "fidelity": fidelity_rows(check_objects),
        "scripted_turns": scripted_turn_rows(check_objects),
        "grammar": grammar_rows(check_objects),
    }
    time_split = _time_split(parts)
    if time_split is not None:
        merged[TIME_SPLIT] = time_split
    merged[MERGED] = {
        "parts": records,
        "duration_sum_s": round(sum(record["duration_s"] for record in records), 1),
    }
    return merged


def merge_files(paths: Sequence[str | Path]) -> dict[str, Any]:
    """:func:`merge` of the report files at ``paths`` (each :func:`~pytest_lfm.report.compare.load`-ed, named by its
    path as given); :class:`ReportError` for an unreadable file or one given twice."""
    resolved = [Path(path).resolve() for path in paths]
    for i, path in enumerate(resolved):
        if path in resolved[:i]:
            raise ReportError(f"{paths[i]}: given twice (also as {paths[resolved.index(path)]}); pass each part's "
                              "report once")
    return merge([(str(path), load(path)) for path in paths])
