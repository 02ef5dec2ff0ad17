"""The dtype suite's comparisons: transformers' logprobs at the positions sglang is compared, and where two runs' top-k
logprobs differ most."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path

import pytest

from pytest_lfm.measure import logprobs, routing
from pytest_lfm.measure.workload import load_tokenizer

pytest.importorskip("transformers")


@dataclass(frozen=True)
class _Model:
    path: str
    family: str = "dense"

    def model_path(self) -> str:
        return self.path

    def tokenizer_path(self) -> str:
        return self.path


@pytest.fixture(scope="module")
def untrained_dense(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[int]]:
    """A micro-dense architecture with its seeded, untrained weights (seconds on a CPU) and one prompt's ids."""
    from pytest_lfm.micro import builder, train

    directory = tmp_path_factory.mktemp("untrained-dense")
    tok, _, examples = builder.build_tokenizer_into("dense", directory)
    model = train.make_model("dense", tok.get_vocab_size())
    model.config.architectures = [type(model).__name__]
    train.save_dir_files(directory, model)
    return directory, tok.encode(examples[0].prompt, add_special_tokens=False).ids


def _logprobs(ids: list[int], output_ids: list[int]) -> logprobs.Logprobs:
    return logprobs.Logprobs("p", ids, [[0.0] * 5 for _ in ids[1:]], output_ids, [[0.0] * 5 for _ in output_ids])


def _spans(first: logprobs.Logprobs, second: logprobs.Logprobs) -> list[logprobs.Span]:
    return [(first.prompt, len(first.prompt_ids), logprobs.compared_decode_positions(first, second))]


def test_reference_covers_every_prompt_position_and_the_shared_decode_positions(
    untrained_dense: tuple[Path, list[int]],
) -> None:
    directory, ids = untrained_dense
    bf16, fp16 = _logprobs(ids, [5, 6, 7, 8]), _logprobs(ids, [5, 6, 9, 9])  # the dtypes part at the third token
    spans = _spans(bf16, fp16)
    assert logprobs.no_reference(_Model(str(directory))) is None
    tops = logprobs.reference_tops(_Model(str(directory)), [bf16], [spans[0][2]], ("bfloat16", "float16"))
    assert [len(rows) for rows in tops["bfloat16"]] == [len(ids) + 2]  # the prompt and the two shared generated tokens
    gap = logprobs.phase_differences(spans, tops["bfloat16"], tops["float16"])
    prefill, decode = gap
    assert 0 <= prefill.position < len(ids) - 1 and 0 <= decode.position < 3  # compared: up to the first difference
    assert all(math.isfinite(d.max_abs) and 0 < d.max_abs < 1 for d in gap), gap  # rounding, not a broken model
    assert len(prefill.first) == len(prefill.second) == logprobs.TOP_LOGPROBS


def test_phases_find_the_largest_difference_where_the_runs_share_their_context() -> None:
    ids = [1, 2, 3, 4]
    first, second = _logprobs(ids, [5, 6, 7, 8]), _logprobs(ids, [5, 6, 9, 9])
    second.prompt_top[1][0] = -0.25  # prompt position 1
    second.output_top[2] = [-0.5] * 5  # the first differing token: still compared
    second.output_top[3] = [-9.0] * 5  # after it the contexts differ: not compared
    prefill, decode = logprobs.phase_differences(_spans(first, second), [logprobs.position_rows(first)],
                                                 [logprobs.position_rows(second)])
    assert (prefill.max_abs, prefill.position) == (0.25, 1)
    assert (decode.max_abs, decode.position) == (0.5, 2)


def test_prompt_shifts_tell_an_off_by_one_from_numbers() -> None:
    ids = list(range(8))
    ours = _logprobs(ids, [5])
    for i, row in enumerate(ours.prompt_top):
        row[:] = [-float(i)] * 5  # a distinct row per position
    spans = _spans(ours, ours)
    reference = [[[-float(i - 1)] * 5 for i in range(len(ids))]]  # the same rows, one position later
    shifts = logprobs.prompt_shifts(spans, [logprobs.position_rows(ours)], reference)
    assert shifts[1] == 0.0 and shifts[0] == 1.0 and shifts[-1] == 2.0


def test_no_reference_for_a_hub_id_or_a_checkpoint_too_large_for_the_cpu(
    untrained_dense: tuple[Path, list[int]], monkeypatch: pytest.MonkeyPatch,
) -> None:
    directory, _ = untrained_dense
    assert "not a local checkpoint directory" in str(logprobs.no_reference(_Model("LiquidAI/LFM2-350M")))
    monkeypatch.setattr(logprobs, "REFERENCE_MAX_BYTES", 1024)
    assert "for a reference run beside the server" in str(logprobs.no_reference(_Model(str(directory))))


