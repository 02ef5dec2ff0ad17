"""Check a built micro checkpoint with transformers: greedy bf16 decoding of every scripted turn."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pytest_lfm.micro import render, train
from pytest_lfm.micro.configs import TEMPLATE
from pytest_lfm.micro.script import Turn, load_script


@dataclass(frozen=True)
class TurnResult:
    turn_id: str
    sglang_rendering: str
    expected: str
    got: str

    @property
    def exact(self) -> bool:
        return self.expected == self.got


def _load(path: Path, name: str) -> tuple[Any, Any, Any]:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(path))
    if name == "vl":
        from transformers import Lfm2VlForConditionalGeneration

        from pytest_lfm.micro.builder import load_processor

        vl_cls: Any = Lfm2VlForConditionalGeneration
        model = vl_cls.from_pretrained(str(path), dtype=torch.bfloat16)
        return model.eval(), tok, load_processor(path)
    auto: Any = AutoModelForCausalLM
    return auto.from_pretrained(str(path), dtype=torch.bfloat16).eval(), tok, None


def greedy(model: Any, tok: Any, processor: Any, turn: Turn, prompt: str) -> str:
    """Greedy decode (KV cache off: plain full forwards) with sglang's forced-JSON grammar emulated for the first
    token of ``forced`` turns."""
    import torch

    if processor is not None:
        images = [img.render() for img in turn.images]
        inputs = dict(processor(text=[prompt], images=[images] if images else None, return_tensors="pt"))
    else:
        inputs = {"input_ids": torch.tensor([tok(prompt, add_special_tokens=False)["input_ids"]])}
    vision = {k: v.to(torch.bfloat16) if v.is_floating_point() else v
              for k, v in inputs.items() if k in train.VISION_INPUTS}
    ids = inputs["input_ids"]
    out: list[int] = []
    with torch.no_grad():
        for step in range(turn.max_tokens):
            logits = model(input_ids=ids, use_cache=False, **vision).logits[0, -1].float()
            if step == 0 and turn.kind == "forced":
                logits[train.TOOL_CALL_START_ID] = float("-inf")
            nxt = int(logits.argmax())
            if nxt == train.EOS_ID:
                break
            out.append(nxt)
            ids = torch.cat([ids, torch.tensor([[nxt]])], dim=1)
    text: str = tok.decode(out, skip_special_tokens=False)
    return text


def verify(path: Path, name: str, renderings: tuple[str, ...] = render.SUPPORTED_SGLANG) -> list[TurnResult]:
    """Decode every scripted turn of checkpoint ``name`` in each sglang rendering; one result per (turn, rendering)."""
    model, tok, processor = _load(path, name)
    results: list[TurnResult] = []
    for turn in load_script().for_checkpoint(name):
        for version in renderings:
            prompt = render.render_prompt(turn, None, TEMPLATE[name], version)
            got = greedy(model, tok, processor, turn, prompt)
            results.append(TurnResult(turn.id, version, render.completion_text(turn), got))
    return results
