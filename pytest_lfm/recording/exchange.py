"""One recorded exchange, and the key that replay matches a request on.

A request is keyed on (test, method, path, query, body digest, occurrence). The test is its node id without the
``@<group>`` suffix xdist gives it under ``-n`` (:func:`node_key`), so a recording made with or without ``-n``
replays with or without it. The body digest is of its canonical form (:func:`canonical_body`): sorted JSON, images
as their pixels' digest, loopback ports replaced.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import io
import json
import re
from dataclasses import asdict, dataclass, field
from typing import Any

from pytest_lfm.recording.sse import event_bytes

FORMAT = 1
ELIDE_CHARS = 4096  # longer request strings are stored as a digest (the key always uses the full body)
Key = tuple[str, str, str, str, str, int]  # node, method, path, query, body digest, occurrence


class RecordingError(RuntimeError):
    """A recording directory that cannot be used (missing, unreadable, wrong mode)."""


# the "@<group>" that xdist's --dist loadgroup appends to a node id: an "@" that no "[", "]" or ":" follows
_XDIST_GROUP = re.compile(r"@[^\[\]:]*$")

# a URL of a server the tests start on this machine (the vision suite's image server): its port differs per run
_LOOPBACK_PORT = re.compile(r"^(https?://(?:127\.0\.0\.1|localhost|\[::1\])):\d+/")


def node_key(nodeid: str) -> str:
    """The key of test ``nodeid`` in a recording: its node id without xdist's ``@<group>`` suffix."""
    return _XDIST_GROUP.sub("", nodeid)


def _sha(data: bytes | str) -> str:
    return hashlib.sha256(data.encode() if isinstance(data, str) else data).hexdigest()[:16]


def _image_digest(url: str) -> str:
    """A data-URL image as its pixels' digest: PNG/JPEG bytes of one image differ between encoder builds."""
    head, _, payload = url.partition(",")
    try:
        raw = base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        return f"<image {head} sha256:{_sha(payload)}>"
    try:
        from PIL import Image  # Pillow loads only when a request carries an image

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
            return b"".join(event_bytes(e) for e in self.events or ())
        return str(self.body).encode()

    def describe(self) -> str:
        return f"{self.method} {self.path}{'?' + self.query if self.query else ''} (body sha256 {self.digest})"
