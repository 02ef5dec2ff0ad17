"""Record the suites' HTTP traffic with a server, and replay it with no server.

Recording sits at the httpx transport of the clients the fixtures build (``lfm_client``, ``lfm_async_client``,
``lfm_http``). Each exchange is saved with its request (method, path, query, canonical JSON body), the response's
status, content type and body, and a streamed (SSE) body event by event, in order, with each event's arrival time.
Replay answers the same requests from the saved exchanges, matched on (test, method, path, query, body digest,
occurrence), so identical requests made again or concurrently in one test get their answers in the order they were
recorded. A test is keyed by its node id without the ``@<group>`` suffix xdist gives it under ``-n``
(:func:`node_key`): a recording made with or without ``-n`` replays with or without it.

Layout under the recording directory ``DIR``::

    DIR/<store id>/meta.json                   server's sglang version, launch arguments, served model name
    DIR/<store id>/<test module>.jsonl         one exchange per line; ``<test module>.2.jsonl``, ... past 1 MB

Re-recording some tests appends their exchanges; replay (and compaction when a recording session closes) keeps,
for each test, only the exchanges of the latest session that recorded it.

What a replay lacks fails unless ``--lfm-replay-missing skip``: a recording directory that holds none of the
selected models' own configurations stops the run (:func:`unreplayable`), and a test the recording has no exchange
of runs and fails at its first request (:class:`UnrecordedRequest`). A configuration the recording does not hold
while it holds another (a model, a dtype or a variant that was not selected when it was made) is skipped.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import io
import json
import os
import re
import threading
import time
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

import httpx
from _pytest.outcomes import Failed
from filelock import FileLock

from pytest_lfm.matrix import LaunchConfig, ModelSpec
from pytest_lfm.settings import Settings

Mode = Literal["record", "replay"]
FORMAT = 1
MAX_FILE_BYTES = 1_000_000
PIECE_CHARS = 400_000  # a line longer than a file may hold is stored in pieces of this many characters
ELIDE_CHARS = 4096  # longer request strings are stored as a digest (the key always uses the full body)
KEPT_HEADERS = ("content-type",)
REPLAY_BASE_URL = "http://replay.invalid"
LIMITS = httpx.Limits(max_connections=1000, max_keepalive_connections=100)  # openai's own client defaults
Key = tuple[str, str, str, str, str, int]  # node, method, path, query, body digest, occurrence


class RecordingError(RuntimeError):
    """A recording directory that cannot be used (missing, unreadable, wrong mode)."""


class UnrecordedRequest(Failed):
    """Replay got a request the recording does not hold; fails the test (and passes through client retries)."""


# the "@<group>" that xdist's --dist loadgroup appends to a node id: an "@" that no "[", "]" or ":" follows
_XDIST_GROUP = re.compile(r"@[^\[\]:]*$")


def node_key(nodeid: str) -> str:
    """The key of test ``nodeid`` in a recording: its node id without xdist's ``@<group>`` suffix."""
    return _XDIST_GROUP.sub("", nodeid)


def _sha(data: bytes | str) -> str:
    return hashlib.sha256(data.encode() if isinstance(data, str) else data).hexdigest()[:16]


