"""Objective, sampler and scorer agree: a tiny Evo trained on a handful of sentences regenerates one
from its prefix and scores it above a shuffled copy, under both likelihood estimators.

The recipe is the appendix's (dropout, EMA, annealed AR/denoising weights) in the labelled block
layout (block_length=8, trained and decoded alike): in 300 steps this 2 x 64 model learns to
regenerate in blocks, while a whole 27-token canvas from noise (the default layout) needs more
training than a unit test affords."""

from __future__ import annotations

import pytest
import torch

from evo_eval.decoding.base import make_generator
from evo_eval.decoding.evo import EvoSampler, EvoSamplerConfig
from evo_eval.models.evo import TINY_SHAPE, random_model
from evo_eval.scoring.evo import EvoScorer, EvoScorerConfig
from evo_eval.tiny import TRAINING_LINES
from evo_eval.training import FinetuneConfig, ObjectiveWeights, finetune

SENTENCES = [TRAINING_LINES[i] for i in (1, 4, 7, 8)]
PREFIX = 5  # tokens of the sentence given as the prompt (BOS included); every prefix is unique

@pytest.fixture(scope="module")
def trained(tokenizer_dir):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    sequences = [tokenizer.encode(s) + [tokenizer.eos_token_id] for s in SENTENCES]
    model = random_model(dict(TINY_SHAPE, vocab_size=len(tokenizer)), dtype=torch.float32, device="cpu", seed=0)
    config = FinetuneConfig(steps=300, lr=3e-3, warmup=20, batch_size=8, block_length=8, weight_decay=0.0,
                            weights=ObjectiveWeights(label_smoothing=0.0), seed=0)
    history = finetune(model, sequences, config, pad_id=tokenizer.pad_token_id)
    return model, sequences, history


def test_the_objective_goes_down(trained):
    _, _, history = trained
    first, last = history[0], history[-1]
    assert last["ar"] < 0.2 * first["ar"] and last["denoise"] < 0.2 * first["denoise"]
    assert last["loss"] < 0.1 * first["loss"]


@pytest.mark.parametrize("schedule", ["learned", "fixed:1"])
def test_regenerates_a_training_sentence_from_its_prefix(trained, schedule):
    model, sequences, _ = trained
    sequence = sequences[1]
    prompt, rest = torch.tensor(sequence[:PREFIX]), sequence[PREFIX:]
    config = EvoSamplerConfig(max_new_tokens=len(rest) + 8, block_length=8, schedule=schedule,
                              eos_token_id=sequence[-1])
    out = EvoSampler().sample(model, prompt, config, generator=make_generator(0))
    assert out.tokens.tolist() == rest[:-1]  # up to (not including) the end-of-sequence token
    if schedule == "learned":
        # Memorised tokens are confident: the learned times give them few refinement steps, so the
        # request costs far less than refining every token K_max times (fixed:1, 20 per block).
        extra = out.stats.extra
        assert extra["mean_t"] < 0.25 and extra["canvas"] == 8
        assert out.stats.nfe < 0.5 * extra["blocks"] * config.k_max


@pytest.mark.parametrize("estimator", ["ar", "elbo"])
def test_scores_a_training_sentence_above_its_shuffle(trained, estimator):
    model, sequences, _ = trained
    config = EvoScorerConfig(estimator=estimator, mc_num=16, batch=17, block_length=8)
    for sequence in sequences:
        context, continuation = torch.tensor(sequence[:1]), torch.tensor(sequence[1:])
        shuffled = continuation[torch.randperm(continuation.numel(), generator=torch.Generator().manual_seed(0))]
        real = EvoScorer().score(model, context, continuation, config, generator=make_generator(1))
        fake = EvoScorer().score(model, context, shuffled, config, generator=make_generator(1))
        assert real.logprob > fake.logprob + 50


def test_a_run_is_reproducible_whatever_ran_before_it():
    """Dropout (0.1, the paper's) draws from torch's global generator: finetune seeds it from
    config.seed, so two runs agree even when the global state differs before them, and it is restored."""
    sequences = [[1, 5, 9, 13, 2], [1, 7, 11, 2]]
    config = FinetuneConfig(steps=3, lr=1e-3, warmup=1, batch_size=2, block_length=4, seed=0)
    weights = []
    for before in (1, 2):
        torch.manual_seed(before)
        model = random_model(TINY_SHAPE, dtype=torch.float32, device="cpu", seed=0)
        assert model.config.dropout == 0.1
        torch.manual_seed(before)
        state = torch.random.get_rng_state()
        finetune(model, sequences, config, pad_id=0)
        assert torch.equal(torch.random.get_rng_state(), state)  # the caller's generator is untouched
        weights.append(torch.cat([p.detach().flatten() for p in model.parameters()]))
    assert torch.equal(weights[0], weights[1])
