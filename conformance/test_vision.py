"""Vision inputs: how an LFM2-VL model on sglang takes images, counts them and answers about them.

Images are generated here (pytest_lfm.images, the micro script's ImageSpec). Micro checkpoints must give the
script's exact answers; real models are checked on structure. Prompt tokens are checked exactly against the LFM2-VL
processor's budget: the chat prompt's tokens, minus one ``<image>`` placeholder per image, plus what the processor
expands each image into (pytest_lfm.images.ImageTokenBudget).
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import ipaddress
import urllib.parse
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import openai
import pytest
from PIL import Image

from pytest_lfm import checks
from pytest_lfm.images import ImageServer, ImageTokenBudget, blocks, data_uri, user_message, with_image_urls
from pytest_lfm.matrix import ModelSpec
from pytest_lfm.micro.render import prompt_token_count, template_messages
from pytest_lfm.micro.script import Script, Turn, load_script
from pytest_lfm.report import notes
from pytest_lfm.report.notes import note
from pytest_lfm.runtime import HttpServer
from pytest_lfm.runtime.engine import SglangEngine
from pytest_lfm.settings import Settings

pytestmark = pytest.mark.lfm_requires("vision")

#: Around the processor's thresholds: upscaled to the 64-token minimum, exactly one 512-px tile, a thin strip,
#: just over the split threshold (2 x 2 tiles + thumbnail), and a photo size (3 x 2 tiles + thumbnail).
SIZES = [(64, 64), (512, 512), (512, 64), (1024, 977), (4000, 3000)]
QUESTION = "Describe the image."
#: --context-length of the launch variant whose context cannot hold a large image.
SMALL_CONTEXT = 1024
CONCURRENT_REQUESTS = 12

IMAGE_TURNS = [t.id for t in load_script().turns if t.kind == "image"]


# ---------------------------------------------------------------- helpers


def _shown(request: Mapping[str, Any]) -> dict[str, Any]:
    """The request with long data URIs shortened, for failure messages."""
    shown = copy.deepcopy(dict(request))
    for message in shown.get("messages", ()):
        for part in message.get("content") if isinstance(message.get("content"), list) else ():
            url = part.get("image_url", {}).get("url", "")
            if url.startswith("data:") and len(url) > 64:
                part["image_url"]["url"] = f"{url[:40]}...({len(url)} characters)"
    return shown


def _image_sizes(images: Sequence[Image.Image]) -> list[tuple[int, int]]:
    return [image.size for image in images]


def _expected_prompt_tokens(model: ModelSpec, messages: Sequence[Mapping[str, Any]], sizes: Sequence[tuple[int, int]],
                            budget: ImageTokenBudget, sglang_version: str) -> int:
    """The chat prompt's tokens with each ``<image>`` placeholder replaced by the processor's expansion."""
    placeholders = prompt_token_count(model.tokenizer_path(), messages, None, sglang_version)
    return placeholders - len(sizes) + sum(budget.prompt_tokens(w, h) for w, h in sizes)


def _check_answer(content: str | None, finish_reason: str | None, turn: Turn, model: ModelSpec, *,
                  request: Any) -> None:
    """Micro checkpoints: the script's exact answer. Real models: a finished, non-empty answer without control
    tokens."""
    __tracebackhide__ = True
    if model.micro:
        checks.assert_content_equal(content, turn.content or "", request=request, what=f"answer to {turn.id}")
        checks.check(finish_reason == "stop", "finish_reason", request=request, expected="stop", got=finish_reason)
        return
    checks.check(bool((content or "").strip()), "answer about the image is empty", request=request,
                 expected="a description of the image", got=content)
    checks.check(finish_reason in ("stop", "length"), "finish_reason", request=request, expected="stop or length",
                 got=finish_reason)
    checks.assert_no_special_tokens(content, request=request)


def _image_turns(script: Script, model: ModelSpec) -> list[Turn]:
    turns = script.of_kind(model, "image")
    if not turns:
        pytest.skip(f"the script has no image turns for {model.id}")
    return turns


def _same_question_pair(turns: Sequence[Turn]) -> tuple[Turn, Turn]:
    """Two scripted image turns asking the same question about different images, with different answers."""
    for i, first in enumerate(turns):
        for second in turns[i + 1:]:
            if (first.messages == second.messages and first.images != second.images
                    and first.content != second.content):
                return first, second
    pytest.skip("the script has no two image turns asking the same question about different images")


def _ask(client: openai.OpenAI, request: Mapping[str, Any]) -> Any:
    """The chat completion for ``request``; a 5xx or any other HTTP error fails with the request shown."""
    __tracebackhide__ = True
    try:
        return client.chat.completions.create(**request)
    except openai.APIStatusError as exc:
        checks.fail("the server failed a valid image request", request=_shown(request), expected="HTTP 200",
                    got=f"{exc.status_code}: {exc.response.text}")


# ---------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def image_server() -> Iterator[ImageServer]:
    """A local HTTP server for generated images."""
    with ImageServer() as server:
        yield server


# ---------------------------------------------------------------- answers and transports


@pytest.mark.parametrize("turn_id", IMAGE_TURNS)
def test_image_turn_answer_matches_script(
    turn_id: str, lfm_model: ModelSpec, lfm_script: Script, lfm_client: openai.OpenAI, lfm_model_name: str,
) -> None:
    """Source: the micro VL script (pytest_lfm/micro/script.json); images sent as data URIs (OpenAI image_url)."""
    turn = lfm_script.get(turn_id)
    if turn not in lfm_script.for_model(lfm_model):
        pytest.skip(f"{lfm_model.id} is not trained on {turn_id}")
    request = turn.request(lfm_model_name)
    choice = checks.only_choice(_ask(lfm_client, request), request=_shown(request))
    _check_answer(choice.message.content, choice.finish_reason, turn, lfm_model, request=_shown(request))


def test_image_from_http_url_is_fetched_and_answered(
    lfm_model: ModelSpec, lfm_script: Script, lfm_settings: Settings, image_server: ImageServer,
    lfm_client: openai.OpenAI, lfm_model_name: str,
) -> None:
    """Source: OpenAI chat API, image_url with an http URL (sglang loads it: srt/utils load_image)."""
    if lfm_settings.base_url and not _is_loopback(lfm_settings.base_url):
        pytest.skip("the local image server is only reachable from a server on this machine")
    turn = _image_turns(lfm_script, lfm_model)[0]
    names = [f"{turn.id}-{i}.png" for i in range(len(turn.images))]
    urls = [image_server.add(name, spec.render()) for name, spec in zip(names, turn.images, strict=True)]
    request = turn.request(lfm_model_name, messages=with_image_urls(turn.messages, urls))
    choice = checks.only_choice(_ask(lfm_client, request), request=request)
    if not lfm_settings.replay_dir:  # a replayed answer fetches nothing: the recorded run checked the GETs
        checks.check(all(image_server.hits(name) >= 1 for name in names), "the server did not fetch the image URLs",
                     request=request, expected="at least one GET per image",
                     got={name: image_server.hits(name) for name in names})
    _check_answer(choice.message.content, choice.finish_reason, turn, lfm_model, request=request)


def _is_loopback(url: str) -> bool:
    host = urllib.parse.urlsplit(url).hostname or ""
    if host == "localhost":
        return True
    with contextlib.suppress(ValueError):
        return ipaddress.ip_address(host).is_loopback
    return False


@pytest.mark.lfm_live
def test_engine_image_data_is_answered(
    lfm_model: ModelSpec, lfm_script: Script, lfm_engine: SglangEngine, budget: ImageTokenBudget,
) -> None:
    """Source: sglang Engine.generate(prompt=..., image_data=[...]) (srt/entrypoints/engine.py)."""
    from transformers import AutoTokenizer

    turn = _image_turns(lfm_script, lfm_model)[0]
    tokenizer = AutoTokenizer.from_pretrained(lfm_model.tokenizer_path())
    prompt = str(tokenizer.apply_chat_template(template_messages(turn.messages), tokenize=False,
                                               add_generation_prompt=True))
    images = [spec.render() for spec in turn.images]
    sampling = {"temperature": 0, "max_new_tokens": turn.max_tokens}
    request = {"prompt": prompt, "image_data": [f"<{w}x{h} PNG data URI>" for w, h in _image_sizes(images)],
               "sampling_params": sampling}
    out = lfm_engine.generate(prompt=prompt, image_data=[data_uri(image) for image in images], sampling_params=sampling)
    finish = out["meta_info"]["finish_reason"]
    finish_type = finish.get("type") if isinstance(finish, Mapping) else finish
    _check_answer(out["text"], finish_type, turn, lfm_model, request=request)
    placeholders = len(tokenizer(prompt, add_special_tokens=False)["input_ids"])
    expected = placeholders - len(images) + sum(budget.prompt_tokens(w, h) for w, h in _image_sizes(images))
    checks.check(out["meta_info"]["prompt_tokens"] == expected, "prompt_tokens of the Engine request",
                 request=request, expected=expected, got=out["meta_info"])


# ---------------------------------------------------------------- counting


@pytest.mark.parametrize("size", SIZES, ids=[f"{w}x{h}" for w, h in SIZES])
def test_image_of_size_is_served(
    size: tuple[int, int], lfm_client: openai.OpenAI, lfm_model_name: str,
) -> None:
    """Source: LFM2-VL model card (images of any size are resized or tiled, never refused); no 5xx."""
    request = {"model": lfm_model_name, "messages": [user_message(QUESTION, data_uri(blocks(*size, seed=1)))],
               "temperature": 0, "max_tokens": 16}
    response = _ask(lfm_client, request)
    choice = checks.only_choice(response, request=_shown(request))
    checks.assert_finish_reason(choice, ("stop", "length"), request=_shown(request))
    checks.assert_usage_adds_up(response.usage, request=_shown(request))


@pytest.mark.parametrize("size", SIZES, ids=[f"{w}x{h}" for w, h in SIZES])
def test_image_prompt_tokens_follow_processor_budget(
    size: tuple[int, int], request: pytest.FixtureRequest, lfm_model: ModelSpec, budget: ImageTokenBudget,
    lfm_client: openai.OpenAI, lfm_model_name: str, lfm_sglang_version: str,
) -> None:
    """Source: transformers Lfm2VlImageProcessor/Lfm2VlProcessor (<= 256 tokens per 512-px tile, <= 10 tiles +
    thumbnail), as sglang's Lfm2VlImageProcessor applies it (srt/multimodal/processors/lfm2_vl.py)."""
    messages = [user_message(QUESTION, data_uri(blocks(*size, seed=1)))]
    chat = {"model": lfm_model_name, "messages": messages, "temperature": 0, "max_tokens": 1}
    expected = _expected_prompt_tokens(lfm_model, messages, [size], budget, lfm_sglang_version)
    got = _ask(lfm_client, chat).usage.prompt_tokens
    note(request, notes.PROMPT_TOKENS, got)
    layout = budget.layout(*size)
    checks.check(got == expected, f"prompt_tokens for a {size[0]}x{size[1]} image ({layout.rows}x{layout.cols} "
                 f"tiles, resized {layout.resized[0]}x{layout.resized[1]}, {budget.prompt_tokens(*size)} image "
                 "tokens with markers)", request=_shown(chat), expected=expected, got=got)