def test_the_known_id_clip_is_the_last_id_reported_as_0_and_nothing_else() -> None:
    tokens = [1, 6, 928, 698]
    clipped = logprobs.id_mismatches(tokens, [1, 6, 0, 698])
    assert clipped == [(2, 928, 0)] and logprobs.only_the_known_clip(clipped, vocab=929)
    assert not logprobs.only_the_known_clip(logprobs.id_mismatches(tokens, [1, 6, 5, 698]), vocab=929)
    assert not logprobs.only_the_known_clip(clipped, vocab=1000)  # 928 is not that vocabulary's last id
    assert logprobs.id_mismatches(tokens, [1, 6, 928]) == [(3, 698, -1)]  # a missing position counts
    assert logprobs.id_mismatches(tokens, tokens) == []


def test_reference_runs_on_the_prompt_tokens_where_sglang_reported_the_last_id_as_0(
    untrained_dense: tuple[Path, list[int]],
) -> None:
    """sglang 0.5.17 reports the vocabulary's last id as 0 in input_token_logprobs; the reference must see the real
    token (micro-vl's chat template holds it), and any other disagreement leaves sglang's ids as they are."""
    directory, ids = untrained_dense
    model = _Model(str(directory))
    last = logprobs.vocab_size(model) - 1
    tokenizer = load_tokenizer(str(directory))
    prompt = tokenizer.decode([*ids, last, *ids[1:3]])
    tokens = logprobs.prompt_tokens(model, prompt)
    assert last in tokens
    reported = [0 if t == last else t for t in tokens]
    run = logprobs.Logprobs(prompt, reported, [[0.0] * 5 for _ in reported[1:]], [], [])
    assert logprobs.computed_ids(model, run) == tokens
    other = dataclasses.replace(run, prompt_ids=[t + 1 if t == tokens[1] else t for t in reported])
    assert logprobs.computed_ids(model, other) == other.prompt_ids


def _ranked(rows: list[list[tuple[int, float]]], n: int) -> logprobs.Logprobs:
    """A run of an ``n``-token prompt whose positions hold ``rows`` of (token id, logprob), best first: the first
    ``n - 1`` are prompt positions, the rest generated ones."""
    ids = [[t for t, _ in row] for row in rows]
    values = [[v for _, v in row] for row in rows]
    return logprobs.Logprobs("p", list(range(n)), values[:n - 1], [row[0] for row in ids[n - 1:]], values[n - 1:],
                             ids[:n - 1], ids[n - 1:])


BF16 = [(1, -0.1), (2, -2.5), (3, -2.6), (4, -4.0), (5, -6.0)]


@pytest.mark.parametrize(("fp16", "what"), [
    (BF16, None),
    ([(1, -0.12), (3, -2.55), (2, -2.58), (4, -4.1), (5, -6.05)], None),  # 2 and 3 trade places: gaps 0.1 + 0.03
    ([(1, -0.1), (2, -2.5), (3, -2.6), (4, -4.0), (6, -6.1)], None),  # 5 and 6 at the edge, within d of it
    ([(1, -0.1), (3, -2.0), (2, -2.5), (4, -4.0), (5, -6.0)], "swap places"),  # gaps 0.1 + 0.5 > 2d
    ([(1, -0.1), (2, -2.5), (3, -2.6), (4, -4.0), (6, -5.0)], "only in"),  # 6 enters 1.0 above bf16's 5th
    ([(2, -0.2), (1, -0.3), (3, -2.6), (4, -4.0), (5, -6.0)], "swap places"),  # another greedy token, no tie
])
def test_rank_changes_allow_near_ties_only(fp16: list[tuple[int, float]], what: str | None) -> None:
    """d = 0.2: a token's logprob may move by 0.2 between the runs."""
    first, second = _ranked([BF16, BF16], 2), _ranked([BF16, fp16], 2)
    spans: list[logprobs.Span] = [("p", 2, 1)]
    changes = logprobs.rank_changes(spans, [first], [second], (0.2, 0.2))
    if what is None:
        assert changes == []
    else:
        assert [(c.phase, c.position) for c in changes] == [("decode", 0)] and what in changes[0].what
        assert changes[0].first == BF16 and changes[0].second == fp16


def test_rank_changes_cover_prompt_and_generated_positions_with_their_own_bound() -> None:
    tie = [(1, -0.60), (2, -0.75), (3, -2.6), (4, -4.0), (5, -6.0)]
    swapped = [(2, -0.65), (1, -0.70), (3, -2.6), (4, -4.0), (5, -6.0)]  # gaps 0.15 + 0.05: a tie for d >= 0.1
    first, second = _ranked([tie, tie, tie], 3), _ranked([tie, swapped, swapped], 3)
    spans: list[logprobs.Span] = [("p", 3, 1)]
    loose_prefill = logprobs.rank_changes(spans, [first], [second], (0.5, 0.05))
    assert [(c.phase, c.position) for c in loose_prefill] == [("decode", 0)]
    assert logprobs.rank_changes(spans, [first], [second], (0.05, 0.5)) == [
        logprobs.RankChange("prefill", "p", 1, loose_prefill[0].what, tie, swapped)]


# ---------------------------------------------------------------- MoE routing near ties


