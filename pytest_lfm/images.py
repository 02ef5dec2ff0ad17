"""Test images for the vision suites: drawn with PIL, sent as data URIs or served by a local HTTP server, and the
number of prompt tokens the LFM2-VL processor turns each image into."""

from __future__ import annotations

import base64
import io
import json
import math
import random
import struct
import threading
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any

from PIL import Image, ImageDraw

RGB = tuple[int, int, int]


def solid(width: int, height: int, color: RGB) -> Image.Image:
    """An image of one color."""
    return Image.new("RGB", (width, height), color)


def blocks(width: int, height: int, seed: int, *, cells: int = 8) -> Image.Image:
    """A deterministic image of colored blocks; different seeds give visibly different images."""
    rng = random.Random(seed)
    image = Image.new("RGB", (width, height))
    draw = ImageDraw.Draw(image)
    for row in range(cells):
        for col in range(cells):
            color = (rng.randrange(256), rng.randrange(256), rng.randrange(256))
            box = (col * width // cells, row * height // cells,
                   (col + 1) * width // cells - 1, (row + 1) * height // cells - 1)
            draw.rectangle(box, fill=color)
    return image


def png_bytes(image: Image.Image) -> bytes:
    """The image encoded as PNG."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def encoded(image: Image.Image, fmt: str, **options: Any) -> bytes:
    """The image encoded in PIL format ``fmt`` (``"JPEG"``, ``"WEBP"``, ...) with the encoder's ``options``."""
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def stored_png(image: Image.Image) -> bytes:
    """The image as a PNG whose pixel data is deflate-stored, not compressed: the same bytes on every machine (a
    compressed PNG's bytes depend on the zlib build), so a cut of it is a reproducible corrupt image."""
    rgb = image.convert("RGB")
    rows = b"".join(b"\x00" + rgb.tobytes()[y * rgb.width * 3:(y + 1) * rgb.width * 3] for y in range(rgb.height))
    blocks = [rows[i:i + 0xFFFF] for i in range(0, len(rows), 0xFFFF)] or [b""]
    stream = b"\x78\x01" + b"".join(
        bytes([i == len(blocks) - 1]) + struct.pack("<HH", len(b), len(b) ^ 0xFFFF) + b
        for i, b in enumerate(blocks)) + struct.pack(">I", zlib.adler32(rows))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", rgb.width, rgb.height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", stream) + chunk(b"IEND", b"")


def bytes_uri(data: bytes, media_type: str) -> str:
    """``data`` as a ``data:<media_type>;base64,...`` URI."""
    return f"data:{media_type};base64," + base64.b64encode(data).decode("ascii")


def data_uri(image: Image.Image) -> str:
    """The image as a ``data:image/png;base64,...`` URI, as OpenAI clients send inline images."""
    return bytes_uri(png_bytes(image), "image/png")


def image_part(url: str) -> dict[str, Any]:
    """An OpenAI chat content part referring to an image by URL (http(s) or data URI)."""
    return {"type": "image_url", "image_url": {"url": url}}


def user_message(text: str, *image_urls: str) -> dict[str, Any]:
    """A user message with the images first, then the text (the order LFM2-VL's examples use)."""
    return {"role": "user", "content": [*(image_part(u) for u in image_urls), {"type": "text", "text": text}]}


def with_image_urls(messages: Sequence[Mapping[str, Any]], urls: Sequence[str]) -> list[dict[str, Any]]:
    """Script messages (``pytest_lfm.micro.script``) with each ``{"type": "image", "image": i}`` part replaced by an
    ``image_url`` part for ``urls[i]``: the script's turn sent through another image transport."""
    out = []
    for message in messages:
        content = message.get("content")
        if isinstance(content, list):
            content = [image_part(urls[part["image"]]) if part.get("type") == "image" else dict(part)
                       for part in content]
        out.append({**message, "content": content})
    return out


# ---------------------------------------------------------------- token budget


@dataclass(frozen=True)
class Layout:
    """How the processor splits one image: a grid of tiles (1 x 1: no split) and the resized image or thumbnail."""

    rows: int
    cols: int
    resized: tuple[int, int]  # (width, height) of the single resized image, or of the thumbnail when split

    @property
    def tiles(self) -> int:
        return self.rows * self.cols if self.split else 0

    @property
    def split(self) -> bool:
        return self.rows > 1 or self.cols > 1


