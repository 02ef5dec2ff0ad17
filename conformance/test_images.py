"""Images beyond the happy path: images sglang cannot load get a 4xx and leave the server serving; other encodings,
an image in a stream or in an earlier turn, and the launch's per-request image limit.

sglang 0.5.17 loads an image in its processor's I/O workers (multimodal/processors/base_processor.py:650-677): a
client media error (ValueError, PIL's UnidentifiedImageError, a requests error: utils/common.py:1531-1535) becomes
a ValueError, answered 400 (serving_chat.py:1713-1714); any other error a RuntimeError, answered 500. It decodes a
data URI's bytes whatever its media type says (utils/common.py:1745-1747) and turns every image into RGB,
dropping alpha (base_processor.py:659-660).
"""

from __future__ import annotations

import contextlib
import json
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import openai
import pytest
from PIL import Image

from pytest_lfm import checks
from pytest_lfm.images import ImageTokenBudget, blocks, bytes_uri, encoded, png_bytes, stored_png, user_message
from pytest_lfm.matrix import ModelSpec, flag_value
from pytest_lfm.micro.script import Script, Turn
from pytest_lfm.runtime import HttpServer

from .test_vision import _ask, _check_answer, _expected_prompt_tokens, _image_turns, _shown

pytestmark = pytest.mark.lfm_requires("vision")

QUESTION = "Describe the image."
SVG = b'<svg xmlns="http://www.w3.org/2000/svg" width="64" height="64"><circle cx="32" cy="32" r="20"/></svg>'
UNREACHABLE = "http://127.0.0.1:9/x.png"  # the discard port: refused at once on the server's own host
LIMIT_FLAG = "--limit-mm-data-per-request"


@dataclass(frozen=True)
class BadImage:
    """An image_url sglang cannot load, and why sglang 0.5.17 fails the check where it does."""

    id: str
    url: str
    known: str | None = None


