"""Sampling at temperature > 0: seeds, ``n`` choices, the sampling filters, the repetition penalty and each model's
recommended sampling (``lfm_model.sampling``, from its model card).

What sglang 0.5.17 does, read in its source: a request's ``seed`` becomes ``sampling_seed`` (entrypoints/openai/
protocol.py:1032), which the sampler uses only when the server runs with ``--enable-deterministic-inference``
(sampling/sampling_batch_info.py:118-133; that flag also switches to the pytorch sampling backend,
arg_groups/overrides.py:1934-1940): on a default launch the same seed does not give the same text. ``top_k`` 1,
a ``top_p`` below the top token's probability and ``min_p`` 1 each leave only the most likely token
(sampling/sampling_params.py:145-162), so each sampled token must be its position's most likely; the repetition
penalty divides the positive logits of tokens already generated (sampling/penaltylib/repetition_penalty.py) and
multiplies them far below 1, which must change a greedy answer. The open prompt has no scripted answer: a micro
checkpoint's next tokens are spread there as a real model's are.
"""

from __future__ import annotations

from typing import Any

import openai
import pytest

from pytest_lfm import checks
from pytest_lfm.matrix import DETERMINISTIC_INFERENCE, DETERMINISTIC_VARIANT, LaunchConfig, ModelSpec
from pytest_lfm.micro.script import Script, Turn

pytestmark = pytest.mark.lfm_requires("chat")
OPEN = [{"role": "user", "content": "Tell me a short story."}]
SAMPLED = {"temperature": 1.0, "max_tokens": 32}
SEEDS = (11, 12, 13, 14)
TIE = 1e-4  # nats: a token's logprob and its position's top logprob, both float32 from one log-softmax
FILTERS: dict[str, dict[str, Any]] = {"top_k-1": {"top_k": 1}, "top_p-0.01": {"top_p": 0.01},
                                      "min_p-1": {"min_p": 1.0}}
SEED_IGNORED = ("sglang 0.5.17 uses a request's seed only with --enable-deterministic-inference "
                "(sampling/sampling_batch_info.py:118-133): this launch has none")


def _text(client: openai.OpenAI, model_name: str, messages: list[dict[str, Any]], **params: Any) -> str:
    request = {"model": model_name, "messages": messages, **params}
    return checks.only_choice(_create(client, request), request=request).message.content or ""


def _create(client: openai.OpenAI, request: dict[str, Any]) -> Any:
    """A chat completion; sglang-only parameters (top_k, min_p, repetition_penalty) go in extra_body."""
    extra = {k: request[k] for k in ("top_k", "min_p", "repetition_penalty") if k in request}
    sent = {k: v for k, v in request.items() if k not in extra}
    return client.chat.completions.create(**sent, **({"extra_body": extra} if extra else {}))


def _greedy(client: openai.OpenAI, model_name: str) -> str:
    """The open prompt's temperature-0 text, asked twice and the second kept: the requests compared with it find the
    prompt in the prefix cache too, so all of them compute its last token the same way (a full prefill and a
    cached one may round differently, and the open prompt's top tokens can be close)."""
    _text(client, model_name, OPEN, temperature=0.0, max_tokens=SAMPLED["max_tokens"])
    return _text(client, model_name, OPEN, temperature=0.0, max_tokens=SAMPLED["max_tokens"])


def _deterministic(launch: LaunchConfig) -> bool:
    return DETERMINISTIC_INFERENCE in launch.server_args()


