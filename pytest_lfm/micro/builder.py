"""Build one micro checkpoint into a directory: tokenizer, chat template, trained weights, processor (VL)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pytest_lfm.micro import corpus, render, tokenizer, train
from pytest_lfm.micro.configs import CONFIGS, TEMPLATE, TRAINING
from pytest_lfm.micro.script import load_script

VISION_PREFIX_SAVED = "model.vision_tower."
VISION_PREFIX_SGLANG = "model.vision_tower.vision_model."


def pick_device(device: str | None) -> str:
    import torch

    if device:
        return device
    return "cuda" if torch.cuda.is_available() else "cpu"


def load_processor(directory: Path) -> Any:
    """The LFM2-VL processor of a checkpoint directory."""
    from transformers import AutoProcessor

    auto: Any = AutoProcessor
    return auto.from_pretrained(str(directory))


def _make_processor(directory: Path, template: str) -> Any:
    from transformers import AutoTokenizer, Lfm2VlProcessor
    from transformers.models.lfm2_vl import image_processing_lfm2_vl as ip

    cls: Any = getattr(ip, "Lfm2VlImageProcessor", None) or getattr(ip, "Lfm2VlImageProcessorFast", None)
    opts = CONFIGS["vl"]["processor"]
    image_processor = cls(
        min_image_tokens=opts["min_image_tokens"],
        max_image_tokens=opts["max_image_tokens"],
        tile_size=opts["tile_size"],
        max_tiles=opts["max_tiles"],
        min_tiles=opts["min_tiles"],
        do_image_splitting=opts["do_image_splitting"],
        use_thumbnail=opts["use_thumbnail"],
        encoder_patch_size=CONFIGS["vl"]["vision"]["patch_size"],
        downsample_factor=CONFIGS["vl"]["downsample_factor"],
        max_num_patches=CONFIGS["vl"]["vision"]["num_patches"],
    )
    tok = AutoTokenizer.from_pretrained(str(directory))
    return Lfm2VlProcessor(image_processor=image_processor, tokenizer=tok, chat_template=template)


def _rename_vision_keys(directory: Path) -> None:
    """transformers saves the SigLIP2 tower as model.vision_tower.*; sglang loads model.vision_tower.vision_model.*
    and silently skips unknown names (docs/facts.md)."""
    from safetensors.torch import load_file, save_file

    path = directory / "model.safetensors"
    tensors = load_file(str(path))
    renamed = {
        (VISION_PREFIX_SGLANG + k[len(VISION_PREFIX_SAVED):]
         if k.startswith(VISION_PREFIX_SAVED) and not k.startswith(VISION_PREFIX_SGLANG) else k): v
        for k, v in tensors.items()
    }
    save_file(renamed, str(path), metadata={"format": "pt"})


def build_tokenizer_into(name: str, directory: Path) -> tuple[Any, Any, list[Any]]:
    """Tokenizer, chat template (and for vl the processor) of checkpoint ``name``: deterministic, no training."""
    template = render.chat_template(TEMPLATE[name])
    examples = corpus.examples(load_script(), name)
    tok = tokenizer.train_tokenizer(corpus.tokenizer_corpus(examples), TRAINING["vocab_size"])
    tokenizer.save_tokenizer(tok, directory, template, vl=name == "vl")
    processor = _make_processor(directory, template) if name == "vl" else None
    if processor is not None:
        processor.save_pretrained(str(directory))
        _untype_processor_configs(directory)
    return tok, processor, examples


def _untype_processor_configs(directory: Path) -> None:
    for fname in ("preprocessor_config.json", "processor_config.json"):
        path = directory / fname
        if path.is_file():  # let AutoImageProcessor pick the class by model type (names differ across versions)
            data = json.loads(path.read_text())
            data.get("image_processor", data).pop("image_processor_type", None)
            path.write_text(json.dumps(data, indent=2) + "\n")


def build_into(name: str, directory: Path, *, device: str | None, log: Callable[[str], None]) -> dict[str, Any]:
    import torch

    dev = pick_device(device)
    torch.manual_seed(TRAINING["seed"])
    tok, processor, examples = build_tokenizer_into(name, directory)
    if processor is not None:
        batches = train.encode_vl(examples, processor, tok)
    else:
        batches = train.encode(examples, lambda ex: (tok.encode(ex.prompt, add_special_tokens=False).ids, {}), tok)
    model = train.make_model(name, tok.get_vocab_size())
    log(f"{name}: {len(examples)} examples in batches {[tuple(b.input_ids.shape) for b in batches]}, "
        f"{sum(p.numel() for p in model.parameters()) / 1e6:.2f} M parameters, training on {dev}")
    stats = train.train(model, batches, dev, log=log)
    model.config.architectures = [type(model).__name__]
    train.save_dir_files(directory, model)
    if processor is not None:
        processor.save_pretrained(str(directory))
        _rename_vision_keys(directory)
        _untype_processor_configs(directory)
    (directory / "generation_config.json").write_text(
        json.dumps({"bos_token_id": 1, "eos_token_id": 7, "pad_token_id": 0, "do_sample": False}, indent=2) + "\n"
    )
    return {"device": dev, "examples": len(examples), **stats,
            "size_bytes": sum(p.stat().st_size for p in directory.iterdir() if p.is_file())}
