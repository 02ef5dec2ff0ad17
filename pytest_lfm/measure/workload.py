"""The workload of a latency run: ``sglang.bench_serving``'s ``random-ids`` dataset, drawn with its own RNG.

``random_ids_prompts`` makes the same numpy draws as bench_serving's ``--dataset-name random-ids
--random-range-ratio 1.0 --seed SEED``, so both clients send the same prompts for the same seed.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Workload:
    """What one latency run sends: bench_serving's random-ids dataset at a fixed length and concurrency."""

    input_len: int = 1024
    output_len: int = 128
    num_prompts: int = 64
    concurrency: int = 1
    warmup_requests: int = 8
    seed: int = 42
    flush_cache: bool = True
    timeout: float = 300.0

    def __post_init__(self) -> None:
        if min(self.input_len, self.output_len, self.num_prompts, self.concurrency) < 1 or self.warmup_requests < 0:
            raise ValueError(f"lengths, num_prompts and concurrency must be >= 1, warmup_requests >= 0: {self}")


@dataclass(frozen=True)
class Prompt:
    """One request of the workload; ``prompt_len`` is the nominal length as bench_serving counts it."""

    text: str
    prompt_len: int
    output_len: int



@functools.lru_cache(maxsize=4)
def load_tokenizer(path: str) -> Any:
    """The served model's tokenizer, loaded as bench_serving loads it."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(path, trust_remote_code=True)


def random_ids_prompts(tokenizer: Any, input_len: int, output_len: int, num_prompts: int, seed: int) -> list[Prompt]:
    """bench_serving's ``random-ids`` prompts for ``--random-range-ratio 1.0 --seed SEED`` (same RNG draws, same text).

    The lengths are fixed, but the draws bench_serving makes for them are repeated so that the token offsets that
    follow match its own for the same seed.
    """
    rng = np.random.RandomState(seed)
    rng.randint(input_len, input_len + 1, size=num_prompts)
    rng.randint(output_len, output_len + 1, size=num_prompts)
    # Text prompts: the server's encode adds special tokens, so bench_serving shortens the ids by that many.
    length = max(1, input_len - int(tokenizer.num_special_tokens_to_add()))
    vocab = int(tokenizer.vocab_size)
    offsets = rng.randint(0, vocab, size=num_prompts)
    return [
        Prompt(tokenizer.decode([int((offsets[i] + i + j) % vocab) for j in range(length)]), length, output_len)
        for i in range(num_prompts)
    ]