@pytest.mark.lfm_launch()
@pytest.mark.lfm_launch(**DETERMINISTIC_VARIANT)
def test_same_seed_gives_the_same_text(
    request: pytest.FixtureRequest, lfm_launch: LaunchConfig, lfm_client: openai.OpenAI, lfm_model_name: str,
) -> None:
    """OpenAI chat reference (seed: "repeated requests with the same seed and parameters should return the same
    result"): two requests with one seed at temperature 1 give one text."""
    if not _deterministic(lfm_launch):
        request.applymarker(pytest.mark.xfail(strict=False, reason=SEED_IGNORED))
    _greedy(lfm_client, lfm_model_name)  # the prompt cached first: both seeded requests then take the same path
    first, second = (_text(lfm_client, lfm_model_name, OPEN, seed=SEEDS[0], **SAMPLED) for _ in range(2))
    checks.check(first == second, "two answers with one seed", request={"messages": OPEN, "seed": SEEDS[0], **SAMPLED},
                 expected=first, got=second)


@pytest.mark.lfm_launch()
@pytest.mark.lfm_launch(**DETERMINISTIC_VARIANT)
def test_different_seeds_give_different_texts(lfm_client: openai.OpenAI, lfm_model_name: str) -> None:
    """Sampling at temperature 1 over an open prompt: four seeds give at least two texts."""
    texts = [_text(lfm_client, lfm_model_name, OPEN, seed=seed, **SAMPLED) for seed in SEEDS]
    checks.check(len(set(texts)) > 1, "texts of four seeds", request={"messages": OPEN, "seeds": SEEDS, **SAMPLED},
                 expected="at least two different texts", got=texts)


def test_n_sampled_choices_are_distinct(lfm_client: openai.OpenAI, lfm_model_name: str) -> None:
    """OpenAI chat reference (n): n = 4 at temperature 1 gives four choices, indexes 0-3, not all one text."""
    request = {"model": lfm_model_name, "messages": OPEN, "n": 4, **SAMPLED}
    response = lfm_client.chat.completions.create(**request)
    indexes = sorted(c.index for c in response.choices)
    checks.check(indexes == [0, 1, 2, 3], "choice indexes", request=request, expected=[0, 1, 2, 3], got=indexes)
    texts = [c.message.content or "" for c in response.choices]
    checks.check(len(set(texts)) > 1, "texts of four sampled choices", request=request,
                 expected="at least two different texts", got=texts)


def _sampled_tokens(client: openai.OpenAI, model_name: str, **params: Any) -> tuple[str, list[Any]]:
    """The open prompt's answer and, per generated token, its logprob and the most likely token's."""
    request = {"model": model_name, "messages": OPEN, "logprobs": True, "top_logprobs": 1, **params}
    choice = checks.only_choice(_create(client, request), request=request)
    tokens = list(choice.logprobs.content or []) if choice.logprobs else []
    text = choice.message.content or ""
    checks.check(bool(tokens) and all(t.top_logprobs for t in tokens), "a logprob and a top logprob per token",
                 request=request, expected="one entry per generated token, each with its most likely token",
                 got=choice.logprobs)
    return text, tokens


def _below_the_top(tokens: list[Any]) -> list[tuple[int, str, float]]:
    """The positions whose sampled token is less likely than the most likely one: (position, token, logprob gap).
    Both logprobs come from the logits the sampler drew from, so a token the filter leaves alone has the top
    logprob exactly (a tie included); TIE absorbs only the float32 logprob's print."""
    return [(i, t.token, t.top_logprobs[0].logprob - t.logprob) for i, t in enumerate(tokens)
            if t.logprob < t.top_logprobs[0].logprob - TIE]


