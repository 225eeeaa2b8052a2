"""ARD's process (schedule tables, the anchor-line schedule, the skip grid) and its decoder-only network."""

from __future__ import annotations

import json
import math

import pytest
import torch

from evo_eval.cards import get_card
from evo_eval.errors import CheckpointError
from evo_eval.models.ard import (TINY_SHAPE, ARDiffusionLM, Schedule, alphas_cumprod, load_ard,
                                 parameter_count, random_model, skip_indices, token_timesteps)
from evo_eval.tiny import tiny_card


def test_sqrt_schedule_as_ard_discretises_it():
    acp = alphas_cumprod(2000)
    bar = lambda s: 1 - math.sqrt(s + 1e-4)  # noqa: E731
    assert acp[0] == pytest.approx(bar(1 / 2000) / bar(0), rel=1e-12)  # ᾱ telescopes to ᾱ(s)/ᾱ(0)
    assert acp[999] == pytest.approx(bar(1000 / 2000) / bar(0), rel=1e-9)
    assert bool((acp[1:] < acp[:-1]).all()) and acp[-1] < 1e-3


def test_anchor_line_schedule_by_hand():
    # N=4, T=10, c=2: moving point (1, 0), anchor (8, 9): t_i = 9 - 9(8 - i)/7 -> -1.3, 0, 1.3, 2.6
    assert token_timesteps(2, 4, 10, 2.0).tolist() == [0, 0, 1, 3]
    assert token_timesteps(4 + 10 - 1, 4, 10, 2.0).tolist() == [9, 9, 9, 9]  # the first index: all at T-1
    assert token_timesteps(0, 4, 10, 2.0).tolist() == [0, 0, 0, 0]
    assert skip_indices(256, 2000, 20) == [2255 - 112 * k for k in range(20)] + [0]


def test_schedule_is_left_to_right_and_monotone():
    s = Schedule.build(48, 2000, 2.0, 20)
    assert s.steps == 20 and bool((s.src[0] == 1999).all()) and bool((s.tgt[-1] == 0).all())
    assert torch.equal(s.src[1:], s.tgt[:-1])  # each step starts where the previous ended
    assert bool((s.tgt <= s.src).all())  # no token ever gets noisier
    assert bool((s.src[:, 1:] >= s.src[:, :-1]).all())  # left tokens are never noisier than right ones
    committed = [s.committed(k) for k in range(s.steps)]
    assert committed == sorted(committed) and committed[-1] == 48 and committed[0] == 0


def test_checkpoint_round_trip_and_auto_classes(tiny_ard_dir):
    from safetensors import safe_open
    from transformers import AutoModel

    config = json.loads((tiny_ard_dir / "config.json").read_text())
    assert config["model_type"] == "ard" and config["diffusion_steps"] == 2000 and config["embed_dim"] == 16
    with safe_open(str(tiny_ard_dir / "model.safetensors"), "pt") as f:
        names = set(f.keys())
    assert {"word_embedding.weight", "lm_head_bias", "input_up_proj.0.weight", "time_trans.2.weight",
            "output_down_proj.2.weight", "model.embed_tokens.weight", "model.layers.1.down_proj.weight"} <= names
    model = AutoModel.from_pretrained(tiny_ard_dir)
    assert isinstance(model, ARDiffusionLM)
    ours = load_ard(tiny_ard_dir, card=tiny_card("ard"))
    ids, z, t = torch.randint(0, 500, (1, 6)), torch.randn(1, 5, 16), torch.randint(0, 2000, (1, 5))
    assert torch.equal(model(ids, z, t).pred_x0, ours(ids, z, t).pred_x0)


def test_cached_prompt_equals_the_joint_pass_and_attention_is_as_designed():
    model = random_model(TINY_SHAPE, dtype=torch.float32, device="cpu", seed=2)
    ids, z, t = torch.randint(0, 500, (1, 7)), torch.randn(3, 5, 16), torch.randint(0, 2000, (3, 5))
    joint = model(ids.expand(3, -1), z, t)
    cached = model.denoise(model.encode_prompt(ids), z, t)
    torch.testing.assert_close(cached, joint.pred_x0)
    torch.testing.assert_close(joint.logits, model.round_logits(joint.pred_x0))
    other = ids.clone()
    other[0, 0] += 1
    assert not torch.allclose(model.denoise(model.encode_prompt(other), z, t), cached)  # latents see the prompt
    later = z.clone()
    later[:, -1] += 1.0
    assert not torch.allclose(model.denoise(model.encode_prompt(ids), later, t)[:, 0], cached[:, 0])  # and each other


def test_random_model_at_the_card_shape(tmp_path):
    assert parameter_count(dict(get_card("ard-7b").shape)) == 6_818_073_728
    meta = random_model(dict(get_card("ard-7b").shape), dtype=torch.bfloat16, device="meta")
    assert next(meta.parameters()).device.type == "meta"
    tiny = random_model(TINY_SHAPE, dtype=torch.bfloat16, device="cpu", seed=3)
    assert {p.dtype for p in tiny.parameters()} == {torch.bfloat16}
    assert float(tiny.lm_head_bias.float().abs().sum()) == 0.0 and float(tiny.model.norm.weight.float().mean()) == 1.0


def test_checkpoint_problems_are_one_line_errors(tiny_ard_dir, tiny_llama_dir, tmp_path):
    with pytest.raises(CheckpointError, match="has n_layers=2 but card ard-7b has n_layers=32"):
        load_ard(tiny_ard_dir, card=get_card("ard-7b"))
    with pytest.raises(CheckpointError, match="is a 'llama' checkpoint, not ARD"):
        load_ard(tiny_llama_dir)
    with pytest.raises(CheckpointError, match="does not exist"):
        load_ard(tmp_path / "missing")
    odd = tmp_path / "odd"
    odd.mkdir()
    config = json.loads((tiny_ard_dir / "config.json").read_text())
    (odd / "config.json").write_text(json.dumps(dict(config, noise_schedule="cosine")))
    with pytest.raises(CheckpointError, match="option noise_schedule=cosine"):
        load_ard(odd)
