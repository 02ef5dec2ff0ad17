"""pytest_lfm.images: generated images, their transports, and the LFM2-VL image-token budget."""

from __future__ import annotations

import base64
import io
import json
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from pytest_lfm.images import (
    ImageServer,
    ImageTokenBudget,
    blocks,
    bytes_uri,
    data_uri,
    encoded,
    image_part,
    solid,
    stored_png,
    user_message,
    with_image_urls,
)

BUDGET = ImageTokenBudget()


@pytest.mark.parametrize(
    ("size", "rows", "cols", "resized", "prompt_tokens"),
    [
        ((64, 64), 1, 1, (256, 256), 64 + 2),  # upscaled to min_image_tokens
        ((512, 512), 1, 1, (512, 512), 256 + 2),  # exactly max_image_tokens, no split
        ((512, 64), 1, 1, (736, 96), 23 * 3 + 2),
        ((1024, 977), 2, 2, (512, 480), 4 * 256 + 16 * 15 + 2 + 4 + 1),  # tiles + thumbnail + markers
        ((4000, 3000), 2, 3, (576, 416), 6 * 256 + 18 * 13 + 2 + 6 + 1),
    ],
)
def test_budget_matches_hand_computed_layouts(
    size: tuple[int, int], rows: int, cols: int, resized: tuple[int, int], prompt_tokens: int,
) -> None:
    layout = BUDGET.layout(*size)
    assert (layout.rows, layout.cols, layout.resized) == (rows, cols, resized)
    assert BUDGET.prompt_tokens(*size) == prompt_tokens


def test_budget_never_exceeds_ten_tiles_and_a_thumbnail() -> None:
    """LFM2-VL model card: <= 256 tokens per 512-px tile, at most 10 tiles plus a thumbnail."""
    assert BUDGET.tokens_per_tile == 256
    assert BUDGET.max_prompt_tokens == 10 * 256 + 256 + 2 + 10 + 1
    for size in [(64, 64), (8000, 600), (600, 8000), (4000, 3000), (10000, 10000), (33, 5000)]:
        layout = BUDGET.layout(*size)
        assert layout.tiles <= 10
        assert BUDGET.image_tokens(*size) <= layout.tiles * 256 + 256
        assert BUDGET.prompt_tokens(*size) <= BUDGET.max_prompt_tokens


def test_budget_grows_with_image_size() -> None:
    sizes = [(64, 64), (512, 64), (512, 512), (1024, 977), (4000, 3000)]
    tokens = [BUDGET.prompt_tokens(*s) for s in sizes]
    assert tokens == sorted(tokens) and len(set(tokens)) == len(tokens)


def test_budget_reads_processor_config(tmp_path: Path) -> None:
    (tmp_path / "preprocessor_config.json").write_text(json.dumps({"max_tiles": 4, "max_image_tokens": 128,
                                                                    "image_processor_type": "Lfm2VlImageProcessor"}))
    budget = ImageTokenBudget.for_model(str(tmp_path))
    assert (budget.max_tiles, budget.max_image_tokens, budget.min_tiles) == (4, 128, 2)
    assert ImageTokenBudget.for_model(str(tmp_path / "missing")) == ImageTokenBudget()


def test_budget_without_splitting_resizes_large_images() -> None:
    budget = ImageTokenBudget(do_image_splitting=False)
    assert budget.layout(4000, 3000).split is False
    assert budget.prompt_tokens(4000, 3000) == 18 * 13 + 2


CROSS_CHECK_SIZES = [
    (64, 64), (512, 512), (512, 64), (1024, 977), (4000, 3000), (1, 1), (16, 700), (700, 16), (730, 730),
    (724, 724), (725, 724), (1024, 1024), (1536, 1024), (1600, 900), (2048, 256), (256, 2048), (3000, 4000),
    (1080, 1920), (1920, 1080), (999, 333), (1200, 1100), (5000, 1000), (640, 480), (800, 600), (1100, 1000),
]