def test_several_images_in_one_message_are_all_counted(
    lfm_model: ModelSpec, budget: ImageTokenBudget, lfm_client: openai.OpenAI, lfm_model_name: str,
    lfm_sglang_version: str,
) -> None:
    """Source: OpenAI chat API (several image_url parts in one message); LFM2-VL processor budget per image."""
    images = [blocks(64, 64, seed=2), blocks(512, 512, seed=3), blocks(1024, 977, seed=4)]
    messages = [user_message("Describe the images.", *(data_uri(image) for image in images))]
    request = {"model": lfm_model_name, "messages": messages, "temperature": 0, "max_tokens": 16}
    response = _ask(lfm_client, request)
    checks.assert_finish_reason(checks.only_choice(response, request=_shown(request)), ("stop", "length"),
                                request=_shown(request))
    expected = _expected_prompt_tokens(lfm_model, messages, _image_sizes(images), budget, lfm_sglang_version)
    checks.check(response.usage.prompt_tokens == expected, "prompt_tokens of three images in one message",
                 request=_shown(request), expected=expected, got=response.usage)


def test_image_in_earlier_turn_stays_in_context(
    lfm_model: ModelSpec, lfm_script: Script, budget: ImageTokenBudget, lfm_client: openai.OpenAI,
    lfm_model_name: str, lfm_sglang_version: str,
) -> None:
    """Source: OpenAI chat API multi-turn messages; LFM2 chat template (every turn rendered, images included)."""
    turn = _image_turns(lfm_script, lfm_model)[0]
    messages = [*turn.openai_messages(), {"role": "assistant", "content": turn.content or "An image."},
                {"role": "user", "content": "Say it again in one word."}]
    request = {"model": lfm_model_name, "messages": messages, "temperature": 0, "max_tokens": 16}
    response = _ask(lfm_client, request)
    checks.assert_finish_reason(checks.only_choice(response, request=_shown(request)), ("stop", "length"),
                                request=_shown(request))
    sizes = [(spec.width, spec.height) for spec in turn.images]
    expected = _expected_prompt_tokens(lfm_model, messages, sizes, budget, lfm_sglang_version)
    checks.check(response.usage.prompt_tokens == expected, "prompt_tokens of a conversation with an image in its "
                 "first turn", request=_shown(request), expected=expected, got=response.usage)


