"""A recording of one runtime configuration, in record or replay mode, and how a run finds it.

Replay answers each request of a test with the recorded exchange of the same key
(:attr:`~pytest_lfm.recording.exchange.Exchange.key`), so identical requests made again or concurrently in one test
get their answers in the order they were recorded.

What a replay lacks fails unless ``--lfm-replay-missing skip``: a recording directory that holds none of the
selected models' own configurations stops the run (:func:`unreplayable`), and a test the recording has no exchange
of runs and fails at its first request (:class:`UnrecordedRequest`). A configuration the recording does not hold
while it holds another (a model, a dtype or a variant that was not selected when it was made) is skipped.
"""

from __future__ import annotations

import json
import os
import threading
from collections import Counter
from collections.abc import Iterable, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

import httpx
from _pytest.outcomes import Failed
from filelock import FileLock

from pytest_lfm.matrix import LaunchConfig, ModelSpec
from pytest_lfm.recording.exchange import FORMAT, Exchange, Key, RecordingError, canonical_body, node_key
from pytest_lfm.recording.jsonl import (
    MAX_FILE_BYTES,
    append_lines,
    exchange_lines,
    module_stem,
    read_exchanges,
    safe_name,
    write_exchanges,
)
from pytest_lfm.recording.transports import (
    LIMITS,
    AsyncRecordingTransport,
    RecordingTransport,
    ReplayTransport,
    StreamRecord,
)
from pytest_lfm.settings import Settings

Mode = Literal["record", "replay"]


class UnrecordedRequest(Failed):
    """Replay got a request the recording does not hold; fails the test (and passes through client retries)."""