def _tiny_moe(layer_types: list[str]) -> object:
    """A randomly initialised Lfm2Moe of four layers, the last two MoE (8 experts, top-2), in float32."""
    import torch
    from transformers import Lfm2MoeConfig, Lfm2MoeForCausalLM

    torch.manual_seed(0)
    config = Lfm2MoeConfig(vocab_size=64, hidden_size=32, intermediate_size=64, moe_intermediate_size=16,
                           num_hidden_layers=4, num_attention_heads=2, num_key_value_heads=1, num_dense_layers=2,
                           num_experts=8, num_experts_per_tok=2, layer_types=layer_types, conv_L_cache=3,
                           use_expert_bias=True, max_position_embeddings=64)
    model = Lfm2MoeForCausalLM(config).eval()
    for _, gate, _ in routing.moe_gates(model):
        torch.nn.init.normal_(gate.weight, std=0.5)  # routers start at zero: every expert tied
    return model


IDS = [1, 5, 9, 13, 17, 21, 25, 29]


def test_near_ties_find_every_moe_layer_and_reach_as_far_as_the_convolutions_after_it() -> None:
    model = _tiny_moe(["full_attention", "conv", "full_attention", "conv"])
    assert [layer for layer, _, bias in routing.moe_gates(model) if bias is not None] == [2, 3]
    assert routing.near_ties(model, IDS, 0.0) == []  # exact scores: no two experts tie
    ties = routing.near_ties(model, IDS, 1.0)  # rounding as large as the values: every routing may flip
    assert sorted({(t.layer, t.position) for t in ties}) == [(layer, p) for layer in (2, 3) for p in range(len(IDS))]
    assert {t.layer: t.reach for t in ties} == {2: 2, 3: 0}  # one conv after layer 2, looking back 2 tokens
    assert all(0 <= t.margin <= t.bound and t.chosen != t.unchosen for t in ties)
    late = next(t for t in ties if t.layer == 2 and t.position == len(IDS) - 1)
    assert routing.near_tie_rows([late], len(IDS)) == {len(IDS) - 1}  # clipped to the sequence


def test_a_margin_within_the_rounding_bound_is_a_near_tie_and_one_beyond_it_is_not() -> None:
    import torch

    model = _tiny_moe(["conv", "full_attention", "conv", "full_attention"])
    layer, gate, bias = routing.moe_gates(model)[0]
    position, u = 3, 2 * routing.ROUNDOFF["float16"]
    inputs: list[torch.Tensor] = []
    hook = gate.register_forward_pre_hook(lambda _m, args: inputs.append(args[0]))
    with torch.no_grad():
        model(input_ids=torch.tensor([IDS]))
    hook.remove()
    x = inputs[0].reshape(len(IDS), -1)[position]
    scores = torch.sigmoid(gate.weight @ x) + bias
    bound = u * ((gate.weight.abs() @ x.abs()) + (gate.weight @ x).abs()) / 4
    ranked = scores.argsort(descending=True).tolist()
    chosen, unchosen = ranked[1], ranked[2]  # the second chosen and the best unchosen expert
    for margin, tied in ((0.5, True), (2.0, False)):  # in units of the two experts' bound
        with torch.no_grad():
            bias[unchosen] += scores[chosen] - scores[unchosen] - margin * (bound[chosen] + bound[unchosen])
        ties = [t for t in routing.near_ties(model, IDS, u) if (t.layer, t.position) == (layer, position)]
        assert bool(ties) == tied, (margin, ties)
        if tied:
            assert (ties[0].chosen, ties[0].unchosen) == (chosen, unchosen)
            assert ties[0].margin == pytest.approx(0.5 * ties[0].bound, rel=1e-3)
        with torch.no_grad():
            scores = torch.sigmoid(gate.weight @ x) + bias


def test_left_out_positions_are_not_compared() -> None:
    ids = [1, 2, 3, 4]
    first, second = _logprobs(ids, [5, 6]), _logprobs(ids, [5, 6])
    second.prompt_top[1][0] = -0.25  # prompt position 1
    second.prompt_top[2][0] = -0.125  # prompt position 2
    second.output_top[0] = [-0.5] * 5  # model position 3, the first generated
    spans, rows = _spans(first, second), ([logprobs.position_rows(first)], [logprobs.position_rows(second)])
    prefill, decode = logprobs.phase_differences(spans, *rows, [frozenset({1, 3})])
    assert (prefill.max_abs, prefill.position, decode.max_abs) == (0.125, 2, 0.0)
    assert logprobs.phase_differences(spans, *rows)[0].max_abs == 0.25


def test_a_model_without_moe_layers_has_no_near_ties_and_is_not_loaded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(routing, "load_reference", lambda *_: pytest.fail("a dense model needs no routing run"))
    monkeypatch.setattr(routing, "reference_sequences", lambda *_: [[1, 2, 3]])
    run = _logprobs([1, 2, 3], [4])
    found = routing.reference_near_ties(_Model("no-checkpoint"), [run], [1], ("float16", "bfloat16"))
    assert found == ([[]], [frozenset()])