def _bad_images() -> list[BadImage]:
    png = stored_png(blocks(64, 64, seed=7))
    noise = bytes(random.Random(7).randrange(256) for _ in range(512))
    return [
        BadImage("not-an-image", bytes_uri(noise, "image/png")),
        BadImage("truncated-png", bytes_uri(png[:len(png) // 2], "image/png"),
                 known="sglang #28461 (400 for invalid multimodal data, closed): sglang 0.5.17 answers 500 for an "
                       "image PIL cannot finish decoding (an OSError is not a client media error: "
                       "utils/common.py:1531-1535)"),
        BadImage("svg", bytes_uri(SVG, "image/svg+xml")),
        BadImage("unreachable-url", UNREACHABLE),
        BadImage("wrong-media-type", bytes_uri(png_bytes(blocks(64, 64, seed=7)), "text/plain"),
                 known="sglang 0.5.17 decodes a data URI's bytes whatever its media type (utils/common.py:1745-1747)"),
    ]


BAD_IMAGES = _bad_images()


def _bad_request(model_name: str, bad: BadImage) -> dict[str, Any]:
    return {"model": model_name, "messages": [user_message(QUESTION, bad.url)], "temperature": 0, "max_tokens": 8}


@dataclass(frozen=True)
class Encoding:
    """A way to send the script's image: PIL mode and format, media type, and whether its RGB pixels stay those of
    the script's PNG (then a micro checkpoint must give the scripted answer)."""

    id: str
    mode: str
    fmt: str
    media_type: str
    lossless: bool
    options: tuple[tuple[str, Any], ...] = ()

    def uri(self, image: Image.Image) -> str:
        return bytes_uri(encoded(image.convert(self.mode), self.fmt, **dict(self.options)), self.media_type)


ENCODINGS = [
    Encoding("rgba", "RGBA", "PNG", "image/png", lossless=True),
    Encoding("grayscale", "L", "PNG", "image/png", lossless=False),
    Encoding("jpeg", "RGB", "JPEG", "image/jpeg", lossless=False, options=(("quality", 95),)),
    Encoding("webp", "RGB", "WEBP", "image/webp", lossless=True, options=(("lossless", True),)),
]
LOSSLESS = [e for e in ENCODINGS if e.lossless]


def _encoded_request(turn: Turn, model_name: str, encoding: Encoding) -> dict[str, Any]:
    """The scripted image turn with its image sent in ``encoding``."""
    image = turn.images[0].render()
    messages = [user_message(turn.messages[0]["content"][-1]["text"], encoding.uri(image))]
    return turn.request(model_name, messages=messages)


# ---------------------------------------------------------------- images sglang cannot load


@pytest.mark.parametrize("bad", [pytest.param(b, id=b.id, marks=[pytest.mark.xfail(strict=False, reason=b.known)]
                                              if b.known else []) for b in BAD_IMAGES])
def test_image_that_cannot_be_loaded_gets_a_4xx(bad: BadImage, lfm_client: openai.OpenAI, lfm_model_name: str) -> None:
    """OpenAI API reference (400 for an invalid request); sglang 0.5.17 base_processor.py:668-672 (a client media
    error is a ValueError: HTTP 400 naming the image)."""
    request = _bad_request(lfm_model_name, bad)
    try:
        response = lfm_client.chat.completions.create(**request)
    except openai.APIStatusError as exc:
        checks.check(400 <= exc.status_code < 500 and "image" in exc.response.text.lower(),
                     "HTTP status of an image that cannot be loaded", request=_shown(request),
                     expected="a 4xx naming the image", got=f"{exc.status_code}: {exc.response.text}")
        return
    checks.fail("the server answered a request whose image cannot be loaded", request=_shown(request),
                expected="a 4xx naming the image", got=response)


@pytest.mark.parametrize("bad", [pytest.param(b, id=b.id) for b in BAD_IMAGES])
def test_server_answers_after_a_bad_image(
    bad: BadImage, lfm_client: openai.OpenAI, lfm_model_name: str, check_still_serving: Callable[[str], None],
) -> None:
    """A bad image is the client's error: the server answers the next request as before."""
    with contextlib.suppress(openai.APIStatusError):
        lfm_client.chat.completions.create(**_bad_request(lfm_model_name, bad))
    check_still_serving(f"a bad image ({bad.id})")


# ---------------------------------------------------------------- other encodings


@pytest.mark.parametrize("encoding", ENCODINGS, ids=[e.id for e in ENCODINGS])
def test_image_encoding_is_served_with_the_processor_budget(
    encoding: Encoding, lfm_model: ModelSpec, lfm_script: Script, budget: ImageTokenBudget, lfm_client: openai.OpenAI,
    lfm_model_name: str, lfm_sglang_version: str,
) -> None:
    """OpenAI vision guide (PNG, JPEG, WEBP, non-animated GIF); the LFM2-VL processor budget depends on the size
    only: prompt_tokens as for the script's PNG."""
    turn = _image_turns(lfm_script, lfm_model)[0]
    request = _encoded_request(turn, lfm_model_name, encoding)
    response = _ask(lfm_client, request)
    checks.assert_finish_reason(checks.only_choice(response, request=_shown(request)), ("stop", "length"),
                                request=_shown(request))
    sizes = [(spec.width, spec.height) for spec in turn.images]
    expected = _expected_prompt_tokens(lfm_model, request["messages"], sizes, budget, lfm_sglang_version)
    checks.check(response.usage.prompt_tokens == expected, f"prompt_tokens of a {encoding.id} image",
                 request=_shown(request), expected=expected, got=response.usage)


@pytest.mark.parametrize("encoding", LOSSLESS, ids=[e.id for e in LOSSLESS])
def test_lossless_image_encoding_gets_the_scripted_answer(
    encoding: Encoding, lfm_model: ModelSpec, lfm_script: Script, lfm_client: openai.OpenAI, lfm_model_name: str,
) -> None:
    """sglang 0.5.17 base_processor.py:659-660 (the image turned into RGB, alpha dropped): the script's pixels, so the
    script's answer."""
    turn = _image_turns(lfm_script, lfm_model)[0]
    request = _encoded_request(turn, lfm_model_name, encoding)
    choice = checks.only_choice(_ask(lfm_client, request), request=_shown(request))
    _check_answer(choice.message.content, choice.finish_reason, turn, lfm_model, request=_shown(request))


# ---------------------------------------------------------------- streams and conversations


def test_image_in_a_streamed_request_gets_the_scripted_answer(
    lfm_model: ModelSpec, lfm_script: Script, lfm_client: openai.OpenAI, lfm_model_name: str,
) -> None:
    """OpenAI streaming reference with an image_url part: the streamed text is the script's answer."""
    turn = _image_turns(lfm_script, lfm_model)[0]
    request = turn.request(lfm_model_name, stream=True)
    choice = checks.assemble_stream(lfm_client.chat.completions.create(**request)).only_choice()
    _check_answer(choice.content, choice.finish_reason, turn, lfm_model, request=_shown(request))


def _earlier_image_turns(script: Script, model: ModelSpec) -> list[Turn]:
    """The scripted image turns whose images are all in an earlier message than the question."""
    turns = [t for t in _image_turns(script, model) if not _has_image(t.messages[-1])]
    if not turns:
        pytest.skip(f"the script has no conversation with an image in an earlier turn for {model.id}")
    return turns


def _has_image(message: dict[str, Any]) -> bool:
    content = message.get("content")
    return isinstance(content, list) and any(part.get("type") == "image" for part in content)


def test_image_in_an_earlier_turn_is_what_the_answer_is_about(
    lfm_model: ModelSpec, lfm_script: Script, lfm_client: openai.OpenAI, lfm_model_name: str,
) -> None:
    """LFM2-VL chat template (every turn rendered, its images included): asked in a later turn, after an answer that
    does not name it, the model names the colour of the shape in the first turn's image (a micro checkpoint: the
    script's answer; two such turns differ only in the image)."""
    for turn in _earlier_image_turns(lfm_script, lfm_model):
        request = turn.request(lfm_model_name)
        choice = checks.only_choice(_ask(lfm_client, request), request=_shown(request))
        if checks.exact(lfm_model):
            _check_answer(choice.message.content, choice.finish_reason, turn, lfm_model, request=_shown(request))
            continue
        colour = turn.images[0].colour
        checks.check(colour in (choice.message.content or "").lower(), "the answer about the earlier turn's image",
                     request=_shown(request), expected=f"an answer naming {colour!r}", got=choice.message)


# ---------------------------------------------------------------- the per-request image limit


def test_more_images_than_the_launch_allows_are_rejected_with_400(
    lfm_live_server: HttpServer, lfm_client: openai.OpenAI, lfm_model_name: str,
) -> None:
    """sglang 0.5.17 tokenizer_manager.py:1233-1245 (--limit-mm-data-per-request): "Image count N exceeds limit L
    per request.", a ValueError: HTTP 400."""
    value = flag_value(lfm_live_server.command, LIMIT_FLAG)
    limit = json.loads(value).get("image") if value else None
    if not isinstance(limit, int):
        pytest.skip(f"the launch sets no image limit ({LIMIT_FLAG} '{{\"image\": N}}')")
    images = [bytes_uri(png_bytes(blocks(64, 64, seed=20 + i)), "image/png") for i in range(limit + 1)]
    request = {"model": lfm_model_name, "messages": [user_message(QUESTION, *images)], "temperature": 0,
               "max_tokens": 8}
    checks.expect_http_error(lambda: lfm_client.chat.completions.create(**request), 400, request=_shown(request),
                             mentions=f"Image count {limit + 1} exceeds limit {limit} per request.")
