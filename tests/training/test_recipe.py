"""The appendix's training recipe (dropout, EMA, annealed loss weights) and the ablation variants'
training switches: each switch changes what is trained, and two variants trained alike otherwise
end up with different perplexities."""

from __future__ import annotations

import math

import pytest
import torch

from evo_eval.ablation import VARIANTS, variants
from evo_eval.decoding.base import make_generator
from evo_eval.models.evo import TINY_SHAPE, random_model
from evo_eval.scoring.evo import EvoScorer, EvoScorerConfig
from evo_eval.training import FinetuneConfig, ObjectiveWeights, evo_objective, finetune, start_model, variant_config
from evo_eval.training.finetune import ema_decay_at, weights_at

IDS = torch.randint(3, 500, (2, 12), generator=torch.Generator().manual_seed(0))


@pytest.fixture()
def model():
    return random_model(TINY_SHAPE, dtype=torch.float32, device="cpu", seed=1).requires_grad_(True)


def test_recipe_defaults_are_the_appendix():
    config = FinetuneConfig()
    assert config.ema_decay == 0.9999 and config.block_length == 0 and config.grad_clip == 1.0
    assert (config.betas, config.eps, config.weight_decay, config.weights.label_smoothing) == ((0.9, 0.95), 1e-8, 0.1, 0.1)
    assert random_model(TINY_SHAPE, dtype=torch.float32, device="cpu").config.dropout == 0.1
    # AR and denoising weights annealed from 1 over the warm-up; the flow weight is left alone.
    config = FinetuneConfig(warmup=10, aux_final=0.1)
    assert [weights_at(s, config).ar for s in (0, 5, 10, 50)] == pytest.approx([1.0, 0.55, 0.1, 0.1])
    assert weights_at(5, config).denoise == pytest.approx(0.55) and weights_at(5, config).flow == 1.0
    # The EMA's decay warms up, then is the paper's 0.9999.
    assert ema_decay_at(0, 0.9999) == pytest.approx(0.1) and ema_decay_at(10**6, 0.9999) == 0.9999


def test_dropout_acts_in_training_only(model):
    model.train()
    a, b = model.ar_logits(IDS), model.ar_logits(IDS)
    assert not torch.allclose(a, b)
    model.eval()
    with torch.no_grad():
        assert torch.equal(model.ar_logits(IDS), model.ar_logits(IDS))


def test_finetune_without_pad_id_on_a_random_model_config(model):
    history = finetune(model, [[5, 6, 7, 8], [9, 10]], FinetuneConfig(steps=2, batch_size=2, warmup=1))
    assert len(history) == 2 and all(math.isfinite(h["loss"]) for h in history)
    assert not model.training


def test_variant_switches_change_what_is_trained(model):
    def parts(**switches):
        return evo_objective(model, IDS, generator=torch.Generator().manual_seed(3), **switches).parts

    full, ar_only, diff_only = parts(), parts(fixed_t=0.0), parts(fixed_t=1.0)
    weights = ObjectiveWeights()
    assert ar_only["denoise"] == ar_only["flow"] == ar_only["time"] == 0.0
    assert ar_only["loss"] == pytest.approx(weights.ar * ar_only["ar"])
    assert diff_only["time"] == 0.0 and diff_only["loss"] == pytest.approx(
        diff_only["denoise"] + diff_only["flow"])  # no AR term, no time head
    assert parts(time_head=False)["time"] == 0.0 and full["time"] > 0
    assert parts(time_conditioning=False)["denoise"] != full["denoise"]
    assert parts(fixed_t=0.5)["denoise"] != full["denoise"]  # noise levels from (0, 0.5] only


def test_every_trainable_variant_has_a_config_and_a_starting_model():
    for v in VARIANTS:
        if v.slug == "full":
            continue
        config = variant_config(v.slug, steps=3)
        for key, value in v.training.items():
            if key != "pretrained_init":
                assert getattr(config, key) == value
        model = start_model(v.slug, TINY_SHAPE)
        assert model.config.tie_word_embeddings is bool(v.shape.get("tie_embeddings", True))
    with pytest.raises(ValueError, match="fixes fixed_t"):
        variant_config("fixed-0", fixed_t=0.5)
    assert [v.slug for v in variants("3")] == ["no-time", "fixed-0", "fixed-1", "fixed-0.5", "entropy", "full"]


def test_two_variants_trained_alike_otherwise_give_different_perplexity(tokenizer_dir):
    """The full model and the AR-only variant, the same data, seed and steps: their perplexities
    differ under both likelihoods (an inference-time override on one checkpoint could not do that
    for the AR limit, which no decoding setting touches)."""
    from transformers import AutoTokenizer

    from evo_eval.tiny import TRAINING_LINES

    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    sequences = [tok.encode(line) + [tok.eos_token_id] for line in TRAINING_LINES[:6]]
    held_out = torch.tensor(tok.encode(TRAINING_LINES[6]))
    shape = dict(TINY_SHAPE, vocab_size=len(tok))

    def perplexities(slug):
        model = start_model(slug, shape, seed=0)
        finetune(model, sequences, variant_config(slug, steps=40, lr=3e-3, warmup=5, batch_size=4))
        out = {}
        for estimator in ("ar", "elbo"):
            score = EvoScorer().score(model, held_out[:1], held_out[1:], EvoScorerConfig(estimator=estimator, mc_num=8),
                                      generator=make_generator(0))
            out[estimator] = -score.logprob / (held_out.numel() - 1)  # log-perplexity per token
        return out

    full, ar_only = perplexities("full"), perplexities("fixed-0")
    assert all(math.isfinite(v) for v in (*full.values(), *ar_only.values()))
    assert abs(full["ar"] - ar_only["ar"]) > 0.01 and abs(full["elbo"] - ar_only["elbo"]) > 0.01


def test_the_two_module_variant_has_its_own_ar_network(tmp_path):
    from evo_eval.decoding.evo import EvoSampler, EvoSamplerConfig
    from evo_eval.models.evo import load_evo
    from evo_eval.tiny import tiny_card
    from evo_eval.models.evo_config import parameter_count

    model = start_model("two-module", TINY_SHAPE, seed=2)
    shape = dict(TINY_SHAPE, two_module=True)
    assert model.ar_model is not None
    assert sum(p.numel() for p in model.parameters()) == parameter_count(shape)
    ids = IDS[:1]
    with torch.no_grad():
        before = model.ar_logits(ids)
        for p in model.model.layers.parameters():  # the latent-flow network changes; the AR pathway must not
            p.add_(0.1)
        assert torch.equal(model.ar_logits(ids), before)
        prompt = torch.tensor([0, 41, 7, 300])
        out = EvoSampler().sample(model, prompt, EvoSamplerConfig(max_new_tokens=8, schedule="fixed:0", temperature=0.0),
                                  generator=make_generator(0))
        seq = prompt.clone()
        for _ in range(8):
            seq = torch.cat([seq, model.ar_logits(seq)[0, -1].argmax()[None]])
    assert out.tokens.tolist() == seq[4:].tolist()
    # A learned-schedule canvas counts the AR module's evaluation beside the latent flow's sketch.
    learned = EvoSampler().sample(model, prompt, EvoSamplerConfig(max_new_tokens=8, k_max=4), generator=make_generator(0))
    assert learned.stats.nfe >= 2
    model.save_pretrained(tmp_path / "two")
    from dataclasses import replace

    card = replace(tiny_card("evo"), shape=shape)
    again = load_evo(tmp_path / "two", card=card)
    assert again.ar_model is not None and torch.equal(again.ar_logits(ids), model.ar_logits(ids))
