"""Server-sent events: split a ``text/event-stream`` body into events as it arrives, and write events back out.

An event is a dict: ``{"data": <JSON value>}`` when its data parses as JSON, else ``{"text": <raw data>}``; with
``"event"`` when the stream named it, and ``"t"``, the seconds from the request's start to its arrival.
"""

from __future__ import annotations

import json
import time
from typing import Any

import httpx


class SSEParser:
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


def event_bytes(event: dict[str, Any]) -> bytes:
    """One event as the bytes of the stream (``event:`` and ``data:`` lines, then a blank line)."""
    lines = [f"event: {event['event']}"] if "event" in event else []
    text = json.dumps(event["data"], ensure_ascii=False, separators=(",", ":")) if "data" in event else event["text"]
    lines += [f"data: {line}" for line in str(text).split("\n")]
    return ("\n".join(lines) + "\n\n").encode()


def is_sse(headers: httpx.Headers) -> bool:
    """Whether a response with ``headers`` is a server-sent event stream."""
    content_type: str = headers.get("content-type", "")
    return content_type.split(";")[0].strip() == "text/event-stream"