@pytest.mark.parametrize("name", sorted(FILTERS))
def test_a_filter_that_leaves_one_token_gives_the_greedy_text(
    name: str, lfm_client: openai.OpenAI, lfm_model_name: str,
) -> None:
    """sglang 0.5.17 sampling_params.py:145-162: top_k 1, top_p 0.01 and min_p 1 leave only the most likely token,
    so at temperature 1 every sampled token is the most likely of its position (the logprobs of the forward pass the
    sampler drew from), where without the filter some token of some seed is not (else the check would show nothing).
    Judged token by token, not against the temperature-0 text: two requests batched differently can round the
    logits differently, and the open prompt's top tokens can be that close (docs/gpu-runs/2026-12-03-h200-a)."""
    unfiltered = {seed: _sampled_tokens(lfm_client, lfm_model_name, seed=seed, **SAMPLED) for seed in SEEDS}
    checks.check(any(_below_the_top(tokens) for _, tokens in unfiltered.values()), "temperature 1 without a filter",
                 request={"messages": OPEN, "seeds": SEEDS, **SAMPLED},
                 expected="some sampled token less likely than its position's most likely",
                 got={seed: text for seed, (text, _) in unfiltered.items()})
    for seed in SEEDS[:2]:
        params = {**SAMPLED, **FILTERS[name], "seed": seed}
        text, tokens = _sampled_tokens(lfm_client, lfm_model_name, **params)
        below = _below_the_top(tokens)
        checks.check(not below, f"temperature 1 with {name}", request={"messages": OPEN, **params},
                     expected="every sampled token the most likely of its position",
                     got={"text": text, "less likely tokens (position, token, gap)": below})


def test_repetition_penalty_changes_the_greedy_answer(
    lfm_script: Script, lfm_model: ModelSpec, lfm_client: openai.OpenAI, lfm_model_name: str,
) -> None:
    """sglang 0.5.17 penaltylib/repetition_penalty.py (a generated token's positive logit divided by the penalty, a
    negative one multiplied; allowed in (0, 2], sampling_params.py:173): at temperature 0 a penalty of 1 leaves the
    answer as it is, 0.01 multiplies the logits of the tokens already said 100-fold and so changes it (the answer
    repeats its first tokens), 2 is served."""
    turn = checks.scripted_turn(lfm_script, lfm_model, checks.scripted("answer")[0])
    messages = list(turn.messages)

    def answer(**params: Any) -> str:
        return _text(lfm_client, lfm_model_name, messages, temperature=0.0, max_tokens=turn.max_tokens, **params)

    plain = answer()
    shown = {"messages": messages, "temperature": 0.0, "max_tokens": turn.max_tokens}
    neutral = answer(repetition_penalty=1.0)
    checks.check(neutral == plain, "the answer with repetition_penalty 1", request=shown, expected=plain, got=neutral)
    rewarded = answer(repetition_penalty=0.01)
    checks.check(rewarded != plain, "the answer with repetition_penalty 0.01", request=shown,
                 expected=f"an answer other than {plain!r}", got=rewarded)
    penalized = answer(repetition_penalty=2.0)
    checks.check(bool(penalized.strip()), "the answer with repetition_penalty 2", request=shown,
                 expected="a non-empty answer", got=penalized)


@pytest.mark.parametrize("turn", checks.scripted("answer"), indirect=True)
def test_recommended_sampling_answers(turn: Turn, lfm_model: ModelSpec, lfm_client: openai.OpenAI,
                                      lfm_model_name: str) -> None:
    """The model card's recommended sampling (the matrix entry's ``sampling``) on the scripted questions: a finished
    answer without control tokens; a micro checkpoint's is the script's (its recommended top_p 0.1 leaves the top
    token wherever the script's answer is more than 10% likely)."""
    if not lfm_model.sampling:
        pytest.skip(f"the matrix entry of {lfm_model.id} has no recommended sampling")
    request = turn.request(lfm_model_name, **lfm_model.sampling, seed=SEEDS[0])
    choice = checks.only_choice(_create(lfm_client, request), request=request)
    checks.assert_finish_reason(choice, "stop", request=request)
    checks.assert_no_special_tokens(choice.message.content, request=request)
    if checks.exact(lfm_model):
        checks.assert_content_equal(choice.message.content, turn.content or "", request=request,
                                    what=f"answer to {turn.id} with the recommended sampling")
    else:
        checks.check(bool((choice.message.content or "").strip()), "answer with the recommended sampling",
                     request=request, expected="a non-empty answer", got=choice.message)
