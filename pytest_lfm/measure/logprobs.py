"""Top-k logprobs of a served model from ``/generate``, where two runs of them differ most, and transformers'
logprobs on the same tokens as the reference (sglang's HF-parity check: 5e-2 at prompt positions, 6e-2 at generated
positions, stated for float16)."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import httpx
import pytest

from pytest_lfm import checks
from pytest_lfm.matrix import ModelSpec
from pytest_lfm.measure.workload import load_tokenizer
from pytest_lfm.micro.render import template_messages
from pytest_lfm.micro.script import Script, Turn

PREFILL_TOLERANCE = 5e-2
DECODE_TOLERANCE = 6e-2
TOP_LOGPROBS = 5
DECODE_TOKENS = 8
PROMPTS = 3
KNOWN_ID_CLIP = ("managers/scheduler_components/logprob_result_processor.py: `x if x < vocab_size - 1 else 0` "
                 "(a clip for image-token hashes, off by one)")
REFERENCE_MAX_BYTES = 4 << 30  # larger checkpoints are not loaded twice on the CPU for the reference gap


@dataclasses.dataclass(frozen=True)
class Logprobs:
    """One prompt's logprobs from ``/generate``: top-k values (best first) per prompt position and per generated
    token, the token ids of those top-k entries (in the same order), and the generated token ids."""

    prompt: str
    prompt_ids: list[int]
    prompt_top: list[list[float]]
    output_ids: list[int]
    output_top: list[list[float]]
    prompt_top_ids: list[list[int]] = dataclasses.field(default_factory=list)
    output_top_ids: list[list[int]] = dataclasses.field(default_factory=list)


@dataclasses.dataclass(frozen=True)
class Difference:
    """The largest |first - second| top-k logprob difference of two runs in one phase, and where it is."""

    max_abs: float
    prompt: str
    position: int
    first: list[float]
    second: list[float]


def answer_turns(script: Script, model: ModelSpec) -> list[Turn]:
    """The script's plain answer turns for ``model``; a skip when it has none."""
    turns = script.of_kind(model, "answer")
    if not turns:
        pytest.skip(f"the script has no plain answer turns for {model.id}")
    return turns


def chat_prompts(model: ModelSpec, script: Script) -> list[str]:
    """The first scripted answer turns rendered with the model's own chat template (what the server would render)."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model.tokenizer_path())
    return [str(tokenizer.apply_chat_template(template_messages(t.messages), tokenize=False,
                                              add_generation_prompt=True))
            for t in answer_turns(script, model)[:PROMPTS]]


def _top(entries: Sequence[Sequence[Any]] | None) -> list[tuple[float, int]]:
    """A position's top-k entries, sglang's ``(logprob, token id, text)``, as (logprob, id), best first."""
    return sorted(((float(e[0]), int(e[1])) for e in entries or ()), key=lambda entry: -entry[0])


def generate_logprobs(base_url: str, prompts: Sequence[str]) -> list[Logprobs]:
    """Greedy ``/generate`` for each prompt with the top-k logprobs of every prompt and output position."""
    results = []
    with httpx.Client(base_url=base_url, timeout=120) as http:
        for prompt in prompts:
            body = {"text": prompt, "sampling_params": {"temperature": 0, "max_new_tokens": DECODE_TOKENS},
                    "return_logprob": True, "logprob_start_len": 0, "top_logprobs_num": TOP_LOGPROBS}
            response = http.post("/generate", json=body)
            checks.check(response.status_code == 200, "/generate with logprobs", request=body, expected="HTTP 200",
                         got=f"{response.status_code}: {response.text}")
            meta = response.json()["meta_info"]
            prompt_top = [_top(row) for row in meta["input_top_logprobs"][1:]]
            output_top = [_top(row) for row in meta["output_top_logprobs"]]
            results.append(Logprobs(
                prompt=prompt,
                prompt_ids=[int(e[1]) for e in meta["input_token_logprobs"]],
                prompt_top=[[v for v, _ in row] for row in prompt_top],
                output_ids=[int(e[1]) for e in meta["output_token_logprobs"]],
                output_top=[[v for v, _ in row] for row in output_top],
                prompt_top_ids=[[i for _, i in row] for row in prompt_top],
                output_top_ids=[[i for _, i in row] for row in output_top],
            ))
    return results


def generate_request(prompt: str) -> Mapping[str, Any]:
    """The /generate request of ``prompt``, for failure messages."""
    return {"POST": "/generate", "text": prompt, "top_logprobs_num": TOP_LOGPROBS, "max_new_tokens": DECODE_TOKENS}


def _largest_difference(pairs: Sequence[tuple[str, int, list[float], list[float]]]) -> Difference:
    best = Difference(0.0, "", -1, [], [])
    for prompt, position, first, second in pairs:
        diffs = [abs(a - b) for a, b in zip(first, second, strict=False)]
        if len(first) != len(second):
            diffs.append(float("inf"))
        if diffs and max(diffs) > best.max_abs:
            best = Difference(max(diffs), prompt, position, first, second)
    return best


def compared_decode_positions(reference: Logprobs, other: Logprobs) -> int:
    """Generated positions with the same context in both runs: up to and including the first differing token."""
    for i, (a, b) in enumerate(zip(reference.output_ids, other.output_ids, strict=False)):
        if a != b:
            return i + 1
    return min(len(reference.output_ids), len(other.output_ids))


def position_rows(logprobs: Logprobs) -> list[list[float]]:
    """Top-k logprobs per model position: the prompt's positions 0 .. n-2, then the generated ones (position j
    predicts token j + 1, so output_top[i] is position n - 1 + i)."""
    return logprobs.prompt_top + logprobs.output_top


def position_ids(logprobs: Logprobs) -> list[list[int]]:
    """The token ids of ``position_rows``' entries, in the same order."""
    return logprobs.prompt_top_ids + logprobs.output_top_ids


