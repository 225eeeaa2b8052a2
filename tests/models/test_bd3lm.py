"""BD3-LM's network: no position ever sees a later block (both masks), the KV cache is exact, the
training mask is the authors', and the published layout loads without remote code."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from evo_eval.errors import CheckpointError
from evo_eval.models import bd3lm
from evo_eval.tiny import build_dit_checkpoint


@pytest.fixture(scope="module")
def model():
    return bd3lm.random_model(bd3lm.TINY_SHAPE, dtype=torch.float32, device="cpu", seed=3)


def ids(n: int, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 511, (1, n), generator=torch.Generator().manual_seed(seed))


def close(a: torch.Tensor, b: torch.Tensor, atol: float = 1e-5) -> bool:
    return torch.allclose(a[..., :-1], b[..., :-1], atol=atol)  # the [MASK] column is -inf in both


def test_no_position_sees_a_later_block(model):
    x = ids(16)
    later = x.clone()
    later[0, 9] = (later[0, 9] + 1) % 511  # block 2 of 4 (block size 4)
    a, b = model.block_logits(x), model.block_logits(later)
    assert torch.equal(a[:, :8], b[:, :8])  # blocks 0 and 1: untouched, bit for bit
    assert not close(a[:, 8:12], b[:, 8:12]) and not close(a[:, 12:], b[:, 12:])  # its own block and later ones see it


def test_training_mask_never_lets_a_noisy_block_see_a_later_block(model):
    x = ids(16, seed=1)
    noisy = x.clone()
    noisy[0, [1, 6, 10, 13]] = model.mask_token_id
    base = model.nelbo_logits(noisy, x[:, :12], 0)
    for block in range(4):
        clean_later, noisy_later = x.clone(), noisy.clone()
        if block < 3:
            clean_later[0, 4 * block + 4] = (clean_later[0, 4 * block + 4] + 1) % 511
            noisy_later[0, 4 * block + 4] = (noisy_later[0, 4 * block + 4] + 1) % 511
        out_clean = model.nelbo_logits(noisy, clean_later[:, :12], 0)
        out_noisy = model.nelbo_logits(noisy_later, x[:, :12], 0)
        upto = 4 * (block + 1)
        assert torch.equal(out_clean[:, :upto], base[:, :upto]) and torch.equal(out_noisy[:, :upto], base[:, :upto])
    # and a noisy block does see the clean copy of earlier blocks
    earlier = x.clone()
    earlier[0, 2] = (earlier[0, 2] + 1) % 511
    assert not close(model.nelbo_logits(noisy, earlier[:, :12], 0)[:, 4:], base[:, 4:])


def test_mask_equals_the_authors_block_diff_mask():
    n, size = 12, 4
    q, k = torch.arange(2 * n)[:, None], torch.arange(2 * n)[None, :]
    # bd3lms models/dit.py block_diff_mask, written out: x_t is [0, n), x_0 is [n, 2n).
    q0, k0 = q >= n, k >= n
    bq, bk = torch.where(q0, (q - n) // size, q // size), torch.where(k0, (k - n) // size, k // size)
    authors = ((bq == bk) & (q0 == k0)) | ((bq > bk) & k0 & ~q0) | ((bq >= bk) & k0 & q0)
    ours = bd3lm.block_diff_mask(torch.arange(n), torch.arange(n), size)
    assert torch.equal(ours, authors)


def test_shared_clean_prefix_equals_the_authors_single_forward(model):
    """nelbo_logits (clean keys once, noisy draws against them) equals one forward over [x_t ⊕ x_0]
    under the block-diff mask, as bd3lms runs it."""
    x = ids(16, seed=6)
    noisy = x.repeat(3, 1)
    noisy[0, [1, 5]], noisy[1, [8, 9, 10, 11]], noisy[2, [2, 13, 15]] = model.mask_token_id, model.mask_token_id, model.mask_token_id
    positions = torch.arange(16)
    joint = torch.cat((noisy, x.expand(3, -1)), dim=1)
    c = model.backbone.condition(None, 3, joint.device)
    hidden = model.backbone.hidden(joint, torch.cat((positions, positions)), c,
                                   mask=bd3lm.block_diff_mask(positions, positions, 4))
    authors = model.backbone.output_layer(hidden[:, :16], c)
    ours = model.nelbo_logits(noisy, x[:, :12], 0)  # the last clean block is read by nobody
    assert close(ours, authors)
    shared = model.nelbo_prefix(x[:, :12])
    assert close(model.nelbo_logits(noisy[:, 8:], x[:, :12], 8, prefix=shared), authors[:, 8:])


def test_clean_noisy_copy_equals_the_sampling_mask(model):
    """With x_t = x_0 the noisy copy's logits are the block-causal (sample-mode) logits."""
    x = ids(14, seed=2)
    full = model.block_logits(x)
    assert close(model.nelbo_logits(x[:, 4:], x[:, :12], 4), full[:, 4:])


def test_kv_cache_is_exact(model):
    x = ids(14, seed=4)
    full = model.block_logits(x)
    caches = model.new_cache(16)
    assert model.block_logits(x[:, :8], start=0, caches=caches, logits=False) is None  # prefill of two blocks
    assert close(model.block_logits(x[:, 8:12], start=8, caches=caches), full[:, 8:12])
    scratch = x[:, 8:12].clone()
    scratch[0, :2] = model.mask_token_id  # a denoising step writes scratch keys; the final store overwrites them
    model.block_logits(scratch, start=8, caches=caches)
    model.block_logits(x[:, 8:12], start=8, caches=caches, logits=False)
    assert close(model.block_logits(x[:, 12:14], start=12, caches=caches), full[:, 12:14])
    assert close(model.block_logits(x[:, :12], out_start=8), full[:, 8:12])


@pytest.fixture(scope="module")
def tiny_bd3lm(tmp_path_factory, tokenizer_dir):
    return build_dit_checkpoint(bd3lm, tmp_path_factory.mktemp("tiny-bd3lm"), tokenizer_dir, seed=3)


def test_published_layout_loads_with_its_buffers(tiny_bd3lm, model, tmp_path):
    config = json.loads((tiny_bd3lm / "config.json").read_text())
    assert config["model_type"] == "bd3lm" and config["block_size"] == 4
    assert config["auto_map"]["AutoConfig"] == "configuration_bd3lm.BD3LMConfig"
    state = load_file(str(tiny_bd3lm / "model.safetensors"))
    state.update({"sampling_eps_min": torch.tensor(1e-3), "sampling_eps_max": torch.tensor(0.999),
                  "backbone.rotary_emb.inv_freq": torch.ones(8)})
    save_file(state, str(tiny_bd3lm / "model.safetensors"), metadata={"format": "pt"})
    loaded = bd3lm.load_pretrained(str(tiny_bd3lm))
    assert loaded.block_size == 4 and loaded.config.sampling_eps_max == 0.999
    x = ids(10, seed=5)
    assert close(loaded.block_logits(x), model.block_logits(x), atol=1e-6)


@pytest.mark.parametrize("flag,value", [("cross_attn", False), ("causal", True), ("adaln", False),
                                        ("time_conditioning", True)])
def test_unsupported_flags_are_one_line_errors(tiny_bd3lm, tmp_path, flag, value):
    folder = tmp_path / "ckpt"
    folder.mkdir()
    for f in tiny_bd3lm.iterdir():
        (folder / f.name).write_bytes(f.read_bytes())
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps(dict(config, **{flag: value})))
    with pytest.raises(CheckpointError, match=f"{flag}={value} is not supported") as err:
        bd3lm.load_pretrained(str(folder))
    assert "\n" not in str(err.value)