class Store:
    """One recording (a model's runtime configuration) in ``DIR/<store id>/``, in record or replay mode."""

    def __init__(self, root: Path, mode: Mode, *, model_id: str, pace: bool = False,
                 max_file_bytes: int = MAX_FILE_BYTES) -> None:
        self.root, self.mode, self.model_id, self.pace = root, mode, model_id, pace
        self.max_file_bytes = max_file_bytes
        self._lock = threading.Lock()
        self._counts: Counter[tuple[str, str, str, str, str]] = Counter()
        self._seqs: Counter[str] = Counter()
        self.open_streams: set[StreamRecord] = set()
        self._index: dict[Key, Exchange] = {}
        self._served: set[Key] = set()
        self._meta: dict[str, Any] = {}
        self._run = f"{datetime.now(timezone.utc).strftime('%Y%m%dT%H%M%S.%fZ')}-{os.getpid()}"
        if mode == "record":
            root.mkdir(parents=True, exist_ok=True)
            self._file_lock = FileLock(str(root / ".lock"))
        else:
            if not root.is_dir():
                stores = sorted(p.name for p in root.parent.iterdir() if p.is_dir()) if root.parent.is_dir() else []
                raise RecordingError(
                    f"pytest-lfm replay: no recording of {model_id} in {root.parent} (looked for {root.name}/; "
                    f"found: {', '.join(stores) or 'nothing'}). Record it on a GPU host with --lfm-record "
                    f"{root.parent} --lfm-model {model_id}, or select a recorded model.")
            self._index = {ex.key: ex for ex in read_exchanges(root)}

    # ---------------------------------------------------------------- wiring

    def transport(self, node: str) -> httpx.BaseTransport:
        """The transport for a sync client used by test ``node``."""
        if self.mode == "record":
            return RecordingTransport(httpx.HTTPTransport(limits=LIMITS), self, node)
        return ReplayTransport(self, node)

    def async_transport(self, node: str) -> httpx.AsyncBaseTransport:
        """The transport for an async client used by test ``node``."""
        if self.mode == "record":
            return AsyncRecordingTransport(httpx.AsyncHTTPTransport(limits=LIMITS), self, node)
        return ReplayTransport(self, node)

    def write_meta(self, *, sglang_version: str, launch_args: Sequence[str], served_model: str,
                   **extra: Any) -> None:
        """Record mode: save what the recorded server was (replay serves it from :meth:`meta`)."""
        if self.mode != "record":
            raise RecordingError(f"write_meta needs record mode; {self.root} is open for {self.mode}")
        self._meta = {"format": FORMAT, "model_id": self.model_id, "store": self.root.name,
                      "sglang_version": sglang_version, "launch_args": list(launch_args),
                      "served_model": served_model, "recorded_at": self._run, **extra}
        with self._file_lock:
            tmp = self.root / "meta.json.tmp"
            tmp.write_text(json.dumps(self._meta, indent=2, sort_keys=True) + "\n", encoding="utf-8")
            os.replace(tmp, self.root / "meta.json")

    def meta(self) -> dict[str, Any]:
        """The recorded server's facts: ``served_model``, ``sglang_version``, ``launch_args``, ..."""
        if self.mode == "record" or self._meta:
            return dict(self._meta)
        path = self.root / "meta.json"
        try:
            self._meta = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise RecordingError(f"pytest-lfm replay: cannot read {path} ({exc}); a recording made with "
                                 "--lfm-record writes it when its server starts. Re-record this model.") from None
        return dict(self._meta)

    def close(self) -> None:
        """Record mode: save streams left open, then keep only each test's latest run in the files."""
        if self.mode != "record":
            return
        for record in list(self.open_streams):
            record.save()
        with self._lock, self._file_lock:
            write_exchanges(self.root, read_exchanges(self.root), max_bytes=self.max_file_bytes)

    # ---------------------------------------------------------------- record

    def begin(self, node: str, method: str, path: str, query: str, content: bytes) -> Exchange:
        """A new exchange for a request that test ``node`` is sending (its occurrence counted at send time)."""
        node = node_key(node)
        digest, stored = canonical_body(content)
        with self._lock:
            occurrence = self._counts[(node, method, path, query, digest)]
            self._counts[(node, method, path, query, digest)] += 1
            seq = self._seqs[node]
            self._seqs[node] += 1
        return Exchange(node, seq, method, path, query, digest, occurrence, request=stored, run=self._run)

    def save_error(self, exchange: Exchange, exc: Exception) -> None:
        exchange.error = {"type": type(exc).__name__, "message": str(exc)}
        self.save(exchange)

    def save(self, exchange: Exchange) -> None:
        """Append one finished exchange to its module's file (a new part when the file would pass the limit)."""
        lines = exchange_lines(exchange, self.max_file_bytes)
        stem = module_stem(exchange.node)
        with self._lock, self._file_lock:
            append_lines(self.root, stem, lines, self.max_file_bytes)

    # ---------------------------------------------------------------- replay

    def lookup(self, node: str, method: str, path: str, query: str, content: bytes) -> Exchange:
        """The recorded answer to this request of test ``node``, the next one of its identical requests in it."""
        node = node_key(node)
        digest, stored = canonical_body(content)
        with self._lock:
            occurrence = self._counts[(node, method, path, query, digest)]
            self._counts[(node, method, path, query, digest)] += 1
        found = self._index.get((node, method, path, query, digest, occurrence))
        if found is None:
            raise UnrecordedRequest(self._miss(node, method, path, query, digest, occurrence, stored))
        self._served.add(found.key)
        return found

    def recorded_tests(self) -> set[str]:
        """Replay: the keys (:func:`node_key`) of the tests the recording holds exchanges for."""
        return {ex.node for ex in self._index.values()}

    def has_test(self, nodeid: str) -> bool:
        """Replay: whether the recording holds exchanges of test ``nodeid`` (with or without xdist's suffix)."""
        return node_key(nodeid) in self.recorded_tests()

    def unused(self, nodes: Iterable[str] | None = None) -> list[Exchange]:
        """Replay: recorded exchanges (of ``nodes``, default all) that no request asked for so far."""
        wanted = None if nodes is None else {node_key(n) for n in nodes}
        return [ex for key, ex in self._index.items()
                if key not in self._served and (wanted is None or ex.node in wanted)]

    def _miss(self, node: str, method: str, path: str, query: str, digest: str, occurrence: int,
              body: Any) -> str:
        target = f"{method} {path}{'?' + query if query else ''}"
        same = [ex for ex in self._index.values() if ex.node == node]
        lines = [f"pytest-lfm replay: test {node} sent {target} (body sha256 {digest}, occurrence {occurrence}), "
                 f"which the recording in {self.root} does not hold."]
        if not same:
            cause = ("The recording has no exchange for this test at all: a new or renamed test, a test the recording "
                     "run did not select, or a recording file that is missing. Pass --lfm-replay-missing skip to "
                     "skip the tests a recording lacks, or")
        else:
            cause = "The test, its prompts or the script changed since the recording. To fix this,"
            identical = sum(1 for ex in same if ex.key[1:5] == (method, path, query, digest))
            lines.append(f"The recording has {len(same)} exchanges for this test, {identical} of them identical "
                         f"to this request (it was sent {occurrence + 1} times now).")
            closest = _closest(body, [ex for ex in same if (ex.method, ex.path) == (method, path)])
            if closest is not None:
                lines.append(f"Closest recorded {target} differs in: {closest}.")
        shown = json.dumps(body, ensure_ascii=False)
        lines.append(f"Request body: {shown[:600]}{' ...' if len(shown) > 600 else ''}")
        lines.append(f"{cause} re-record on a GPU host: pytest '{node}' --lfm-model {self.model_id} --lfm-record "
                     f"{self.root.parent}")
        return "\n".join(lines)


