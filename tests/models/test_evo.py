"""Evo's network and checkpoint format: Auto classes, save/load, wrong checkpoints, Llama init, shapes."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from evo_eval.cards import get_card
from evo_eval.errors import CheckpointError
from evo_eval.models.evo import TINY_SHAPE, init_from_llama, load_evo, random_model
from evo_eval.tiny import tiny_card
from evo_eval.models.evo_config import EvoConfig, parameter_count, proportional_xl
from evo_eval.models.evo_modeling import EvoForLatentFlow

@pytest.fixture(scope="module")
def tiny_evo_dir(tiny_checkpoint):
    return tiny_checkpoint("evo", seed=3)


def _outputs(model, ids):
    """AR-limit logits and a latent readout: the two paths every estimator and sampler use."""
    gen = torch.Generator().manual_seed(0)
    z = torch.randn(1, 4, model.config.hidden_size, generator=gen)
    t = torch.tensor([[0.1, 0.4, 0.7, 1.0]])
    ar, lat = model.latent_forward(ids, z, t, torch.arange(ids.shape[1], ids.shape[1] + 4),
                                   torch.full((4,), ids.shape[1]))
    return ar, lat.logits, model.time_head(lat.hidden)


def test_save_load_round_trip_gives_identical_outputs_and_auto_classes_resolve(tiny_evo_dir, tmp_path):
    from transformers import AutoConfig, AutoModel, AutoModelForCausalLM

    ids = torch.tensor([[0, 17, 93, 250, 4, 11]])
    model = load_evo(tiny_evo_dir)
    assert isinstance(AutoConfig.from_pretrained(tiny_evo_dir), EvoConfig)
    auto = AutoModel.from_pretrained(tiny_evo_dir)
    causal = AutoModelForCausalLM.from_pretrained(tiny_evo_dir)
    assert type(auto) is type(causal) is EvoForLatentFlow
    model.save_pretrained(tmp_path / "again")
    again = load_evo(tmp_path / "again")
    assert sorted(p.name for p in (tmp_path / "again").glob("*.safetensors"))
    with torch.no_grad():
        reference = _outputs(model, ids)
        for other in (auto, again):
            for a, b in zip(reference, _outputs(other.eval(), ids)):
                assert torch.equal(a, b)
        # A shorter sequence takes another attention kernel path: equal to float rounding.
        assert torch.allclose(causal(ids).logits, reference[0], atol=1e-5)
    assert again.config.latent_scale == model.config.latent_scale


def test_a_checkpoint_of_another_shape_than_the_card_is_one_line(tiny_evo_dir):
    with pytest.raises(CheckpointError) as err:
        load_evo(tiny_evo_dir, card=get_card("evo-8b"))
    message = str(err.value)
    assert "n_layers=2" in message and "evo-8b has n_layers=40" in message and "\n" not in message
    assert isinstance(load_evo(tiny_evo_dir, card=tiny_card("evo")), EvoForLatentFlow)


def test_missing_folders_and_foreign_checkpoints_are_checkpoint_errors(tiny_evo_dir, tiny_llama_dir, tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        load_evo(tmp_path / "nowhere")
    with pytest.raises(CheckpointError, match="'llama' checkpoint, not Evo"):
        load_evo(tiny_llama_dir)
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="no config.json"):
        load_evo(tmp_path / "empty")


def test_weights_that_do_not_fit_their_config_are_refused(tiny_evo_dir, tmp_path):
    bad = tmp_path / "bad"
    shutil.copytree(tiny_evo_dir, bad)
    config = json.loads((bad / "config.json").read_text())
    config["intermediate_size"] = 96
    (bad / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="does not fit its config|cannot load the weights"):
        load_evo(bad)


def test_init_from_llama_keeps_the_llama_model_as_the_ar_limit(tiny_llama_dir):
    from transformers import LlamaForCausalLM

    llama = LlamaForCausalLM.from_pretrained(tiny_llama_dir).eval()
    evo = init_from_llama(tiny_llama_dir).eval()
    ids = torch.tensor([[0, 5, 77, 300, 12, 9, 41]])
    with torch.no_grad():
        assert torch.allclose(evo(ids).logits, llama(ids).logits, atol=1e-5)
    table = llama.get_input_embeddings().weight.detach()
    assert torch.equal(evo.embedding, table)
    assert evo.lm_head is not None and torch.equal(evo.lm_head.weight, llama.lm_head.weight)
    assert evo.config.latent_scale == pytest.approx(float(1 / table.pow(2).mean().sqrt()))
    assert torch.count_nonzero(evo.time_embed.fc2.weight) == 0  # time starts switched off
    with torch.no_grad():  # transformers' generate runs the AR limit too (no cache, full recompute)
        assert torch.equal(evo.generate(ids, max_new_tokens=6, do_sample=False),
                           llama.generate(ids, max_new_tokens=6, do_sample=False))
    tied = init_from_llama(llama, tie_word_embeddings=True)
    assert tied.lm_head is None and torch.equal(tied.head_weight, table)


def test_init_from_llama_refuses_other_families(tiny_qwen_dir):
    with pytest.raises(CheckpointError, match="'qwen2' checkpoint, not Llama"):
        init_from_llama(tiny_qwen_dir)


def test_random_model_builds_the_card_shape_in_the_target_dtype():
    a = random_model(TINY_SHAPE, dtype=torch.bfloat16, device="cpu", seed=5)
    b = random_model(TINY_SHAPE, dtype=torch.bfloat16, device="cpu", seed=5)
    assert {p.dtype for p in a.parameters()} == {torch.bfloat16}
    assert sum(p.numel() for p in a.parameters()) == parameter_count(TINY_SHAPE)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
    assert a.config.to_shape() == EvoConfig.from_shape(TINY_SHAPE).to_shape()


def test_the_xl_shape_is_the_derived_one():
    shape = get_card("evo-8b").shape
    assert proportional_xl() == (40, 2024)  # rounded in the card to 40 x 2048 (32 heads of 64)
    assert (shape["n_layers"], shape["d_model"], shape["n_heads"], shape["vocab_size"]) == (40, 2048, 32, 64000)
    assert parameter_count(shape) == pytest.approx(8.5e9, rel=0.005)
    # The same FFN ratio at S's depth and width gives the paper's 1.3B.
    small = dict(shape, n_layers=24, d_model=1024, n_heads=16, n_kv_heads=16, d_ff=round(1024 * 31232 / 2048))
    assert parameter_count(small) == pytest.approx(1.3e9, rel=0.02)
    with torch.device("meta"):
        model = EvoForLatentFlow(EvoConfig.from_shape(shape))
    assert sum(p.numel() for p in model.parameters()) == parameter_count(shape)


def test_a_shared_prefix_cache_gives_the_same_latent_readout_as_the_full_pass():
    """The ELBO encodes the context once and lets every noise level attend to it: same numbers."""
    model = random_model(TINY_SHAPE, dtype=torch.float32, device="cpu", seed=9)
    context, continuation = torch.tensor([0, 33, 71, 5, 400, 21]), torch.tensor([8, 90, 12, 7, 66])
    p, n = context.numel(), continuation.numel()
    gen = torch.Generator().manual_seed(0)
    z, t = torch.randn(3, n, model.config.hidden_size, generator=gen), torch.rand(3, n, generator=gen)
    positions, starts = torch.arange(p, p + n), torch.tensor([p, p, p, p + 3, p + 3])
    with torch.no_grad():
        full_ar, full = model.latent_forward(torch.cat([context, continuation]).expand(3, -1), z, t, positions, starts)
        part_ar, part = model.latent_forward(continuation.expand(3, -1), z, t, positions, starts,
                                             prefix=model.encode_prefix(context))
    assert torch.allclose(part.logits, full.logits, atol=1e-5)
    assert torch.allclose(part_ar, full_ar[:, p:], atol=1e-5)