Span = tuple[str, int, int]  # (prompt, prompt tokens n, generated positions compared k)


Excluded = Sequence[frozenset[int]]  # per span, model positions left out of a comparison (``routing.near_tie_rows``)


def _kept(excluded: Excluded | None, spans: Sequence[Span]) -> Excluded:
    return excluded if excluded is not None else [frozenset()] * len(spans)


def phase_differences(spans: Sequence[Span], a: Sequence[Sequence[list[float]]], b: Sequence[Sequence[list[float]]],
                      excluded: Excluded | None = None) -> tuple[Difference, Difference]:
    """The largest differences of two runs' top-k logprobs at the prompt positions and the compared generated
    positions (indexed from the first generated token), but the ``excluded`` model positions."""
    rows = list(zip(spans, a, b, _kept(excluded, spans), strict=True))
    prefill = _largest_difference([(p, i, x[i], y[i]) for (p, n, _), x, y, out in rows for i in range(n - 1)
                                   if i not in out])
    decode = _largest_difference([(p, i, x[n - 1 + i], y[n - 1 + i]) for (p, n, k), x, y, out in rows
                                  for i in range(k) if n - 1 + i not in out])
    return prefill, decode


def load_reference(path: str, family: str, dtype: str) -> Any:
    """The transformers model at ``path`` in ``dtype``, on the GPU when torch sees one (as sglang's HF-parity tests
    run it), else on the CPU; release it with ``release_reference``."""
    import torch
    import transformers

    device = "cuda" if torch.cuda.is_available() else "cpu"
    auto: Any = transformers.AutoModelForImageTextToText if family == "vl" else transformers.AutoModelForCausalLM
    return auto.from_pretrained(path, dtype=getattr(torch, dtype)).to(device).eval()


def release_reference(model: Any) -> None:
    import torch

    del model
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def _reference_top(path: str, family: str, dtype: str, sequences: Sequence[Sequence[int]]) -> list[list[list[float]]]:
    """transformers' top-k logprobs (best first) at every position of each token sequence, in ``dtype``."""
    import torch

    model = load_reference(path, family, dtype)
    device = next(model.parameters()).device
    out = []
    with torch.no_grad():
        for ids in sequences:
            logits = model(input_ids=torch.tensor([list(ids)], device=device)).logits[0].float()
            top = torch.log_softmax(logits, dim=-1).topk(TOP_LOGPROBS, dim=-1).values
            out.append(top.tolist())
    release_reference(model)
    return out