# ---------------------------------------------------------------- cache and concurrency


def test_same_image_twice_gives_same_answer(
    lfm_model: ModelSpec, lfm_script: Script, lfm_client: openai.OpenAI, lfm_model_name: str,
) -> None:
    """Source: sglang multimodal cache (an image's embedding is reused by hash); greedy decoding is deterministic."""
    turn = _image_turns(lfm_script, lfm_model)[0]
    request = turn.request(lfm_model_name)
    first, second = (checks.only_choice(_ask(lfm_client, request), request=_shown(request)) for _ in range(2))
    checks.check(second.message.content == first.message.content, "the same image asked twice",
                 request=_shown(request), expected=first.message.content, got=second.message.content)
    _check_answer(first.message.content, first.finish_reason, turn, lfm_model, request=_shown(request))


def test_image_cache_keeps_images_apart(
    lfm_model: ModelSpec, lfm_script: Script, lfm_client: openai.OpenAI, lfm_model_name: str,
) -> None:
    """Source: sglang multimodal cache keyed by image hash: image A, then B, then A again answers A, B, A."""
    turn_a, turn_b = _same_question_pair(_image_turns(lfm_script, lfm_model))
    request_a, request_b = turn_a.request(lfm_model_name), turn_b.request(lfm_model_name)
    answers = [_ask(lfm_client, r).choices[0].message.content for r in (request_a, request_b, request_a)]
    checks.check(answers[1] != answers[0], f"{turn_b.id} after {turn_a.id} (same question, other image)",
                 request=_shown(request_b), expected=f"an answer other than {answers[0]!r}", got=answers[1])
    checks.check(answers[2] == answers[0], f"{turn_a.id} again after {turn_b.id}", request=_shown(request_a),
                 expected=answers[0], got=answers[2])
    if lfm_model.micro:
        checks.assert_content_equal(answers[1], turn_b.content or "", request=_shown(request_b))


