"""Why do micro-vl's sglang logprobs differ from transformers' by ~3 (2026-12-01-h200-c) while micro-dense's agree
to 0.015?

Serves the same text weights three ways through sgl.Engine, each in a process of its own, and compares the top-5
prompt logprobs of one chat prompt with transformers' (float32 on the GPU, same token ids):
  vl           micro-vl as built (Lfm2VlForConditionalGeneration);
  vl-as-dense  micro-vl's language model alone, saved as an Lfm2ForCausalLM checkpoint (renamed tensors, text_config);
  vl-triton    micro-vl with --attention-backend triton.
If vl-as-dense agrees and vl does not, the difference is in sglang's VL wrapper, not in the weights or the reference.
Usage (GPU host): python3 vl-parity.py OUT.json [dtype]
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

from pytest_lfm import micro

PROMPT = [{"role": "system", "content": "You are a helpful assistant."},
          {"role": "user", "content": "What is the capital of France?"}]
DENSE = Path("/tmp/vl-as-dense")


def as_dense(vl: Path) -> Path:
    """micro-vl's language model as an Lfm2ForCausalLM checkpoint directory."""
    from safetensors.torch import load_file, save_file

    DENSE.mkdir(exist_ok=True)
    config = json.loads((vl / "config.json").read_text())
    text = dict(config["text_config"], architectures=["Lfm2ForCausalLM"], dtype=config.get("dtype", "bfloat16"))
    (DENSE / "config.json").write_text(json.dumps(text, indent=2))
    tensors = load_file(str(vl / "model.safetensors"))
    save_file({k.replace("model.language_model.", "model.", 1): v for k, v in tensors.items()
               if k.startswith("model.language_model.")}, str(DENSE / "model.safetensors"), metadata={"format": "pt"})
    for f in vl.iterdir():
        if f.name not in ("config.json", "model.safetensors", "processor_config.json", "micro.json"):
            shutil.copy(f, DENSE / f.name)
    return DENSE


def ids_of(path: Path) -> list[int]:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(path))
    out = tok.apply_chat_template(PROMPT, add_generation_prompt=True, tokenize=True)
    return list(out["input_ids"] if isinstance(out, dict) or hasattr(out, "keys") else out)


def reference(path: Path, family: str, ids: list[int]) -> tuple[list[list[float]], list[list[int]]]:
    import torch
    import transformers

    device = "cuda" if torch.cuda.is_available() else "cpu"

    auto = transformers.AutoModelForImageTextToText if family == "vl" else transformers.AutoModelForCausalLM
    model = auto.from_pretrained(str(path), dtype=torch.float32).to(device).eval()
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([ids], device=device)).logits[0].float()
    top = torch.log_softmax(logits, dim=-1).topk(5, dim=-1)
    return [[round(v, 4) for v in row] for row in top.values.tolist()], top.indices.tolist()


def one(path: str, dtype: str, extra: str) -> None:
    """In a process of its own: the engine's top-5 prompt logprobs (values and ids) as JSON on stdout's last line."""
    from pytest_lfm.engine import SglangEngine

    ids = ids_of(Path(path))
    kwargs = json.loads(extra)
    with SglangEngine(path, dtype=dtype, gpus=[0], mem_fraction_static=0.3, cuda_graph_max_bs=8, **kwargs) as eng:
        out = eng.generate(input_ids=ids, sampling_params={"temperature": 0, "max_new_tokens": 4},
                           return_logprob=True, logprob_start_len=0, top_logprobs_num=5)
    meta = out["meta_info"]
    rows = [sorted(((float(e[0]), int(e[1])) for e in row), reverse=True) for row in meta["input_top_logprobs"][1:]]
    print(json.dumps({"ids": [int(e[1]) for e in meta["input_token_logprobs"]],
                      "values": [[v for v, _ in r] for r in rows], "top_ids": [[i for _, i in r] for r in rows],
                      "output_ids": [int(e[1]) for e in meta["output_token_logprobs"]]}))


def main() -> None:
    out_path = Path(sys.argv[1])
    dtype = sys.argv[2] if len(sys.argv) > 2 else "bfloat16"
    vl = micro.checkpoint_dir("vl")
    dense = as_dense(vl)
    ids = ids_of(vl)
    result: dict[str, object] = {"ids": ids, "dtype": dtype}
    for name, path, family in (("vl", vl, "vl"), ("vl-as-dense", dense, "dense")):
        values, top_ids = reference(path, family, ids)
        result[f"transformers {name}"] = {"values": values, "top_ids": top_ids}
    ref = result["transformers vl"]["values"]  # type: ignore[index]
    variants = (("vl", vl, {}), ("vl-as-dense", dense, {}), ("vl-triton", vl, {"attention_backend": "triton"}))
    for name, path, extra in variants:
        proc = subprocess.run([sys.executable, __file__, "--one", str(path), dtype, json.dumps(extra)],
                              capture_output=True, text=True, timeout=300, check=False)
        if proc.returncode != 0:
            result[name] = {"error": proc.stderr[-3000:]}
            continue
        got = json.loads(proc.stdout.strip().splitlines()[-1])
        rows = zip(got["values"], ref[: len(ids) - 1], strict=False)
        diffs = [max(abs(a - b) for a, b in zip(x, y, strict=True)) for x, y in rows]
        got["max_abs_diff_per_position"] = [round(d, 4) for d in diffs]
        got["max_abs_diff"] = max(diffs)
        got["same_ids"] = got["ids"] == ids
        result[name] = got
        print(name, "max", round(max(diffs), 4), "per position", [round(d, 3) for d in diffs[:12]], flush=True)
    out_path.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    if sys.argv[1] == "--one":
        one(sys.argv[2], sys.argv[3], sys.argv[4])
    else:
        main()