@dataclass(frozen=True)
class ImageTokenBudget:
    """The LFM2-VL processor's image-token arithmetic (transformers Lfm2VlImageProcessor + Lfm2VlProcessor).

    An image up to about 512 x 512 px is resized (keeping its aspect ratio, patch-aligned) to between
    ``min_image_tokens`` and ``max_image_tokens`` tokens. A larger one is split into a grid of 512-px tiles of
    ``tokens_per_tile`` (256) tokens each, ``min_tiles``..``max_tiles`` (2..10) tiles chosen by aspect ratio, plus a
    thumbnail of at most ``max_image_tokens``. With special tokens, the image is wrapped in ``<|image_start|>``
    ``<|image_end|>``, each tile is preceded by ``<|img_row_R_col_C|>`` and the thumbnail by ``<|img_thumbnail|>``.
    Field names are the processor's config keys, so a model's ``preprocessor_config.json`` overrides them.
    """

    tile_size: int = 512
    encoder_patch_size: int = 16
    downsample_factor: int = 2
    min_tiles: int = 2
    max_tiles: int = 10
    min_image_tokens: int = 64
    max_image_tokens: int = 256
    use_thumbnail: bool = True
    do_image_splitting: bool = True
    max_pixels_tolerance: float = 2.0
    use_image_special_tokens: bool = True

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> ImageTokenBudget:
        """The budget for a processor config (unknown keys ignored; an ``image_processor`` section is used)."""
        section = config.get("image_processor", config)
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in section.items() if k in names})

    @classmethod
    def for_model(cls, model_path: str) -> ImageTokenBudget:
        """The budget of a model directory or of a hub model in the local cache; the LFM2-VL defaults otherwise."""
        for name in ("preprocessor_config.json", "processor_config.json"):
            local = Path(model_path) / name
            path = local if local.is_file() else _cached_hub_file(model_path, name)
            if path is not None:
                return cls.from_config(json.loads(path.read_text()))
        return cls()

    @property
    def tokens_per_tile(self) -> int:
        side = math.ceil((self.tile_size // self.encoder_patch_size) / self.downsample_factor)
        return side * side

    def layout(self, width: int, height: int) -> Layout:
        """The grid and resized size the processor picks for a ``width`` x ``height`` image."""
        min_tiles, max_tiles = (self.min_tiles, self.max_tiles) if self.do_image_splitting else (1, 1)
        resized = self._smart_resize(width, height)
        if self._too_large(width, height) and not min_tiles == max_tiles == 1:
            cols, rows = _closest_grid(width, height, min_tiles, max_tiles, self.tile_size)
            return Layout(rows, cols, resized)
        return Layout(1, 1, resized)

    def image_tokens(self, width: int, height: int) -> int:
        """How many ``<image>`` tokens the image becomes."""
        layout = self.layout(width, height)
        resized_tokens = self._tokens_for(*layout.resized)
        if not layout.split:
            return resized_tokens
        return layout.tiles * self.tokens_per_tile + (resized_tokens if self.use_thumbnail else 0)

    def prompt_tokens(self, width: int, height: int) -> int:
        """How many prompt tokens replace the image's one ``<image>`` placeholder (image tokens + markers)."""
        layout = self.layout(width, height)
        markers = 0
        if self.use_image_special_tokens:
            markers = 2 + layout.tiles + (1 if layout.split and self.use_thumbnail else 0)
        return self.image_tokens(width, height) + markers

    @property
    def max_prompt_tokens(self) -> int:
        """The most prompt tokens one image can take: ``max_tiles`` tiles plus a full thumbnail, with markers."""
        markers = 2 + self.max_tiles + 1 if self.use_image_special_tokens else 0
        return self.max_tiles * self.tokens_per_tile + self.max_image_tokens + markers

    def _tokens_for(self, width: int, height: int) -> int:
        per_side = self.encoder_patch_size
        return (math.ceil((height // per_side) / self.downsample_factor)
                * math.ceil((width // per_side) / self.downsample_factor))

    def _too_large(self, width: int, height: int) -> bool:
        factor = self.encoder_patch_size * self.downsample_factor
        h_bar = max(self.encoder_patch_size, round(height / factor) * factor)
        w_bar = max(self.encoder_patch_size, round(width / factor) * factor)
        limit = self.max_image_tokens * self.encoder_patch_size**2 * self.downsample_factor**2
        return h_bar * w_bar > limit * self.max_pixels_tolerance

    def _smart_resize(self, width: int, height: int) -> tuple[int, int]:
        factor = self.encoder_patch_size * self.downsample_factor
        min_pixels = self.min_image_tokens * self.encoder_patch_size**2 * self.downsample_factor**2
        max_pixels = self.max_image_tokens * self.encoder_patch_size**2 * self.downsample_factor**2
        h_bar = max(factor, round(height / factor) * factor)
        w_bar = max(factor, round(width / factor) * factor)
        if h_bar * w_bar > max_pixels:
            beta = math.sqrt(height * width / max_pixels)
            h_bar = max(factor, math.floor(height / beta / factor) * factor)
            w_bar = max(factor, math.floor(width / beta / factor) * factor)
        elif h_bar * w_bar < min_pixels:
            beta = math.sqrt(min_pixels / (height * width))
            h_bar = math.ceil(height * beta / factor) * factor
            w_bar = math.ceil(width * beta / factor) * factor
        return w_bar, h_bar


def _closest_grid(width: int, height: int, min_tiles: int, max_tiles: int, tile_size: int) -> tuple[int, int]:
    """(cols, rows) whose aspect ratio is closest to the image's; ties go to the larger grid if the image fills
    more than half of it. Candidate order is the processor's (sorted by tile count), which decides the ties."""
    ratios = sorted({(w, h) for n in range(min_tiles, max_tiles + 1) for w in range(1, n + 1)
                     for h in range(1, n + 1) if min_tiles <= w * h <= max_tiles}, key=lambda r: r[0] * r[1])
    aspect = width / height
    best, best_diff = (1, 1), float("inf")
    for ratio in ratios:
        diff = abs(aspect - ratio[0] / ratio[1])
        if diff < best_diff:
            best, best_diff = ratio, diff
        elif diff == best_diff and width * height > 0.5 * tile_size * tile_size * ratio[0] * ratio[1]:
            best = ratio
    return best


def _cached_hub_file(repo_id: str, filename: str) -> Path | None:
    """``filename`` of hub model ``repo_id`` if it is in the local Hugging Face cache (no download)."""
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:  # pragma: no cover - transformers brings huggingface_hub
        return None
    try:
        found = try_to_load_from_cache(repo_id, filename)
    except ValueError:  # not a repo id (e.g. a local path that lacks the file)
        return None
    return Path(found) if isinstance(found, str) else None


# ---------------------------------------------------------------- local HTTP server


class ImageServer:
    """A local HTTP server for generated images, so requests can name images by http URL.

        with ImageServer() as images:
            url = images.add("red.png", solid(64, 64, (255, 0, 0)))
            ...  # send url; images.hits("red.png") says how often the runtime fetched it

    ``host`` must be reachable from the sglang server: the default suits a server on this machine.
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self._files: dict[str, bytes] = {}
        self._hits: dict[str, int] = {}
        self._lock = threading.Lock()
        self._httpd = ThreadingHTTPServer((host, port), self._handler())
        self._httpd.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host!s}:{port}"

    def add(self, name: str, image: Image.Image) -> str:
        """Serve ``image`` as PNG at ``/name``; returns its URL."""
        with self._lock:
            self._files[name] = png_bytes(image)
        return f"{self.base_url}/{name}"

    def hits(self, name: str) -> int:
        """How many GET requests ``/name`` has answered."""
        with self._lock:
            return self._hits.get(name, 0)

    def start(self) -> ImageServer:
        if self._thread is None:
            self._thread = threading.Thread(target=self._httpd.serve_forever, name="lfm-image-server", daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        if self._thread is not None:
            self._httpd.shutdown()
            self._thread.join()
            self._thread = None
        self._httpd.server_close()

    def __enter__(self) -> ImageServer:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                name = self.path.lstrip("/").split("?", 1)[0]
                with server._lock:
                    body = server._files.get(name)
                    if body is not None:
                        server._hits[name] = server._hits.get(name, 0) + 1
                if body is None:
                    self.send_error(404, f"no image {name!r}")
                    return
                self.send_response(200)
                self.send_header("Content-Type", "image/png")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:  # keep test output clean
                pass

        return Handler