def test_concurrent_text_and_image_requests_match_sequential(
    request: pytest.FixtureRequest, lfm_model: ModelSpec, lfm_script: Script, lfm_client: openai.OpenAI,
    lfm_async_client: openai.AsyncOpenAI, lfm_model_name: str,
) -> None:
    """Source: sglang continuous batching must not mix requests up: 12 concurrent text and image requests get the
    prompt_tokens they get alone, and micro checkpoints the script's answers."""
    images = _image_turns(lfm_script, lfm_model)
    texts = lfm_script.of_kind(lfm_model, "answer") or images
    pools = (texts, images)  # alternate: text, image, text, image, ...
    turns = [pools[i % 2][i // 2 % len(pools[i % 2])] for i in range(CONCURRENT_REQUESTS)]
    requests = [t.request(lfm_model_name) for t in turns]
    alone = {t.id: _ask(lfm_client, r).usage.prompt_tokens for t, r in zip(turns, requests, strict=True)}

    async def together() -> list[Any]:
        return list(await asyncio.gather(*(lfm_async_client.chat.completions.create(**r) for r in requests)))

    responses = asyncio.run(together())
    note(request, notes.CONCURRENT_REQUESTS, len(responses))
    for turn, chat, response in zip(turns, requests, responses, strict=True):
        checks.check(response.usage.prompt_tokens == alone[turn.id], f"prompt_tokens of {turn.id} among "
                     f"{CONCURRENT_REQUESTS} concurrent requests", request=_shown(chat), expected=alone[turn.id],
                     got=response.usage)
        choice = checks.only_choice(response, request=_shown(chat))
        if lfm_model.micro:
            _check_answer(choice.message.content, choice.finish_reason, turn, lfm_model, request=_shown(chat))
        else:
            checks.assert_finish_reason(choice, ("stop", "length"), request=_shown(chat))


# ---------------------------------------------------------------- context limit


def _oversized_request(model_name: str, budget: ImageTokenBudget) -> dict[str, Any]:
    size = SIZES[-1]
    assert budget.prompt_tokens(*size) > SMALL_CONTEXT, "the test image must not fit the small context"
    return {"model": model_name, "messages": [user_message(QUESTION, data_uri(blocks(*size, seed=5)))],
            "temperature": 0, "max_tokens": 8}


@pytest.mark.lfm_launch(extra_args=("--context-length", str(SMALL_CONTEXT)))
def test_too_many_image_tokens_for_context_is_rejected_with_400(
    budget: ImageTokenBudget, lfm_client: openai.OpenAI, lfm_model_name: str,
) -> None:
    """Source: sglang TokenizerManager._validate_one_request ("The input (N tokens) is longer than the model's
    context length (M tokens)."), applied after the image is expanded; docs/facts.md (400 for a long text prompt)."""
    request = _oversized_request(lfm_model_name, budget)
    checks.expect_http_error(lambda: lfm_client.chat.completions.create(**request), 400, request=_shown(request),
                             mentions=f"context length ({SMALL_CONTEXT} tokens)")


@pytest.mark.lfm_launch(extra_args=("--context-length", str(SMALL_CONTEXT)))
def test_server_keeps_serving_after_rejecting_too_many_image_tokens(
    lfm_model: ModelSpec, lfm_script: Script, budget: ImageTokenBudget, lfm_live_server: HttpServer,
    lfm_client: openai.OpenAI, lfm_model_name: str,
) -> None:
    """Source: a rejected request is the client's error; the server stays up (sglang returns 400, not a crash)."""
    with contextlib.suppress(openai.APIStatusError):
        lfm_client.chat.completions.create(**_oversized_request(lfm_model_name, budget))
    lfm_live_server.check_alive()
    turn = _image_turns(lfm_script, lfm_model)[0]
    request = turn.request(lfm_model_name)
    choice = checks.only_choice(_ask(lfm_client, request), request=_shown(request))
    _check_answer(choice.message.content, choice.finish_reason, turn, lfm_model, request=_shown(request))
