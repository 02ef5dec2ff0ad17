"""The httpx transports of the fixtures' clients: recording ones that pass requests on to the server and save each
exchange, and a replaying one that answers requests from a recording.

A streamed (SSE) response is recorded event by event with each event's arrival time, and saved when its stream
closes; a replayed stream yields the recorded events, paced like the recording when asked.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from typing import Any, Protocol

import httpx

from pytest_lfm.recording.exchange import Exchange
from pytest_lfm.recording.sse import SSEParser, event_bytes, is_sse

KEPT_HEADERS = ("content-type",)
LIMITS = httpx.Limits(max_connections=1000, max_keepalive_connections=100)  # openai's own client defaults


class Recorder(Protocol):
    """Where the recording transports save exchanges (a :class:`~pytest_lfm.recording.store.Store` in record mode)."""

    open_streams: set[StreamRecord]  # streams not closed yet: their exchanges are saved when they close

    def begin(self, node: str, method: str, path: str, query: str, content: bytes) -> Exchange: ...

    def save(self, exchange: Exchange) -> None: ...

    def save_error(self, exchange: Exchange, exc: Exception) -> None: ...


class Replayer(Protocol):
    """Where :class:`ReplayTransport` finds its answers (a :class:`~pytest_lfm.recording.store.Store` in replay)."""

    pace: bool  # replay the recorded timing

    def lookup(self, node: str, method: str, path: str, query: str, content: bytes) -> Exchange: ...


def _query(request: httpx.Request) -> str:
    return request.url.query.decode()


def _kept(headers: httpx.Headers) -> dict[str, str]:
    return {name: headers[name] for name in KEPT_HEADERS if name in headers}


class StreamRecord:
    """Collects a streamed response's events and saves the exchange once, when the stream closes."""

    def __init__(self, recorder: Recorder, exchange: Exchange, start: float) -> None:
        self.recorder, self.exchange, self.parser = recorder, exchange, SSEParser(start)
        self.finished = self.saved = False
        recorder.open_streams.add(self)

    def save(self) -> None:
        if self.saved:
            return
        self.saved = True
        self.recorder.open_streams.discard(self)
        self.parser.finish()
        self.exchange.body_format, self.exchange.events = "sse", self.parser.events
        last = self.parser.events[-1] if self.parser.events else {}
        self.exchange.complete = self.finished or last.get("text") == "[DONE]"  # clients stop reading at [DONE]
        self.recorder.save(self.exchange)


class _RecordingStream(httpx.SyncByteStream):
    def __init__(self, inner: httpx.SyncByteStream, record: StreamRecord) -> None:
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
    def __init__(self, inner: httpx.AsyncByteStream, record: StreamRecord) -> None:
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

    def __init__(self, inner: httpx.BaseTransport, store: Recorder, node: str) -> None:
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
        if is_sse(response.headers):
            assert isinstance(response.stream, httpx.SyncByteStream)
            stream = _RecordingStream(response.stream, StreamRecord(self._store, exchange, start))
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

    def __init__(self, inner: httpx.AsyncBaseTransport, store: Recorder, node: str) -> None:
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
        if is_sse(response.headers):
            assert isinstance(response.stream, httpx.AsyncByteStream)
            stream = _AsyncRecordingStream(response.stream, StreamRecord(self._store, exchange, start))
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


class _ReplayStream(httpx.SyncByteStream, httpx.AsyncByteStream):
    def __init__(self, events: Sequence[dict[str, Any]], start: float, pace: bool) -> None:
        self._events, self._start, self._pace = events, start, pace

    def _delay(self, event: dict[str, Any]) -> float:
        return max(0.0, float(event.get("t", 0.0)) - (time.perf_counter() - self._start)) if self._pace else 0.0

    def __iter__(self) -> Iterator[bytes]:
        for event in self._events:
            if delay := self._delay(event):
                time.sleep(delay)
            yield event_bytes(event)

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for event in self._events:
            await asyncio.sleep(self._delay(event))
            yield event_bytes(event)


class ReplayTransport(httpx.BaseTransport, httpx.AsyncBaseTransport):
    """Answers the test ``node``'s requests from ``store``'s recording (sync and async clients alike)."""

    def __init__(self, store: Replayer, node: str) -> None:
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
