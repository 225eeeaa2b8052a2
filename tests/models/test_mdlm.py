"""MDLM's network and loader: the published layout loads through transformers' Auto classes without
remote code, the denoiser is SUBS, time conditioning is honoured only where the checkpoint has it."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import AutoModelForMaskedLM

from evo_eval.models import mdlm


@pytest.fixture(scope="module")
def tiny_mdlm(tiny_checkpoint):
    return tiny_checkpoint("mdlm", seed=2)


def test_published_layout_loads_without_remote_code(tiny_mdlm):
    config = json.loads((tiny_mdlm / "config.json").read_text())
    assert config["model_type"] == "mdlm" and config["auto_map"]["AutoModelForMaskedLM"] == "modeling_mdlm.MDLM"
    assert {"hidden_dim", "n_blocks", "n_heads", "cond_dim", "model_length", "vocab_size"} <= set(config)
    model = mdlm.load_pretrained(str(tiny_mdlm))
    auto = AutoModelForMaskedLM.from_pretrained(tiny_mdlm)  # what a user of transformers would call
    assert type(model) is type(auto) is mdlm.MDLM
    ids = torch.randint(0, 511, (2, 10), generator=torch.Generator().manual_seed(0))
    assert torch.allclose(model(ids), auto(ids), atol=1e-6)
    assert model.shape.as_dict() == {k: v for k, v in mdlm.TINY_SHAPE.items() if k != "architecture"} | {"time_conditioning": False}


def test_denoiser_is_subs_and_projects_only_what_is_read():
    model = mdlm.random_model(mdlm.TINY_SHAPE, dtype=torch.float32, device="cpu", seed=0)
    ids = torch.randint(0, 511, (1, 14), generator=torch.Generator().manual_seed(1))
    ids[0, 9:] = model.mask_token_id
    raw = model(ids)
    subs = model.denoiser_logits(ids, start=9)
    assert subs.shape == (1, 5, 512)
    assert torch.isinf(subs[..., model.mask_token_id]).all()  # [MASK] is never predicted
    assert torch.allclose(subs[..., :-1], raw[:, 9:, :-1], atol=1e-6)
    assert model.mask_token_id == 511  # no mask id in the shape: the last one, as the authors append it


def test_bidirectional_attention_sees_the_whole_canvas():
    model = mdlm.random_model(mdlm.TINY_SHAPE, dtype=torch.float32, device="cpu", seed=0)
    ids = torch.randint(0, 511, (1, 12), generator=torch.Generator().manual_seed(2))
    later = ids.clone()
    later[0, 11] = (later[0, 11] + 1) % 511
    assert not torch.allclose(model(ids)[0, 0], model(later)[0, 0])  # position 0 sees position 11


def test_time_conditioning_only_where_the_checkpoint_has_it():
    ids = torch.randint(0, 511, (1, 8), generator=torch.Generator().manual_seed(3))
    plain = mdlm.random_model(mdlm.TINY_SHAPE, dtype=torch.float32, device="cpu", seed=5)
    assert torch.equal(plain.denoiser_logits(ids, sigma=torch.tensor([0.0])),
                       plain.denoiser_logits(ids, sigma=torch.tensor([3.0])))
    timed = mdlm.random_model(dict(mdlm.TINY_SHAPE, time_conditioning=True), dtype=torch.float32, device="cpu", seed=5)
    assert not torch.allclose(timed.denoiser_logits(ids, sigma=torch.tensor([0.0])),
                              timed.denoiser_logits(ids, sigma=torch.tensor([3.0])))


def test_random_weights_are_seeded():
    a = mdlm.random_model(mdlm.TINY_SHAPE, dtype=torch.float32, device="cpu", seed=7)
    b = mdlm.random_model(mdlm.TINY_SHAPE, dtype=torch.float32, device="cpu", seed=7)
    c = mdlm.random_model(mdlm.TINY_SHAPE, dtype=torch.float32, device="cpu", seed=8)
    key = "backbone.blocks.0.attn_qkv.weight"
    assert torch.equal(a.state_dict()[key], b.state_dict()[key])
    assert not torch.equal(a.state_dict()[key], c.state_dict()[key])
