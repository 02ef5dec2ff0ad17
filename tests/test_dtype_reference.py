"""The dtype suite's reference: transformers' own float16-vs-bfloat16 difference at the positions sglang is compared."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import pytest
from pytest_lfm.conformance import test_dtype as dtype_suite

pytest.importorskip("transformers")


@dataclass(frozen=True)
class _Model:
    path: str
    family: str = "dense"

    def model_path(self) -> str:
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


def _logprobs(ids: list[int], output_ids: list[int]) -> dtype_suite.Logprobs:
    return dtype_suite.Logprobs("p", ids, [[0.0] * 5] * (len(ids) - 1), output_ids, [[0.0] * 5] * len(output_ids))


def test_reference_gaps_cover_every_prompt_position_and_the_shared_decode_positions(
    untrained_dense: tuple[Path, list[int]],
) -> None:
    directory, ids = untrained_dense
    bf16, fp16 = _logprobs(ids, [5, 6, 7, 8]), _logprobs(ids, [5, 6, 9, 9])  # the dtypes part at the third token
    gaps = dtype_suite._reference_gaps(_Model(str(directory)), [bf16], [fp16])
    assert not isinstance(gaps, str), gaps
    prefill, decode = gaps
    assert 0 <= prefill.position < len(ids) - 1 and 0 <= decode.position < 3  # compared: up to the first difference
    assert all(math.isfinite(d.max_abs) and 0 < d.max_abs < 1 for d in gaps), gaps  # rounding, not a broken model
    assert len(prefill.bfloat16) == len(prefill.float16) == dtype_suite.TOP_LOGPROBS


def test_no_reference_for_a_hub_id_or_a_checkpoint_too_large_for_the_cpu(
    untrained_dense: tuple[Path, list[int]], monkeypatch: pytest.MonkeyPatch,
) -> None:
    directory, ids = untrained_dense
    runs = [_logprobs(ids, [5])], [_logprobs(ids, [5])]
    assert "not a local checkpoint directory" in str(dtype_suite._reference_gaps(_Model("LiquidAI/LFM2-350M"), *runs))
    monkeypatch.setattr(dtype_suite, "REFERENCE_MAX_BYTES", 1024)
    assert "for a CPU reference" in str(dtype_suite._reference_gaps(_Model(str(directory)), *runs))