def _closest(body: Any, candidates: Sequence[Exchange]) -> str | None:
    if not isinstance(body, dict) or not candidates:
        return None

    def diff(other: Any) -> list[str]:
        if not isinstance(other, dict):
            return ["the whole body"]
        return sorted(k for k in body.keys() | other.keys() if body.get(k) != other.get(k))

    best = min((diff(ex.request) for ex in candidates), key=len)
    return ", ".join(best) if best else "nothing but the occurrence (sent more often than recorded)"


def store_id(model_id: str) -> str:
    """The directory name of a model's (or runtime configuration's) recording."""
    return safe_name(model_id, "--")


def open_store(directory: Path | str, model_id: str, mode: Mode, *, pace: bool = False) -> Store:
    """The recording of ``model_id`` (pass the runtime configuration id, e.g. ``micro-dense-bfloat16``) in
    ``directory``: ``record`` appends to it, ``replay`` reads it (``pace`` replays the recorded timing)."""
    if mode not in ("record", "replay"):
        raise ValueError(f"mode must be 'record' or 'replay', got {mode!r}")
    return Store(Path(directory) / store_id(model_id), mode, model_id=model_id, pace=pace)


def unreplayable(settings: Settings, models: Sequence[ModelSpec]) -> str | None:
    """Why ``settings.replay_dir`` cannot answer any test of ``models``: it holds no recording of their runtime
    configurations (each model in each selected dtype, by default or in a launch variant); None when it holds one, or
    under --lfm-replay-missing skip."""
    directory = settings.replay_dir
    if directory is None or settings.replay_missing == "skip":
        return None
    wanted = [LaunchConfig(m, dtype, "default", settings.server_args).id for m in models for dtype in settings.dtypes]
    if any((directory / store_id(launch_id)).is_dir() for launch_id in wanted):
        return None
    held = sorted(p.name for p in directory.iterdir() if (p / "meta.json").is_file())
    selected = {(m.id, dtype) for m in models for dtype in settings.dtypes}
    for name in held:  # a recording of a selected model's launch variant only (e.g. its seeded launch)
        meta = json.loads((directory / name / "meta.json").read_text())
        if (meta.get("model"), meta.get("dtype")) in selected:
            return None
    holds = f"recordings of {', '.join(held)}" if held else "no recording (no <configuration>/meta.json)"
    return (f"pytest-lfm: --lfm-replay {directory} holds {holds}, none of the selected configurations "
            f"({', '.join(wanted)}): the replay would test nothing. Select what it holds (--lfm-model, --lfm-dtype "
            "and --lfm-server-arg as recorded), point --lfm-replay at the directory --lfm-record wrote, record these "
            f"configurations on a GPU host with --lfm-record {directory}, or pass --lfm-replay-missing skip.")


def stale_micro_recording(store: Store, micro_name: str) -> str | None:
    """Why a recording of micro checkpoint ``micro_name`` cannot be replayed here (it was recorded with another
    recipe: another tokenizer and other answers), or None when it was recorded with this checkout's."""
    from pytest_lfm import micro

    recorded = Path(str(store.meta().get("served_model", ""))).name
    current = micro.checkpoint_dir(micro_name).name
    if recorded == current:
        return None
    return (f"{store.root} was recorded with micro checkpoint {recorded or '(none named)'}, but this checkout's "
            f"recipe builds {current}: its token counts and answers differ. Re-record it on a GPU host with "
            "--lfm-record, or replay it with the pytest-lfm commit that made it.")
