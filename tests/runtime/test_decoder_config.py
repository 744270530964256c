"""DecoderConfig: what the one decoder class reads of a Hugging Face config, per architecture,
and the one-line refusals of what its forward pass does not implement."""

from __future__ import annotations

import pytest
from transformers import Gemma3TextConfig, LlamaConfig

from lmforge.errors import ModelUnavailableError
from lmforge.runtime.decoder_config import ARCHITECTURES, DecoderConfig

SIZES = {
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 3,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
}


def gemma3(**overrides: object) -> Gemma3TextConfig:
    layer_types = ["sliding_attention", "sliding_attention", "full_attention"]
    fields: dict[str, object] = {
        **SIZES,
        "head_dim": 32,
        "query_pre_attn_scalar": 24,
        "sliding_window": 4,
        "layer_types": layer_types,
        **overrides,
    }
    return Gemma3TextConfig(**fields)


def test_llama_has_no_features_beyond_its_sizes() -> None:
    config = DecoderConfig.from_hf(LlamaConfig(**SIZES, eos_token_id=[5, 7]))
    assert config.features == ARCHITECTURES["llama"]
    assert (config.heads, config.kv_heads, config.head_dim) == (4, 2, 16)
    assert config.attention_scale == 16**-0.5
    assert config.windows == (None, None, None) and config.rope_tables == (None, None, None)
    assert config.activation == "silu" and config.eos_token_id == [5, 7]


def test_gemma3_differs_from_llama_by_features_only() -> None:
    config = DecoderConfig.from_hf(gemma3())
    features = config.features
    assert features.norm_offset == 1.0 and features.qk_norm and features.post_norms
    assert features.scale_embeddings and features.mlp_norm == "pre_feedforward_layernorm"
    assert config.windows == (4, 4, None)
    assert config.rope_tables == ("sliding_attention", "sliding_attention", "full_attention")
    assert config.attention_scale == 24**-0.5 and config.head_dim == 32
    assert config.activation == "gelu_pytorch_tanh"


@pytest.mark.parametrize(
    ("hf_config", "message"),
    [
        (gemma3(final_logit_softcapping=30.0), "Gemma 3 variant .* soft-capping"),
        (gemma3(use_bidirectional_attention=True), "bidirectional attention"),
        (LlamaConfig(**SIZES, hidden_act="relu"), "activation 'relu'"),
    ],
)
def test_a_model_the_runtime_cannot_run_is_unavailable_not_missing(
    hf_config: object, message: str
) -> None:
    with pytest.raises(ModelUnavailableError, match=message):
        DecoderConfig.from_hf(hf_config)
