"""Where an MoE model's expert routing is within rounding of a tie, so that two runs of it in float16 (or in float16
and bfloat16) may send a token to different experts: a property of low-precision MoE inference, not of a runtime.

The bound, fixed before any comparison it serves. An LFM2 MoE layer routes a token by the scores
s_e = sigmoid(z_e) + b_e, z_e = sum_i W_ei x_i, x the layer's normed input and b the expert bias (float32 in
transformers and sglang alike), and takes the k best. A run in a dtype of unit roundoff u holds x rounded to it,
|dx_i| <= u |x_i|, and rounds z once more, so its z_e is within u (sum_i |W_ei x_i| + |z_e|) of the exact one
(float32 accumulation; its own error, 2^-24 per term, is left out). Two runs of roundoffs u_a and u_b differ by up to
(u_a + u_b) times that, and sigmoid's slope is at most 1/4: their scores differ by at most
D_e = (u_a + u_b) (sum_i |W_ei x_i| + |z_e|) / 4. A chosen expert e and an unchosen f can trade places only where
s_e - s_f <= D_e + D_f; there the layer's output may differ by a whole expert's share between the runs, far beyond a
logprob tolerance. Measured on the exact routing (the model in float32), any such pair at any MoE layer makes the
position a near tie. What changed at a position reaches later ones undiluted only through the short convolutions
after that layer (each looks back conv_L_cache - 1 tokens), and diluted by attention weights otherwise: the positions
a near tie affects are itself and the next (conv_L_cache - 1) x (conv layers after it). This is the rounding at the
router alone; differences carried in from earlier layers can be larger, and the comparisons still hold every other
position to their tolerance.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Sequence
from typing import Any

from pytest_lfm.matrix import ModelSpec
from pytest_lfm.measure.logprobs import Logprobs, load_reference, reference_sequences, release_reference

ROUNDOFF = {"float32": 2.0 ** -24, "bfloat16": 2.0 ** -8, "float16": 2.0 ** -11}
"""Unit roundoff of each dtype (half the distance from 1 to the next number)."""


@dataclasses.dataclass(frozen=True)
class NearTie:
    """A position whose routing at one MoE layer is within the two runs' rounding of a tie: the closest chosen and
    unchosen experts, their score margin, what rounding may move it by, and the later positions it reaches."""

    position: int
    layer: int
    chosen: int
    unchosen: int
    margin: float
    bound: float
    reach: int

    def rows(self, length: int) -> range:
        """The positions (of ``length``) whose logprobs the near tie may change: itself and its reach."""
        return range(self.position, min(self.position + self.reach + 1, length))


def moe_gates(model: Any) -> list[tuple[int, Any, Any]]:
    """(layer index, router, expert-bias tensor or None) of every MoE block: a module with ``gate`` (a router or linear
    with ``weight``, experts x hidden) and ``experts``, in layer order."""
    out = []
    for name, module in model.named_modules():
        gate = getattr(module, "gate", None)
        found = re.search(r"layers\.(\d+)\.", f"{name}.")
        if gate is not None and hasattr(gate, "weight") and hasattr(module, "experts") and found:
            out.append((int(found.group(1)), gate, getattr(module, "expert_bias", None)))
    return sorted(out, key=lambda entry: entry[0])


def _conv_reach(config: Any, layer: int) -> int:
    types = list(getattr(config, "layer_types", None) or [])
    return (int(getattr(config, "conv_L_cache", 3)) - 1) * sum(1 for kind in types[layer + 1:] if kind == "conv")


def near_ties(model: Any, ids: Sequence[int], roundoff: float) -> list[NearTie]:
    """The positions of ``ids`` whose routing two runs of summed unit roundoff ``roundoff`` may flip (the module's
    bound), from one forward pass of ``model`` (load it in float32: the exact routing), closest pair per position and
    layer."""
    import torch

    config = getattr(model.config, "text_config", None) or model.config
    top_k = int(config.num_experts_per_tok)
    gates = moe_gates(model)
    inputs: dict[int, Any] = {}
    hooks = [gate.register_forward_pre_hook(lambda _m, args, layer=layer: inputs.__setitem__(layer, args[0]))
             for layer, gate, _ in gates]
    try:
        with torch.no_grad():
            device = next(model.parameters()).device
            model(input_ids=torch.tensor([list(ids)], device=device))
    finally:
        for hook in hooks:
            hook.remove()
    out = []
    for layer, gate, bias in gates:
        x = inputs[layer].reshape(-1, inputs[layer].shape[-1]).float()
        w = gate.weight.float()
        z = x @ w.T
        scores = torch.sigmoid(z) + (bias.float() if bias is not None else 0.0)
        slack = roundoff * (x.abs() @ w.abs().T + z.abs()) / 4
        chosen = torch.zeros_like(scores, dtype=torch.bool).scatter(1, scores.topk(top_k, dim=-1).indices, True)
        for position in range(scores.shape[0]):
            pick, rest = chosen[position].nonzero().flatten().tolist(), (~chosen[position]).nonzero().flatten().tolist()
            s, d = scores[position].tolist(), slack[position].tolist()
            e, f = min(((e, f) for e in pick for f in rest), key=lambda p: s[p[0]] - s[p[1]] - d[p[0]] - d[p[1]])
            if s[e] - s[f] <= d[e] + d[f]:
                out.append(NearTie(position, layer, e, f, s[e] - s[f], d[e] + d[f], _conv_reach(config, layer)))
    return out


def near_tie_rows(ties: Sequence[NearTie], length: int) -> frozenset[int]:
    """Every position of a ``length``-token sequence that one of ``ties`` may change."""
    return frozenset(row for tie in ties for row in tie.rows(length))


def reference_near_ties(model: ModelSpec, runs: Sequence[Logprobs], generated: Sequence[int],
                        dtypes: tuple[str, str]) -> tuple[list[list[NearTie]], list[frozenset[int]]]:
    """The near ties of two runs in ``dtypes`` on the reference's sequences (``logprobs.reference_sequences``), from
    transformers in float32, and per run the positions they may change; none for a model without MoE layers."""
    sequences = reference_sequences(model, runs, generated)
    if model.family != "moe":
        return [[] for _ in sequences], [frozenset() for _ in sequences]
    reference = load_reference(model.model_path(), model.family, "float32")
    try:
        ties = [near_ties(reference, ids, ROUNDOFF[dtypes[0]] + ROUNDOFF[dtypes[1]]) for ids in sequences]
    finally:
        release_reference(reference)
    return ties, [near_tie_rows(t, len(ids)) for t, ids in zip(ties, sequences, strict=True)]


def tie_figures(ties: Sequence[Sequence[NearTie]], dtypes: tuple[str, str]) -> dict[str, Any]:
    """What the report shows of the near ties left out of a comparison: how many, and the first ten."""
    flat = [dataclasses.asdict(t) | {"prompt": i} for i, run in enumerate(ties) for t in run]
    return {"dtypes": list(dtypes), "positions": len({(t["prompt"], t["position"]) for t in flat}),
            "first": flat[:10]}
