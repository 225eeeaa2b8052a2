"""The fast Llama/Qwen2 decoder: same function as transformers' classes, real checkpoint loading, card shapes."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from evo_eval.cards import get_card
from evo_eval.errors import CheckpointError, UserError
from evo_eval.models.llama import TINY_SHAPE, LlamaDecoder, LlamaShape, random_model
from evo_eval.models.llama_checkpoint import load_pretrained


@pytest.mark.parametrize("arch", ["llama", "qwen2"])
def test_logits_equal_transformers(arch, tiny_llama_dir, tiny_qwen_dir):
    from transformers import AutoModelForCausalLM

    folder = tiny_llama_dir if arch == "llama" else tiny_qwen_dir
    reference = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    ours = load_pretrained(str(folder), dtype=torch.float32, device="cpu")
    ids = torch.randint(0, reference.config.vocab_size, (2, 41), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = reference(ids).logits
    got = ours(ids)
    assert got.shape == expected.shape
    assert torch.allclose(got, expected, atol=1e-5, rtol=1e-5), (got - expected).abs().max()
    assert ours.shape.qkv_bias == (arch == "qwen2")


def test_prefill_fills_cache_like_full_forward(tiny_qwen_dir):
    model = load_pretrained(str(tiny_qwen_dir), dtype=torch.float32, device="cpu")
    ids = torch.arange(3, 30)
    session = model.session(64, "eager")
    last = session.prefill(ids)
    assert torch.allclose(last, model(ids)[0, -1], atol=1e-5)
    # One cached step for the next token equals the full forward over the extended sequence.
    session.commit(torch.tensor([7]))
    logits = session.step_logits()
    full = model(torch.cat([ids, torch.tensor([7])]))[0, -1]
    assert torch.allclose(logits, full, atol=1e-5)


@pytest.mark.parametrize("card,params", [("llama3-8b", 8_030_261_248), ("qwen2.5-7b", 7_615_616_512)])
def test_card_shapes_have_the_published_parameter_counts(card, params):
    # Meta-Llama-3-8B and Qwen2.5-7B as published; built on the meta device, nothing allocated.
    with torch.device("meta"):
        model = LlamaDecoder(LlamaShape.from_card(get_card(card).shape))
    assert sum(p.numel() for p in model.parameters()) == params


def test_random_model_is_seeded_and_built_in_place():
    a = random_model(TINY_SHAPE, dtype=torch.bfloat16, device="cpu", seed=3)
    b = random_model(TINY_SHAPE, dtype=torch.bfloat16, device="cpu", seed=3)
    c = random_model(TINY_SHAPE, dtype=torch.bfloat16, device="cpu", seed=4)
    assert all(p.dtype == torch.bfloat16 and p.device.type == "cpu" and not p.requires_grad for p in a.parameters())
    assert torch.equal(a.layers[0].wqkv.weight, b.layers[0].wqkv.weight)
    assert not torch.equal(a.layers[0].wqkv.weight, c.layers[0].wqkv.weight)
    assert torch.equal(a.norm, torch.ones_like(a.norm))
    assert 0.015 < a.layers[1].w13.weight.float().std().item() < 0.025


def test_reduction_matvec_equals_linear():
    from evo_eval.models.llama import matvec

    gen = torch.Generator().manual_seed(0)
    x, w, b = torch.randn(1, 48, generator=gen), torch.randn(20, 48, generator=gen), torch.randn(20, generator=gen)
    assert torch.allclose(matvec(x, w, b, "reduce"), torch.nn.functional.linear(x, w, b), atol=1e-5)
    assert matvec(x, w, None, "reduce").shape == (1, 20)


def test_bad_card_shape_is_one_line():
    with pytest.raises(UserError, match="n_hidden") as err:
        LlamaShape.from_card({**TINY_SHAPE, "n_hidden": 3})
    assert "\n" not in str(err.value)
    with pytest.raises(UserError, match="lacks d_model"):
        LlamaShape.from_card({k: v for k, v in TINY_SHAPE.items() if k != "d_model"})


def test_checkpoint_errors_name_the_problem(tmp_path, tiny_llama_dir):
    with pytest.raises(CheckpointError, match="does not exist"):
        load_pretrained(str(tmp_path / "nope"), dtype=torch.float32, device="cpu")

    wrong = tmp_path / "wrong-shape"
    shutil.copytree(tiny_llama_dir, wrong)
    config = json.loads((wrong / "config.json").read_text())
    config["intermediate_size"] *= 2
    (wrong / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="does not fit") as err:
        load_pretrained(str(wrong), dtype=torch.float32, device="cpu")
    assert "\n" not in str(err.value)

    config["model_type"] = "mistral"
    (wrong / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="'mistral' model"):
        load_pretrained(str(wrong), dtype=torch.float32, device="cpu")

    config.update(model_type="llama", rope_parameters={"rope_type": "llama3", "rope_theta": 5e5})
    (wrong / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="rope type 'llama3'"):
        load_pretrained(str(wrong), dtype=torch.float32, device="cpu")


def test_incomplete_checkpoint_is_refused(tmp_path, tiny_llama_dir):
    from safetensors.torch import load_file, save_file

    broken = tmp_path / "broken"
    shutil.copytree(tiny_llama_dir, broken)
    (weights,) = broken.glob("*.safetensors")
    tensors = load_file(str(weights))
    tensors.pop("model.layers.1.mlp.up_proj.weight")
    save_file(tensors, str(weights))
    with pytest.raises(CheckpointError, match="lacks 1 weight"):
        load_pretrained(str(broken), dtype=torch.float32, device="cpu")