def no_reference(model: ModelSpec) -> str | None:
    """Why transformers cannot be the reference for ``model`` here, or None."""
    path = model.model_path()
    files = list(Path(path).glob("*.safetensors")) if Path(path).is_dir() else []
    if not files:
        return f"no reference: {path} is not a local checkpoint directory"
    if sum(f.stat().st_size for f in files) > REFERENCE_MAX_BYTES:
        return f"no reference: {path} is over {REFERENCE_MAX_BYTES >> 30} GiB for a reference run beside the server"
    return None


def prompt_tokens(model: ModelSpec, prompt: str) -> list[int]:
    """``prompt``'s token ids as sglang's tokenizer manager makes them (``tokenizer.encode(text)``)."""
    return [int(i) for i in load_tokenizer(model.tokenizer_path()).encode(prompt)]


def vocab_size(model: ModelSpec) -> int:
    """The vocabulary size sglang's model config reads (the text config's), else the tokenizer's length."""
    try:
        from transformers import AutoConfig

        config = AutoConfig.from_pretrained(model.model_path())
        return int((getattr(config, "text_config", None) or config).vocab_size)
    except (OSError, ValueError, AttributeError):
        return len(load_tokenizer(model.tokenizer_path()))


def id_mismatches(tokens: Sequence[int], reported: Sequence[int]) -> list[tuple[int, int, int]]:
    """(position, token, reported id) wherever they differ; a length difference counts from the shorter's end."""
    out = [(i, t, r) for i, (t, r) in enumerate(zip(tokens, reported, strict=False)) if t != r]
    longer = tokens if len(tokens) > len(reported) else reported
    out += [(i, tokens[i] if i < len(tokens) else -1, reported[i] if i < len(reported) else -1)
            for i in range(min(len(tokens), len(reported)), len(longer))]
    return out


def only_the_known_clip(mismatches: Sequence[tuple[int, int, int]], vocab: int) -> bool:
    return bool(mismatches) and all(token >= vocab - 1 and got == 0 for _, token, got in mismatches)


def computed_ids(model: ModelSpec, run: Logprobs) -> list[int]:
    """The ids sglang computed ``run``'s prompt logprobs on: its reported ids, repaired where the known clip turned
    the vocabulary's last id into 0 (the prompt's own tokens then)."""
    tokens = prompt_tokens(model, run.prompt)
    mismatches = id_mismatches(tokens, run.prompt_ids)
    return tokens if mismatches and only_the_known_clip(mismatches, vocab_size(model)) else run.prompt_ids


def reference_tops(model: ModelSpec, runs: Sequence[Logprobs], generated: Sequence[int], dtypes: Sequence[str]
                   ) -> dict[str, list[list[list[float]]]]:
    """transformers' top-k logprobs, per dtype, at every position of each run's prompt followed by the run's first
    ``generated[i] - 1`` output tokens (the contexts of its first ``generated[i]`` generated positions)."""
    sequences = reference_sequences(model, runs, generated)
    return {d: _reference_top(model.model_path(), model.family, d, sequences) for d in dtypes}


def reference_sequences(model: ModelSpec, runs: Sequence[Logprobs], generated: Sequence[int]) -> list[list[int]]:
    """What the reference runs on: each run's prompt followed by its first ``generated[i] - 1`` output tokens."""
    return [computed_ids(model, r) + r.output_ids[: max(k - 1, 0)] for r, k in zip(runs, generated, strict=True)]


def check_within(what: str, diffs: tuple[Difference, Difference], bounds: tuple[float, float], how: str) -> None:
    __tracebackhide__ = True
    for phase, diff, bound in zip(("prefill", "decode"), diffs, bounds, strict=True):
        checks.check(diff.max_abs < bound, f"{phase} top-{TOP_LOGPROBS} logprobs, {what}, at position "
                     f"{diff.position}", request=generate_request(diff.prompt),
                     expected=f"|difference| < {bound:.4f}: {how} (first: {diff.first})",
                     got=f"{diff.max_abs:.4f} (second: {diff.second})")


