"""Model building and the deterministic full-batch training loop of the micro checkpoints (torch and transformers
are imported lazily). These bytes are part of the cache key: a change here rebuilds every checkpoint."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pytest_lfm.micro import tokenizer
from pytest_lfm.micro.configs import CONFIGS, TRAINING
from pytest_lfm.micro.corpus import Example


def make_model(name: str, vocab_size: int) -> Any:
    """The untrained model of checkpoint ``name``: MoE when its config has experts, VL when it has a vision tower,
    else dense."""
    import torch
    from transformers import (
        Lfm2Config,
        Lfm2ForCausalLM,
        Lfm2MoeConfig,
        Lfm2MoeForCausalLM,
        Lfm2VlConfig,
        Lfm2VlForConditionalGeneration,
        Siglip2VisionConfig,
    )

    torch.manual_seed(TRAINING["seed"])
    cfg = CONFIGS[name]
    dense_cls: Any = Lfm2ForCausalLM
    moe_cls: Any = Lfm2MoeForCausalLM
    if "num_experts" in cfg:
        return moe_cls(Lfm2MoeConfig(**{**cfg, "vocab_size": vocab_size}))
    if "vision" not in cfg:
        return dense_cls(Lfm2Config(**{**cfg, "vocab_size": vocab_size}))
    text = Lfm2Config(**{**cfg["text"], "vocab_size": vocab_size})
    vision = Siglip2VisionConfig(**cfg["vision"])
    config = Lfm2VlConfig(
        vision_config=vision.to_dict(),
        text_config=text.to_dict(),
        image_token_id=cfg["image_token_id"],
        downsample_factor=cfg["downsample_factor"],
        projector_hidden_size=cfg["projector_hidden_size"],
        projector_hidden_act=cfg["projector_hidden_act"],
        projector_bias=cfg["projector_bias"],
        projector_use_layernorm=cfg["projector_use_layernorm"],
        tie_word_embeddings=True,
    )
    return Lfm2VlForConditionalGeneration(config)


@dataclass
class Batch:
    """One length bucket: right-padded input ids, labels (-100 off the completion), and per labelled position
    (row-major) whether <|tool_call_start|> is banned there and whether it belongs to a scripted example."""

    input_ids: Any
    attention_mask: Any
    labels: Any
    ban: Any  # first completion position of a grammar-forced turn: sglang's JSON-array grammar allows only JSON
    scripted: Any
    vision: dict[str, Any] = field(default_factory=dict)  # this bucket's vision inputs (tiles in order)

    def to(self, device: str) -> Batch:
        return Batch(**{k: getattr(self, k).to(device) for k in ("input_ids", "attention_mask", "labels", "ban",
                                                                   "scripted")},
                     vision={k: v.to(device) for k, v in self.vision.items()})


def encode(examples_: Sequence[Example], encode_prompt: Callable[[Example], tuple[list[int], dict[str, Any]]],
           tok: Any, buckets: int | None = None) -> list[Batch]:
    """The training set as ``buckets`` batches of similar lengths (padding costs CPU time; gradients are summed over
    the buckets, so a step is one full-batch step)."""
    import torch

    rows: list[tuple[list[int], int, Example, dict[str, Any]]] = []
    for ex in examples_:
        prompt_ids, extra = encode_prompt(ex)
        completion_ids = [*tok.encode(ex.completion, add_special_tokens=False).ids, EOS_ID]
        rows.append((prompt_ids + completion_ids, len(prompt_ids), ex, extra))
    rows.sort(key=lambda r: len(r[0]))
    n = buckets or TRAINING["buckets"]
    size = -(-len(rows) // n)
    out = []
    for chunk in (rows[i : i + size] for i in range(0, len(rows), size)):
        width = max(len(ids) for ids, *_ in chunk)
        input_ids = torch.zeros((len(chunk), width), dtype=torch.long)
        attention = torch.zeros((len(chunk), width), dtype=torch.long)
        labels = torch.full((len(chunk), width), -100, dtype=torch.long)
        ban: list[bool] = []
        scripted: list[bool] = []
        for i, (ids, n_prompt, ex, _) in enumerate(chunk):
            input_ids[i, : len(ids)] = torch.tensor(ids)
            attention[i, : len(ids)] = 1
            labels[i, n_prompt - 1 : len(ids) - 1] = torch.tensor(ids[n_prompt:])  # position predicts the next token
            n_completion = len(ids) - n_prompt
            ban += [ex.kind == "forced" and j == 0 for j in range(n_completion)]
            scripted += [ex.scripted] * n_completion
        extras = [extra for *_, extra in chunk]
        vision = {k: torch.cat([e[k] for e in extras if k in e]) for k in VISION_INPUTS if any(k in e for e in extras)}
        out.append(Batch(input_ids, attention, labels, torch.tensor(ban), torch.tensor(scripted), vision))
    return out


TOOL_CALL_START_ID = tokenizer.SPECIAL_TOKENS.index("<|tool_call_start|>")
EOS_ID = tokenizer.SPECIAL_TOKENS.index(tokenizer.EOS)


def forward(model: Any, batch: Batch) -> Any:
    """Logits at the labelled positions only (row-major), with <|tool_call_start|> removed where it is banned."""
    out = model.model(input_ids=batch.input_ids, attention_mask=batch.attention_mask, use_cache=False,
                      **batch.vision)
    logits = model.lm_head(out.last_hidden_state[batch.labels != -100]).float()
    logits[batch.ban, TOOL_CALL_START_ID] = float("-inf")
    return logits


def margins(logits: Any, batch: Batch) -> Any:
    """Per labelled position: target logit minus the best other logit (negative = a wrong token wins)."""
    target = batch.labels[batch.labels != -100]
    tgt = logits.gather(1, target[:, None]).squeeze(1)
    return tgt - logits.scatter(1, target[:, None], float("-inf")).max(dim=1).values


def _frozen_tower(tower: Any) -> Any:
    """``tower`` frozen, its output computed once per input tensor (the vision tower stays at its seeded init; the
    projector and the language model learn to read it: most of a VL step's CPU time was the tower's backward)."""
    import torch

    class FrozenTower(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.tower = tower.requires_grad_(False)
            self.cache: dict[tuple[int, Any], Any] = {}

        def forward(self, pixel_values: Any, **kwargs: Any) -> Any:
            key = (pixel_values.data_ptr(), pixel_values.dtype)
            if key not in self.cache:
                with torch.no_grad():
                    self.cache[key] = self.tower(pixel_values=pixel_values, **kwargs)
            return self.cache[key]

    return FrozenTower()


def train(model: Any, batches: Sequence[Batch], device: str,
          log: Callable[[str], None] = lambda s: None) -> dict[str, Any]:
    """AdamW on the full training set (gradients summed over the length buckets) until every scripted token wins by
    ``min_margin`` logits in bf16 (or ``max_steps``)."""
    import torch

    cfg = TRAINING
    torch.manual_seed(cfg["seed"])
    model.to(device).train()
    tower = getattr(model.model, "vision_tower", None)
    if tower is not None:
        model.model.vision_tower = _frozen_tower(tower)
    dev = [b.to(device) for b in batches]
    n_labels = sum(int((b.labels != -100).sum()) for b in dev)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg["lr"], weight_decay=cfg["weight_decay"], betas=(0.9, 0.98))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / cfg["warmup_steps"]))
    start = time.monotonic()
    min_margin = float("-inf")
    step = 0
    for step in range(1, cfg["max_steps"] + 1):
        opt.zero_grad(set_to_none=True)
        loss_sum = 0.0
        fp32_margin = float("inf")
        for b in dev:
            logits = forward(model, b)
            target = b.labels[b.labels != -100]
            loss: Any = torch.nn.functional.cross_entropy(logits, target, reduction="sum") / n_labels
            loss.backward()
            loss_sum += float(loss.detach())
            with torch.no_grad():  # margins of this (pre-update) forward: cheap, and gate the costlier bf16 check
                m = margins(logits.detach(), b)[b.scripted]
            if len(m):
                fp32_margin = min(fp32_margin, float(m.min()))
        if fp32_margin >= cfg["min_margin"] + 0.5:
            min_margin = bf16_min_margin(model, dev)
            elapsed = time.monotonic() - start
            log(f"step {step} loss {loss_sum:.4f} bf16 min margin {min_margin:.2f} ({elapsed:.0f}s)")
            if min_margin >= cfg["min_margin"]:
                break
        elif step % cfg["check_every"] == 0:
            log(f"step {step} loss {loss_sum:.4f} min margin {fp32_margin:.2f} ({time.monotonic() - start:.0f}s)")
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
    if tower is not None:
        model.model.vision_tower = tower.requires_grad_(True)
    model.eval()
    return {"steps": step, "min_margin": round(min_margin, 3), "train_seconds": round(time.monotonic() - start, 1)}


def bf16_min_margin(model: Any, batches: Sequence[Batch]) -> float:
    """The smallest margin over the scripted examples' tokens with the weights rounded to bf16 (on CUDA computed
    in bf16; on CPU, where bf16 matmuls are slow, in fp32 from the rounded weights)."""
    import copy

    import torch

    with torch.no_grad():
        for module in model.modules():
            if hasattr(module, "cache") and hasattr(module, "tower"):
                module.cache = {}  # cached tower outputs cannot be deep-copied; the twin's rounded tower recomputes
        twin = copy.deepcopy(model).eval()
        cuda = next(model.parameters()).is_cuda
        if cuda:
            twin = twin.to(torch.bfloat16)
        else:
            for p in twin.parameters():
                p.data = p.data.to(torch.bfloat16).float()
        dtype = torch.bfloat16 if cuda else torch.float32
        worst = float("inf")
        for b in batches:
            vision = {k: v.to(torch.bfloat16).to(dtype) if v.is_floating_point() else v for k, v in b.vision.items()}
            m = margins(forward(twin, Batch(b.input_ids, b.attention_mask, b.labels, b.ban, b.scripted, vision)), b)
            if b.scripted.any():
                worst = min(worst, float(m[b.scripted].min()))
        return worst


def save_dir_files(directory: Path, model: Any) -> None:
    import torch

    model.to("cpu").to(torch.bfloat16).save_pretrained(str(directory))


def encode_vl(examples_: Sequence[Example], processor: Any, tok: Any) -> list[Batch]:
    """Like :func:`encode`, with prompts run through the LFM2-VL processor (image tokens expanded as sglang does)."""

    def encode_prompt(ex: Example) -> tuple[list[int], dict[str, Any]]:
        images = [img.render() for img in ex.images]
        out = processor(text=[ex.prompt], images=[images] if images else None, return_tensors="pt")
        return out["input_ids"][0].tolist(), {k: out[k] for k in VISION_INPUTS if k in out}

    return encode(examples_, encode_prompt, tok)


VISION_INPUTS = ("pixel_values", "pixel_attention_mask", "spatial_shapes")
