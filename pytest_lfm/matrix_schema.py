"""The matrix files' schema: the fields of a model entry and the values each may take."""

from __future__ import annotations

from typing import Any

from pytest_lfm.micro.configs import NAMES as MICRO_NAMES

FAMILIES = ("dense", "moe", "vl")
CAPABILITIES = ("chat", "tools", "vision", "reasoning")
LOW_LATENCY_ARGS = ("--enable-torch-compile", "--chunked-prefill-size", "-1")
PROFILES = {"default": (), "low-latency": LOW_LATENCY_ARGS}
# one budget per GPU name prefix, or several ([[model.latency_budgets."GPU"]]), each for one launch profile and one
# concurrency (defaults: "default", 1)
_BUDGET = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "profile": {"enum": list(PROFILES)},
        "concurrency": {"type": "integer", "minimum": 1},
        "ttft_ms": {"type": "number", "exclusiveMinimum": 0},
        "tpot_ms": {"type": "number", "exclusiveMinimum": 0},
        "itl_ms": {"type": "number", "exclusiveMinimum": 0},
        "e2e_ms": {"type": "number", "exclusiveMinimum": 0},
        "output_tok_s": {"type": "number", "exclusiveMinimum": 0},
        "tolerance": {"type": "number", "minimum": 0},
    },
}
# a model's recommended sampling (its card's generation parameters), within the ranges sglang accepts
# (sampling/sampling_params.py, SamplingParams.verify)
_SAMPLING = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "temperature": {"type": "number", "minimum": 0},
        "top_k": {"type": "integer", "minimum": 1},
        "top_p": {"type": "number", "exclusiveMinimum": 0, "maximum": 1},
        "min_p": {"type": "number", "minimum": 0, "maximum": 1},
        "repetition_penalty": {"type": "number", "exclusiveMinimum": 0, "maximum": 2},
    },
}
SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["model"],
    "properties": {
        "model": {
            "type": "array",
            "items": {
                "type": "object",
                "additionalProperties": False,
                "required": ["id", "family", "capabilities", "chat_template"],
                "properties": {
                    "id": {"type": "string", "minLength": 1},
                    "family": {"enum": list(FAMILIES)},
                    "micro": {"enum": list(MICRO_NAMES)},
                    "successor": {"type": "string", "minLength": 1},
                    "capabilities": {"type": "array", "items": {"enum": list(CAPABILITIES)}, "uniqueItems": True},
                    "chat_template": {"enum": ["lfm2", "lfm2.5"]},
                    "launch_args": {"type": "array", "items": {"type": "string"}},
                    "min_sglang": {"type": "string", "pattern": r"^\d+(\.\d+)*$"},
                    "dtypes": {"type": "array", "items": {"enum": ["bfloat16", "float16"]}, "minItems": 1},
                    "context_length": {"type": "integer", "minimum": 1},
                    "sampling": _SAMPLING,
                    "latency_budgets": {"type": "object", "additionalProperties": {
                        "if": {"type": "object"}, "then": _BUDGET,
                        "else": {"type": "array", "items": _BUDGET, "minItems": 1}}},
                },
            },
        }
    },
}