def _safe(name: str, sep: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", sep, name).strip(sep) or "_"


def _image_digest(url: str) -> str:
    """A data-URL image as its pixels' digest: PNG/JPEG bytes of one image differ between encoder builds."""
    head, _, payload = url.partition(",")
    try:
        raw = base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        return f"<image {head} sha256:{_sha(payload)}>"
    try:
        from PIL import Image

        with Image.open(io.BytesIO(raw)) as img:
            return f"<image {img.mode} {img.width}x{img.height} pixels sha256:{_sha(img.tobytes())}>"
    except Exception:  # not an image PIL reads: key on the bytes
        return f"<image {head} {len(raw)} bytes sha256:{_sha(raw)}>"


def _normalize(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _normalize(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_normalize(v) for v in value]
    if isinstance(value, str) and value.startswith("data:image/"):
        return _image_digest(value)
    if isinstance(value, str):
        return _LOOPBACK_PORT.sub(r"\1:PORT/", value)
    return value


# a URL of a server the tests start on this machine (the vision suite's image server): its port differs per run
_LOOPBACK_PORT = re.compile(r"^(https?://(?:127\.0\.0\.1|localhost|\[::1\])):\d+/")


def _elide(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _elide(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_elide(v) for v in value]
    if isinstance(value, str) and len(value) > ELIDE_CHARS:
        return f"<elided {len(value)} chars sha256:{_sha(value)}>"
    return value


def canonical_body(content: bytes) -> tuple[str, Any]:
    """(digest, stored form) of a request body.

    JSON bodies are keyed on their canonical form (sorted keys, compact, images as pixel digests) and stored as JSON
    with long strings elided; other bodies are keyed on their bytes and stored as text (None when empty).
    """
    if not content:
        return _sha(b""), None
    try:
        parsed = json.loads(content)
    except (UnicodeDecodeError, ValueError):
        try:
            text = content.decode()
        except UnicodeDecodeError:
            return _sha(content), f"<{len(content)} bytes>"
        return _sha(content), _elide(text)
    normal = _normalize(parsed)
    digest = _sha(json.dumps(normal, sort_keys=True, separators=(",", ":"), ensure_ascii=False))
    return digest, _elide(normal)


@dataclass
class Exchange:
    """One request and what came back, as stored in a recording line."""

    node: str
    seq: int  # order in which the test sent it
    method: str
    path: str
    query: str
    digest: str  # of the canonical request body
    occurrence: int  # how many identical requests this test sent before it
    request: Any = None  # JSON body as keyed (images as digests, long strings elided) or text
    status: int | None = None
    headers: dict[str, str] = field(default_factory=dict)
    body_format: str = "json"  # "json" | "text" | "base64" | "sse"
    body: Any = None  # JSON value, text, or base64 text; None for "sse"
    events: list[dict[str, Any]] | None = None  # SSE: {"data": JSON} or {"text": raw}, "t": seconds, "event"?
    complete: bool = True  # False when the client stopped reading the stream before its end or [DONE]
    error: dict[str, str] | None = None  # a transport error instead of a response: {"type", "message"}
    elapsed: float = 0.0  # seconds from sending the request to the response headers
    run: str = ""

    @property
    def key(self) -> Key:
        return (self.node, self.method, self.path, self.query, self.digest, self.occurrence)

    def to_json(self) -> dict[str, Any]:
        return {"v": FORMAT, **asdict(self)}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Exchange:
        return cls(**{k: v for k, v in data.items() if k != "v"})

    def chunks(self) -> list[dict[str, Any]]:
        """The JSON objects of a stream's events, in order (no ``[DONE]``)."""
        return [e["data"] for e in self.events or () if isinstance(e.get("data"), dict)]

    def set_body(self, content: bytes) -> None:
        if not content:
            self.body_format, self.body = "text", ""
            return
        try:
            self.body_format, self.body = "json", json.loads(content)
        except UnicodeDecodeError:
            self.body_format, self.body = "base64", base64.b64encode(content).decode()
        except ValueError:
            self.body_format, self.body = "text", content.decode()

    def body_bytes(self) -> bytes:
        if self.body_format == "json":
            return json.dumps(self.body, ensure_ascii=False, separators=(",", ":")).encode()
        if self.body_format == "base64":
            return base64.b64decode(self.body)
        if self.body_format == "sse":
            return b"".join(_event_bytes(e) for e in self.events or ())
        return str(self.body).encode()

    def describe(self) -> str:
        return f"{self.method} {self.path}{'?' + self.query if self.query else ''} (body sha256 {self.digest})"


def _event_bytes(event: dict[str, Any]) -> bytes:
    lines = [f"event: {event['event']}"] if "event" in event else []
    text = json.dumps(event["data"], ensure_ascii=False, separators=(",", ":")) if "data" in event else event["text"]
    lines += [f"data: {line}" for line in str(text).split("\n")]
    return ("\n".join(lines) + "\n\n").encode()


class _SSEParser:
    """Splits a text/event-stream body into events as its bytes arrive."""

    def __init__(self, start: float) -> None:
        self.start = start
        self.events: list[dict[str, Any]] = []
        self._buffer = b""
        self._data: list[str] = []
        self._event: str | None = None

    def feed(self, chunk: bytes) -> None:
        self._buffer += chunk
        now = time.perf_counter()
        while (end := self._buffer.find(b"\n")) >= 0:
            line, self._buffer = self._buffer[:end].rstrip(b"\r").decode("utf-8", "replace"), self._buffer[end + 1 :]
            if not line:
                self._dispatch(now)
            elif not line.startswith(":"):
                name, _, value = line.partition(":")
                value = value[1:] if value.startswith(" ") else value
                if name == "data":
                    self._data.append(value)
                elif name == "event":
                    self._event = value

    def finish(self) -> None:
        if self._buffer:
            self.feed(b"\n")
        self._dispatch(time.perf_counter())

    def _dispatch(self, now: float) -> None:
        if not self._data and self._event is None:
            return
        text = "\n".join(self._data)
        event: dict[str, Any]
        try:
            event = {"data": json.loads(text)}
        except ValueError:
            event = {"text": text}
        if self._event is not None:
            event["event"] = self._event
        event["t"] = round(now - self.start, 4)
        self.events.append(event)
        self._data, self._event = [], None


def _is_sse(headers: httpx.Headers) -> bool:
    content_type: str = headers.get("content-type", "")
    return content_type.split(";")[0].strip() == "text/event-stream"


def _query(request: httpx.Request) -> str:
    return request.url.query.decode()


class _StreamRecord:
    """Collects a streamed response's events and saves the exchange once, when the stream closes."""

    def __init__(self, store: Store, exchange: Exchange, start: float) -> None:
        self.store, self.exchange, self.parser = store, exchange, _SSEParser(start)
        self.finished = self.saved = False
        store._open_streams.add(self)

    def save(self) -> None:
        if self.saved:
            return
        self.saved = True
        self.store._open_streams.discard(self)
        self.parser.finish()
        self.exchange.body_format, self.exchange.events = "sse", self.parser.events
        last = self.parser.events[-1] if self.parser.events else {}
        self.exchange.complete = self.finished or last.get("text") == "[DONE]"  # clients stop reading at [DONE]
        self.store.save(self.exchange)


class _RecordingStream(httpx.SyncByteStream):
    def __init__(self, inner: httpx.SyncByteStream, record: _StreamRecord) -> None:
        self._inner, self._record = inner, record

    def __iter__(self) -> Iterator[bytes]:
        for chunk in self._inner:
            self._record.parser.feed(chunk)
            yield chunk
        self._record.finished = True

    def close(self) -> None:
        try:
            self._inner.close()
        finally:
            self._record.save()


class _AsyncRecordingStream(httpx.AsyncByteStream):
    def __init__(self, inner: httpx.AsyncByteStream, record: _StreamRecord) -> None:
        self._inner, self._record = inner, record

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for chunk in self._inner:
            self._record.parser.feed(chunk)
            yield chunk
        self._record.finished = True

    async def aclose(self) -> None:
        try:
            await self._inner.aclose()
        finally:
            self._record.save()


class RecordingTransport(httpx.BaseTransport):
    """Sends every request through ``inner`` and saves the exchange in ``store`` under the test ``node``."""

    def __init__(self, inner: httpx.BaseTransport, store: Store, node: str) -> None:
        self._inner, self._store, self._node = inner, store, node

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        request.headers["accept-encoding"] = "identity"  # keep bodies as the server wrote them
        exchange = self._store.begin(self._node, request.method, request.url.path, _query(request), request.read())
        start = time.perf_counter()
        try:
            response = self._inner.handle_request(request)
        except httpx.TransportError as exc:
            self._store.save_error(exchange, exc)
            raise
        exchange.elapsed = round(time.perf_counter() - start, 4)
        exchange.status, exchange.headers = response.status_code, _kept(response.headers)
        if _is_sse(response.headers):
            assert isinstance(response.stream, httpx.SyncByteStream)
            stream = _RecordingStream(response.stream, _StreamRecord(self._store, exchange, start))
            return httpx.Response(response.status_code, headers=response.headers, stream=stream,
                                  extensions=response.extensions)
        try:
            content = response.read()
        finally:
            response.close()
        exchange.set_body(content)
        self._store.save(exchange)
        return httpx.Response(response.status_code, headers=response.headers, content=content,
                              extensions=response.extensions)

    def close(self) -> None:
        self._inner.close()


class AsyncRecordingTransport(httpx.AsyncBaseTransport):
    """The async twin of :class:`RecordingTransport`."""

    def __init__(self, inner: httpx.AsyncBaseTransport, store: Store, node: str) -> None:
        self._inner, self._store, self._node = inner, store, node

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        request.headers["accept-encoding"] = "identity"
        content = await request.aread()
        exchange = self._store.begin(self._node, request.method, request.url.path, _query(request), content)
        start = time.perf_counter()
        try:
            response = await self._inner.handle_async_request(request)
        except httpx.TransportError as exc:
            self._store.save_error(exchange, exc)
            raise
        exchange.elapsed = round(time.perf_counter() - start, 4)
        exchange.status, exchange.headers = response.status_code, _kept(response.headers)
        if _is_sse(response.headers):
            assert isinstance(response.stream, httpx.AsyncByteStream)
            stream = _AsyncRecordingStream(response.stream, _StreamRecord(self._store, exchange, start))
            return httpx.Response(response.status_code, headers=response.headers, stream=stream,
                                  extensions=response.extensions)
        try:
            body = await response.aread()
        finally:
            await response.aclose()
        exchange.set_body(body)
        self._store.save(exchange)
        return httpx.Response(response.status_code, headers=response.headers, content=body,
                              extensions=response.extensions)

    async def aclose(self) -> None:
        await self._inner.aclose()


def _kept(headers: httpx.Headers) -> dict[str, str]:
    return {name: headers[name] for name in KEPT_HEADERS if name in headers}


class _ReplayStream(httpx.SyncByteStream, httpx.AsyncByteStream):
    def __init__(self, events: Sequence[dict[str, Any]], start: float, pace: bool) -> None:
        self._events, self._start, self._pace = events, start, pace

    def _delay(self, event: dict[str, Any]) -> float:
        return max(0.0, float(event.get("t", 0.0)) - (time.perf_counter() - self._start)) if self._pace else 0.0

    def __iter__(self) -> Iterator[bytes]:
        for event in self._events:
            if delay := self._delay(event):
                time.sleep(delay)
            yield _event_bytes(event)

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for event in self._events:
            await asyncio.sleep(self._delay(event))
            yield _event_bytes(event)


class ReplayTransport(httpx.BaseTransport, httpx.AsyncBaseTransport):
    """Answers the test ``node``'s requests from ``store``'s recording (sync and async clients alike)."""

    def __init__(self, store: Store, node: str) -> None:
        self._store, self._node = store, node

    def _find(self, request: httpx.Request, content: bytes) -> Exchange:
        return self._store.lookup(self._node, request.method, request.url.path, _query(request), content)

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        start = time.perf_counter()
        exchange = self._find(request, request.read())
        if self._store.pace and exchange.elapsed:
            time.sleep(exchange.elapsed)
        return _replayed(exchange, request, start, self._store.pace)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        start = time.perf_counter()
        exchange = self._find(request, await request.aread())
        if self._store.pace and exchange.elapsed:
            await asyncio.sleep(exchange.elapsed)
        return _replayed(exchange, request, start, self._store.pace)


def _replayed(exchange: Exchange, request: httpx.Request, start: float, pace: bool) -> httpx.Response:
    if exchange.error is not None:
        kind = getattr(httpx, exchange.error["type"], None)
        if not (isinstance(kind, type) and issubclass(kind, httpx.TransportError)):
            kind = httpx.TransportError
        raise kind(exchange.error["message"], request=request)
    assert exchange.status is not None
    if exchange.body_format == "sse":
        return httpx.Response(exchange.status, headers=exchange.headers,
                              stream=_ReplayStream(exchange.events or [], start, pace))
    return httpx.Response(exchange.status, headers=exchange.headers, content=exchange.body_bytes())


_PART = re.compile(r"^(?P<stem>.+?)(?:\.(?P<n>\d+))?\.jsonl$")


def _part_name(stem: str, n: int) -> str:
    return f"{stem}.jsonl" if n == 1 else f"{stem}.{n}.jsonl"


def _node_stem(node: str) -> str:
    module = node.split("::", 1)[0]
    return _safe(module.removesuffix(".py"), "__")


def _lines(exchange: Exchange, max_bytes: int) -> list[str]:
    """The JSONL lines of one exchange: one line, or pieces when it would not fit in a file."""
    line = json.dumps(exchange.to_json(), ensure_ascii=False, separators=(",", ":"))
    if len(line.encode()) + 1 <= max_bytes:
        return [line]
    text = json.dumps(exchange.to_json(), separators=(",", ":"))  # ASCII: pieces are sized in bytes
    size = max(1, min(PIECE_CHARS, max_bytes // 3))
    pieces = [text[i : i + size] for i in range(0, len(text), size)]
    uid = f"{exchange.run}/{exchange.node}/{exchange.seq}"
    return [json.dumps({"v": FORMAT, "piece_of": uid, "i": i, "n": len(pieces), "text": p}, separators=(",", ":"))
            for i, p in enumerate(pieces)]


def read_exchanges(root: Path, *, latest_only: bool = True) -> list[Exchange]:
    """Every exchange stored under ``root`` (one store), in file order; by default only each test's latest run."""
    exchanges: list[Exchange] = []
    pieces: dict[str, dict[int, str]] = defaultdict(dict)
    counts: dict[str, int] = {}
    for path in sorted(root.glob("*.jsonl"), key=_file_order):
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            try:
                data = json.loads(line)
                if "piece_of" in data:
                    pieces[data["piece_of"]][data["i"]] = data["text"]
                    counts[data["piece_of"]] = data["n"]
                    if len(pieces[data["piece_of"]]) == data["n"]:
                        parts = pieces.pop(data["piece_of"])
                        data = json.loads("".join(parts[i] for i in range(data["n"])))
                    else:
                        continue
                exchange = Exchange.from_json(data)
                exchange.node = node_key(exchange.node)  # stored ids key the same, with or without the suffix
                exchanges.append(exchange)
            except (ValueError, TypeError, KeyError) as exc:
                raise RecordingError(f"{path}:{number}: not a recorded exchange ({exc})") from None
    if pieces:
        raise RecordingError(f"{root}: incomplete multi-line exchanges {sorted(pieces)} (a recording cut short)")
    if latest_only:
        latest: dict[str, str] = {}
        for ex in exchanges:
            latest[ex.node] = max(latest.get(ex.node, ""), ex.run)
        exchanges = [ex for ex in exchanges if ex.run == latest[ex.node]]
    return exchanges


def _file_order(path: Path) -> tuple[str, int]:
    match = _PART.match(path.name)
    return (match["stem"], int(match["n"] or 1)) if match else (path.name, 0)


def write_exchanges(root: Path, exchanges: Iterable[Exchange], *, max_bytes: int = MAX_FILE_BYTES) -> list[Path]:
    """Replace the JSONL files under ``root`` by ``exchanges``, one file per test module, split at ``max_bytes``."""
    by_stem: dict[str, list[Exchange]] = defaultdict(list)
    for ex in exchanges:
        by_stem[_node_stem(ex.node)].append(ex)
    written: dict[Path, list[str]] = {}
    for stem, group in sorted(by_stem.items()):
        n, size = 1, 0
        for ex in sorted(group, key=lambda e: (e.node, e.run, e.seq)):
            for line in _lines(ex, max_bytes):
                length = len(line.encode()) + 1
                if size and size + length > max_bytes:
                    n, size = n + 1, 0
                written.setdefault(root / _part_name(stem, n), []).append(line)
                size += length
    root.mkdir(parents=True, exist_ok=True)
    for path, lines in written.items():
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text("\n".join(lines) + "\n", encoding="utf-8")
        os.replace(tmp, path)
    for stale in root.glob("*.jsonl"):
        if stale not in written:
            stale.unlink()
    return sorted(written)


class Store:
    """One recording (a model's runtime configuration) in ``DIR/<store id>/``, in record or replay mode."""

    def __init__(self, root: Path, mode: Mode, *, model_id: str, pace: bool = False,
                 max_file_bytes: int = MAX_FILE_BYTES) -> None:
        self.root, self.mode, self.model_id, self.pace = root, mode, model_id, pace
        self.max_file_bytes = max_file_bytes
        self._lock = threading.Lock()
        self._counts: Counter[tuple[str, str, str, str, str]] = Counter()
        self._seqs: Counter[str] = Counter()
        self._open_streams: set[_StreamRecord] = set()
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
        for record in list(self._open_streams):
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
        lines = _lines(exchange, self.max_file_bytes)
        stem = _node_stem(exchange.node)
        with self._lock, self._file_lock:
            parts = [int(m["n"] or 1) for p in self.root.glob(f"{stem}*.jsonl")
                     if (m := _PART.match(p.name)) and m["stem"] == stem]
            n = max(parts, default=1)
            for line in lines:
                path = self.root / _part_name(stem, n)
                size = path.stat().st_size if path.exists() else 0
                if size and size + len(line.encode()) + 1 > self.max_file_bytes:
                    n += 1
                    path = self.root / _part_name(stem, n)
                with path.open("a", encoding="utf-8") as f:
                    f.write(line + "\n")

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
    return _safe(model_id, "--")


def open_store(directory: Path | str, model_id: str, mode: Mode, *, pace: bool = False) -> Store:
    """The recording of ``model_id`` (pass the runtime configuration id, e.g. ``micro-dense-bfloat16``) in
    ``directory``: ``record`` appends to it, ``replay`` reads it (``pace`` replays the recorded timing)."""
    if mode not in ("record", "replay"):
        raise ValueError(f"mode must be 'record' or 'replay', got {mode!r}")
    return Store(Path(directory) / store_id(model_id), mode, model_id=model_id, pace=pace)


def unreplayable(settings: Settings, models: Sequence[ModelSpec]) -> str | None:
    """Why ``settings.replay_dir`` cannot answer any test of ``models``: it holds no recording of their own runtime
    configurations (each model in each selected dtype); None when it holds one, or under --lfm-replay-missing skip."""
    directory = settings.replay_dir
    if directory is None or settings.replay_missing == "skip":
        return None
    wanted = [LaunchConfig(m, dtype, "default", settings.server_args).id for m in models for dtype in settings.dtypes]
    if any((directory / store_id(launch_id)).is_dir() for launch_id in wanted):
        return None
    held = sorted(p.name for p in directory.iterdir() if (p / "meta.json").is_file())
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


class ReplayServer:
    """Stands in for ``lfm_server`` in replay mode: no process; the recorded server's name and version."""

    base_url = REPLAY_BASE_URL

    pid = None
    log_path = None

    def __init__(self, store: Store) -> None:
        self.store = store
        self.name = f"replay of {store.root}"
        meta = store.meta()
        self.command: list[str] = list(meta.get("launch_args", []))
        startup = meta.get("startup_seconds")
        self.startup_seconds: float | None = float(startup) if startup is not None else None

    def served_model(self) -> str:
        return str(self.store.meta()["served_model"])

    def sglang_version(self) -> str:
        return str(self.store.meta()["sglang_version"])

    def check_alive(self) -> None:
        """Nothing to check: replay has no server process."""

    def is_running(self) -> bool:
        return True

    def log_tail(self, n: int = 50) -> str:
        return f"(replay of {self.store.root}: no server log)"

    def start(self) -> ReplayServer:
        return self

    def stop(self) -> None:
        """Nothing to stop."""

    def __enter__(self) -> ReplayServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
