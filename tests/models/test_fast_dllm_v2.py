"""Fast-dLLM v2's network: the published inference attention (block-causal: bidirectional inside a block,
causal between blocks) and the KV cache the sampler keeps, on a tiny model of its layout."""

from __future__ import annotations

import pytest
import torch

from evo_eval.models.fast_dllm_v2 import SHAPE_7B, TINY_SHAPE, FastDLLMv2Model, block_causal_mask, random_model


def test_the_mask_is_the_published_eval_block_diff_mask():
    mask = block_causal_mask(6, 4, 4, "cpu")[0, 0]  # queries 4..9 over keys 0..9, blocks of 4
    for q in range(6):
        for k in range(10):
            assert bool(mask[q, k]) == ((q + 4) // 4 >= k // 4)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
def test_attention_is_bidirectional_in_a_block_and_causal_between_blocks(dtype):
    model = random_model(TINY_SHAPE, dtype=dtype, device="cpu", seed=2)
    ids = torch.randint(0, 500, (1, 96), generator=torch.Generator().manual_seed(0))
    changed = ids.clone()
    changed[0, 40] = (changed[0, 40] + 1) % 500
    with torch.no_grad():
        diff = (model(ids).logits - model(changed).logits).abs().amax(-1)[0]
    assert (diff[:32] == 0).all()  # earlier blocks never see a later one
    assert (diff[32:40] > 0).all()  # earlier positions of the same block do
    assert (diff[64:] > 0).all()


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
def test_the_cache_gives_the_full_forwards_numbers_and_a_read_leaves_it_unchanged(dtype):
    model = random_model(TINY_SHAPE, dtype=dtype, device="cpu", seed=2)
    ids = torch.randint(0, 500, (1, 96), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        full = model(ids).logits
        cache = model.new_cache()
        first = model.extend(ids[:, :64], cache, 32, keep=True)
        read = model.extend(ids[:, 64:], cache, 32, keep=False)
        assert cache.get_seq_length() == 64
        again = model.extend(ids[:, 64:], cache, 32, keep=False)
    assert torch.equal(first, full[:, :64]) and torch.equal(read, full[:, 64:]) and torch.equal(again, read)


def test_the_7b_shape_builds_on_the_meta_device_with_qwen2_weight_names():
    model = random_model(SHAPE_7B, dtype=torch.bfloat16, device="meta")
    assert isinstance(model, FastDLLMv2Model) and model.config.bd_size == 32 and model.config.mask_token_id == 151665
    names = dict(model.named_parameters())
    assert "model.layers.27.self_attn.q_proj.bias" in names and "lm_head.weight" in names
    assert 7.6e9 < sum(p.numel() for p in names.values()) < 7.7e9
