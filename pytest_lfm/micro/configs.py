"""What a micro checkpoint is made of: the model configs, the training parameters and the chat template of each.

Together with the rendered training set (:mod:`pytest_lfm.micro.corpus`) and the bytes of the code that trains on it,
these are what :func:`pytest_lfm.micro.configs` hashes into the cache key.
"""

from __future__ import annotations

from typing import Any

from pytest_lfm.micro import tokenizer

NAMES = ("dense", "moe", "vl", "thinking")
TRAINING: dict[str, Any] = {
    "seed": 1234,
    "vocab_size": 1280,
    "lr": 3e-3,
    "weight_decay": 0.0,
    "warmup_steps": 10,
    "max_steps": 400,
    "check_every": 5,
    "buckets": 4,  # length buckets of the training set (padding is most of a CPU step's cost otherwise)
    "min_margin": 3.0,  # every scripted token must beat the runner-up by this many logits in bf16
    "copy_variants": 1,  # invented-value variants per scripted tool turn (teaches copying arguments)
}
TEMPLATE = {"dense": "lfm2.5", "moe": "lfm2", "vl": "lfm2", "thinking": "lfm2.5"}
_TEXT = {
    "vocab_size": None,  # filled from the tokenizer
    "hidden_size": 256,
    "intermediate_size": 256,
    "num_hidden_layers": 4,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "layer_types": ["conv", "full_attention", "conv", "full_attention"],
    "conv_L_cache": 3,
    "conv_bias": False,
    "max_position_embeddings": 4096,
    "norm_eps": 1e-5,
    "tie_word_embeddings": True,
    "pad_token_id": 0,
    "bos_token_id": 1,
    "eos_token_id": 7,
    "initializer_range": 0.02,
    "rope_parameters": {"rope_theta": 1000000.0, "rope_type": "default"},
}
_DENSE = {**_TEXT, "block_auto_adjust_ff_dim": False, "block_multiple_of": 256, "block_ffn_dim_multiplier": 1.0}
# the architecture follows from the config (train.make_model): "text" and "vision" make a VL model, experts a MoE,
# else dense; "thinking" is a dense model trained on the script's reasoning turns
CONFIGS: dict[str, dict[str, Any]] = {
    "dense": _DENSE,
    "thinking": _DENSE,
    "moe": {
        **_TEXT,
        "moe_intermediate_size": 128,
        "num_dense_layers": 2,
        "num_experts": 8,
        "num_experts_per_tok": 2,
        "use_expert_bias": True,
        "routed_scaling_factor": 1.0,
        "norm_topk_prob": True,
    },
    "vl": {
        "text": {**_TEXT, "block_auto_adjust_ff_dim": False, "block_multiple_of": 256, "block_ffn_dim_multiplier": 1.0},
        "vision": {
            "hidden_size": 256,
            "intermediate_size": 512,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "patch_size": 16,
            "num_patches": 256,
            "num_channels": 3,
            "vision_use_head": False,
        },
        "image_token_id": tokenizer.IMAGE_TOKEN_ID,
        "downsample_factor": 2,
        "projector_hidden_size": 256,
        "projector_hidden_act": "gelu",
        "projector_bias": True,
        "projector_use_layernorm": True,
        "processor": {
            "min_image_tokens": 16,
            "max_image_tokens": 64,
            "tile_size": 512,
            "max_tiles": 4,
            "min_tiles": 2,
            "do_image_splitting": True,
            "use_thumbnail": True,
        },
    },
}