@pytest.mark.parametrize("size", CROSS_CHECK_SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_budget_agrees_with_transformers_processor(size: tuple[int, int]) -> None:
    """The budget is a port of transformers' Lfm2VlImageProcessor: same grid and resized size for every image."""
    module = pytest.importorskip("transformers.models.lfm2_vl.image_processing_lfm2_vl",
                                 reason="transformers without a working Lfm2VlImageProcessor (needs torchvision)")
    processor = module.Lfm2VlImageProcessor()
    out = processor(Image.new("RGB", size), return_row_col_info=True)
    layout = BUDGET.layout(*size)
    height, width = out["image_sizes"][0]
    assert (layout.rows, layout.cols, layout.resized) == (out["image_rows"][0], out["image_cols"][0], (width, height))
    assert out["pixel_values"].shape[0] == (layout.tiles + 1 if layout.split else 1)


def test_data_uri_round_trips_the_png() -> None:
    image = blocks(40, 30, seed=3)
    uri = data_uri(image)
    assert uri.startswith("data:image/png;base64,")
    decoded = Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1])))
    assert decoded.size == (40, 30) and decoded.convert("RGB").tobytes() == image.tobytes()


def test_stored_png_is_the_image_in_fixed_bytes_and_a_cut_of_it_does_not_decode() -> None:
    image = blocks(300, 250, seed=3)  # more than one 64 KiB stored deflate block
    png = stored_png(image)
    assert png == stored_png(blocks(300, 250, seed=3)) and png.startswith(b"\x89PNG")
    assert Image.open(io.BytesIO(png)).convert("RGB").tobytes() == image.tobytes()
    cut = Image.open(io.BytesIO(png[:len(png) // 2]))  # the header still reads; the pixels do not
    with pytest.raises(OSError, match="truncated"):
        cut.load()


def test_other_encodings_round_trip_through_their_data_uri() -> None:
    image = blocks(40, 30, seed=3)
    uri = bytes_uri(encoded(image, "WEBP", lossless=True), "image/webp")
    assert uri.startswith("data:image/webp;base64,")
    decoded = Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1])))
    assert decoded.format == "WEBP" and decoded.convert("RGB").tobytes() == image.tobytes()


def test_blocks_differ_by_seed_and_repeat_by_seed() -> None:
    assert blocks(64, 64, seed=1).tobytes() == blocks(64, 64, seed=1).tobytes()
    assert blocks(64, 64, seed=1).tobytes() != blocks(64, 64, seed=2).tobytes()


def test_image_server_serves_added_images_and_counts_hits() -> None:
    with ImageServer() as server:
        url = server.add("red.png", solid(8, 8, (255, 0, 0)))
        with urllib.request.urlopen(url, timeout=10) as response:
            assert response.headers["Content-Type"] == "image/png"
            assert Image.open(io.BytesIO(response.read())).getpixel((0, 0)) == (255, 0, 0)
        assert server.hits("red.png") == 1
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(f"{server.base_url}/nope.png", timeout=10)
        assert err.value.code == 404


def test_with_image_urls_puts_urls_where_the_script_has_image_parts() -> None:
    parts = [{"type": "image", "image": 1}, {"type": "image", "image": 0}, {"type": "text", "text": "Compare."}]
    messages: list[dict[str, Any]] = [{"role": "user", "content": parts}, {"role": "assistant", "content": "Two."}]
    out = with_image_urls(messages, ["http://x/a.png", "http://x/b.png"])
    assert out[0]["content"] == [image_part("http://x/b.png"), image_part("http://x/a.png"),
                                 {"type": "text", "text": "Compare."}]
    assert out[1] == messages[1]
    assert messages[0]["content"][0] == {"type": "image", "image": 1}  # the input is left as it was


def test_user_message_puts_images_before_the_text() -> None:
    assert user_message("What?", "http://x/a.png") == {
        "role": "user", "content": [image_part("http://x/a.png"), {"type": "text", "text": "What?"}]}
