"""A small byte-level BPE tokenizer with LFM2's special tokens at their real ids.

Ids 0..499 are LFM2's special and reserved tokens (``<|im_end|>`` = 7 is EOS, ``<image>`` = 396 and the LFM2-VL image
tokens after it); ordinary tokens start at 500. Words are pre-tokenized apart from surrounding punctuation (a word keeps
one trailing space), so a name in the user's message and the same name inside a call's arguments are the same tokens:
that is what lets a tiny model learn to copy arguments.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

FIRST_ORDINARY_ID = 500
BOS, EOS, PAD = "<|startoftext|>", "<|im_end|>", "<|pad|>"
IMAGE_TOKEN, IMAGE_TOKEN_ID = "<image>", 396
_NAMED = {
    0: "<|pad|>",
    1: "<|startoftext|>",
    2: "<|endoftext|>",
    6: "<|im_start|>",
    7: "<|im_end|>",
    8: "<|tool_list_start|>",
    9: "<|tool_list_end|>",
    10: "<|tool_call_start|>",
    11: "<|tool_call_end|>",
    12: "<|tool_response_start|>",
    13: "<|tool_response_end|>",
    IMAGE_TOKEN_ID: IMAGE_TOKEN,
    497: "<|img_thumbnail|>",
    498: "<|image_start|>",
    499: "<|image_end|>",
}
_NAMED.update({397 + (r - 1) * 10 + (c - 1): f"<|img_row_{r}_col_{c}|>" for r in range(1, 11) for c in range(1, 11)})
SPECIAL_TOKENS: tuple[str, ...] = tuple(_NAMED.get(i, f"<|reserved_{i}|>") for i in range(FIRST_ORDINARY_ID))
PRETOKENIZE_PATTERN = r"\p{L}+ ?|\p{N}|[^\p{L}\p{N}]+"


def train_tokenizer(corpus: Iterable[str], vocab_size: int) -> Any:
    """Train the BPE on ``corpus``; returns a ``tokenizers.Tokenizer``."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(PRETOKENIZE_PATTERN), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    bpe_trainer: Any = trainers.BpeTrainer
    trainer = bpe_trainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(corpus, trainer=trainer)
    for i, name in enumerate(SPECIAL_TOKENS):
        if tok.token_to_id(name) != i:
            raise RuntimeError(f"special token {name} got id {tok.token_to_id(name)}, expected {i}")
    return tok


def save_tokenizer(tok: Any, directory: Path, chat_template: str, *, vl: bool = False) -> None:
    """Write tokenizer.json, tokenizer_config.json, special_tokens_map.json and chat_template.jinja."""
    tok.save(str(directory / "tokenizer.json"))
    config: dict[str, Any] = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": BOS,
        "eos_token": EOS,
        "pad_token": PAD,
        "add_bos_token": False,
        "add_eos_token": False,
        "clean_up_tokenization_spaces": False,
        "model_max_length": 4096,
        "legacy": False,
    }
    if vl:
        config.update(
            image_token=IMAGE_TOKEN,
            image_start_token="<|image_start|>",
            image_end_token="<|image_end|>",
            image_thumbnail="<|img_thumbnail|>",
        )
    (directory / "tokenizer_config.json").write_text(json.dumps(config, indent=2) + "\n")
    (directory / "special_tokens_map.json").write_text(
        json.dumps({"bos_token": BOS, "eos_token": EOS, "pad_token": PAD}, indent=2) + "\n"
    )
    (directory / "chat_template.jinja").write_text(chat_template)