def difference_figures(diffs: tuple[Difference, Difference], bounds: tuple[float, float] | None) -> dict[str, Any]:
    return {"prefill": diffs[0].max_abs, "decode": diffs[1].max_abs, "bound": list(bounds) if bounds else None}


def prompt_shifts(spans: Sequence[Span], ours: Sequence[Sequence[list[float]]],
                  reference: Sequence[Sequence[list[float]]], excluded: Excluded | None = None) -> dict[int, float]:
    """The largest prompt-position difference with sglang's rows compared to the reference's ``shift`` positions
    later (-1, 0, +1), but at ``excluded`` positions: a diagnosis for a mismatch, numbers or an off-by-one."""
    out = {}
    for shift in (-1, 0, 1):
        pairs = [(p, i, x[i], y[i + shift])
                 for (p, n, _), x, y, left in zip(spans, ours, reference, _kept(excluded, spans), strict=True)
                 for i in range(max(0, -shift), n - 1 - max(0, shift)) if i not in left and i + shift not in left]
        out[shift] = _largest_difference(pairs).max_abs
    return out


@dataclasses.dataclass(frozen=True)
class RankChange:
    """Where two runs' top-k differ in which tokens they hold or in their order, beyond a near tie (``rank_changes``):
    the phase, prompt and position (indexed as ``phase_differences`` does), what changed, and both rows as
    ``(token id, logprob)``."""

    phase: str
    prompt: str
    position: int
    what: str
    first: list[tuple[int, float]]
    second: list[tuple[int, float]]


def _rank_change(first: dict[int, float], second: dict[int, float], delta: float) -> str | None:
    """Why the two top-k rows cannot be the same ranking moved by at most ``delta`` per token, or None.

    Each token's logprob moving by at most ``delta``: a token one row holds and the other does not lies within
    ``delta`` of the other row's k-th value (it is below that value there); two tokens in opposite order lead by
    gaps that add up to at most ``2 * delta``."""
    if len(first) != len(second):
        return f"{len(first)} vs {len(second)} entries"
    for row, other, side in ((first, second, "first"), (second, first, "second")):
        floor = min(other.values(), default=0.0)
        for token, value in row.items():
            if token not in other and value - floor > delta:
                return (f"token {token} ({value:.4f}) is only in the {side} run's top-{len(row)}, "
                        f"{value - floor:.4f} above the other's k-th value (> {delta:.4f})")
    common = [t for t in first if t in second]
    for i, x in enumerate(common):
        for y in common[i + 1:]:
            lead, back = first[x] - first[y], second[y] - second[x]
            if lead * back > 0 and abs(lead) + abs(back) > 2 * delta:
                return (f"tokens {x} and {y} swap places with gaps {abs(lead):.4f} + {abs(back):.4f} "
                        f"(> 2 x {delta:.4f})")
    return None


def rank_changes(spans: Sequence[Span], first: Sequence[Logprobs], second: Sequence[Logprobs],
                 bounds: tuple[float, float], excluded: Excluded | None = None) -> list[RankChange]:
    """Every compared position (prompt and generated, as ``phase_differences``, but the ``excluded`` ones) whose
    top-k tokens are not the same ranking within the phase's ``bounds`` per token: another token set or order than a
    near tie allows."""
    out = []
    for (prompt, n, k), a, b, left in zip(spans, first, second, _kept(excluded, spans), strict=True):
        rows_a, rows_b = position_rows(a), position_rows(b)
        ids_a, ids_b = position_ids(a), position_ids(b)
        places = [("prefill", i, i, bounds[0]) for i in range(n - 1)]
        places += [("decode", i, n - 1 + i, bounds[1]) for i in range(k)]
        for phase, position, row, delta in [p for p in places if p[2] not in left]:
            one = list(zip(ids_a[row], rows_a[row], strict=True))
            two = list(zip(ids_b[row], rows_b[row], strict=True))
            why = _rank_change(dict(one), dict(two), delta)
            if why is not None:
                out.append(RankChange(phase, prompt, position, why, one, two))
    return out

