"""The decode-attention kernel against PyTorch's scaled_dot_product_attention."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from lmforge.runtime.attention import decode_attention
from lmforge.runtime.decoder import load_decoder


@pytest.mark.parametrize(("heads", "kv_heads"), [(6, 2), (4, 4), (8, 1)])
def test_decode_attention_equals_masked_sdpa(heads: int, kv_heads: int) -> None:
    generator = torch.Generator().manual_seed(heads * 10 + kv_heads)
    slots, capacity, dim = 5, 40, 16
    keys = torch.randn(slots, kv_heads, capacity, dim, generator=generator)
    values = torch.randn(slots, kv_heads, capacity, dim, generator=generator)
    # queries as the decoder passes them: a transposed view, not contiguous
    queries = torch.randn(heads, 4, dim, generator=generator).transpose(0, 1)
    # row 0 sees one position; row 2 a sliding window; row 3 the slot's whole capacity
    starts = torch.tensor([0, 0, 9, 0])
    ends = torch.tensor([1, 17, 21, capacity])
    scale = 0.3

    ours = decode_attention(queries, keys, values, starts, ends, scale)

    position = torch.arange(capacity)
    seen = (position >= starts[:, None]) & (position < ends[:, None])
    expected = F.scaled_dot_product_attention(
        queries.unsqueeze(2),
        keys[:4],
        values[:4],
        attn_mask=seen.view(4, 1, 1, capacity),
        scale=scale,
        enable_gqa=True,
    ).squeeze(2)
    assert ours.shape == (4, heads, dim)
    torch.testing.assert_close(ours, expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("folder_fixture", ["tiny_decoder_dir", "tiny_gemma3_dir"])
def test_decoding_steps_with_the_kernel_match_sdpa(
    request: pytest.FixtureRequest, folder_fixture: str
) -> None:
    """Rows of different lengths, some past the tiny Gemma's 4-position sliding window."""
    model, _ = load_decoder(request.getfixturevalue(folder_fixture))
    cache = model.new_cache(3)
    prompts = [[5, 9, 11, 3, 7, 2, 8, 4, 6], [12, 4], [3, 3, 8, 1, 9, 2]]
    for slot, prompt in enumerate(prompts):
        model.prefill(cache, slot, prompt)
    lengths = [len(p) for p in prompts]
    for step, tokens in enumerate([[1, 2, 3], [4, 5, 6], [7, 8, 9]]):
        by_variant = {}
        for variant in ("sdpa", "kernel"):  # both write the same keys/values for this step
            model.attention = variant
            by_variant[variant] = model.step(cache, [n + step for n in lengths], tokens)
        torch.testing.assert_close(by_variant["kernel"], by_variant["sdpa"], atol=1e-5, rtol=1e-5)
