"""The AR sampler: greedy equals transformers' generate, EOS/stop end early and are counted, sampling is seeded."""

from __future__ import annotations

import pytest
import torch

from evo_eval.decoding import get_sampler
from evo_eval.decoding.base import make_generator
from evo_eval.models.llama import TINY_SHAPE, random_model
from evo_eval.models.llama_checkpoint import load_pretrained

PROMPT = torch.tensor([5, 77, 301, 12, 9, 250, 33, 18, 402, 61, 7])


@pytest.fixture(scope="module")
def sampler():
    return get_sampler("ar")


@pytest.mark.parametrize("arch", ["llama", "qwen2"])
def test_greedy_equals_transformers_generate(arch, sampler, tiny_llama_dir, tiny_qwen_dir):
    from transformers import AutoModelForCausalLM

    folder = tiny_llama_dir if arch == "llama" else tiny_qwen_dir
    reference = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    model = load_pretrained(str(folder), dtype=torch.float32, device="cpu")
    expected = reference.generate(PROMPT[None], max_new_tokens=24, do_sample=False, eos_token_id=None,
                                  pad_token_id=0)[0, PROMPT.numel():]
    out = sampler.sample(model, PROMPT, sampler.Config(max_new_tokens=24))
    assert out.tokens.tolist() == expected.tolist()


def test_fixed_length_counts_every_forward(sampler):
    model = random_model(TINY_SHAPE, dtype=torch.float32, device="cpu")
    out = sampler.sample(model, PROMPT, sampler.Config(max_new_tokens=17, eos_token_id=None))
    t = PROMPT.numel()
    assert out.tokens.numel() == 17 and out.stats.new_tokens == 17
    assert out.stats.nfe == 17  # one prefill + 16 one-token steps
    assert out.stats.prompt_tokens == t
    assert out.stats.active_token_steps == t + 16
    assert out.stats.tokens_per_forward == 1.0
    # Step k runs the token at position t + k and attends to positions 0..t+k (t + k + 1 of them).
    positions = sum(t + k + 1 for k in range(16))
    assert out.stats.extra["kv_bytes_read"] == positions * model.kv_bytes_per_position()
    assert out.stats.extra["mode"] == "eager"


def test_eos_truncates_and_stops_early(sampler):
    model = random_model(TINY_SHAPE, dtype=torch.float32, device="cpu", seed=1)
    free = sampler.sample(model, PROMPT, sampler.Config(max_new_tokens=30)).tokens.tolist()
    k = next(i for i in range(3, 30) if free[i] not in free[:i])  # first occurrence after a few tokens
    out = sampler.sample(model, PROMPT, sampler.Config(max_new_tokens=30, eos_token_id=free[k]))
    assert out.tokens.tolist() == free[:k]
    assert out.stats.new_tokens == k
    assert out.stats.nfe == k + 1  # the forward that produced EOS is counted, none after it


def test_stop_callable_sees_generated_ids_only(sampler):
    model = random_model(TINY_SHAPE, dtype=torch.float32, device="cpu")
    seen = []

    def stop(ids: torch.Tensor) -> bool:
        seen.append(ids.numel())
        return ids.numel() >= 5

    out = sampler.sample(model, PROMPT, sampler.Config(max_new_tokens=20), stop=stop)
    assert out.tokens.numel() == 5 and out.stats.nfe == 5
    assert seen == [1, 2, 3, 4, 5]


def test_sampling_is_deterministic_given_the_generator(sampler):
    model = random_model(TINY_SHAPE, dtype=torch.float32, device="cpu")
    config = sampler.Config(max_new_tokens=24, do_sample=True, temperature=1.0, top_p=0.95)
    a = sampler.sample(model, PROMPT, config, generator=make_generator(11)).tokens
    b = sampler.sample(model, PROMPT, config, generator=make_generator(11)).tokens
    c = sampler.sample(model, PROMPT, config, generator=make_generator(12)).tokens
    assert torch.equal(a, b) and not torch.equal(a, c)
    greedy = sampler.sample(model, PROMPT, sampler.Config(max_new_tokens=24)).tokens
    nucleus_of_one = sampler.sample(model, PROMPT, sampler.Config(max_new_tokens=24, do_sample=True, temperature=1.0,
                                                                  top_p=1e-6), generator=make_generator(11)).tokens
    top1 = sampler.sample(model, PROMPT, sampler.Config(max_new_tokens=24, do_sample=True, temperature=1.0, top_k=1),
                          generator=make_generator(11)).tokens
    assert torch.equal(nucleus_of_one, greedy) and torch.equal(top1, greedy)


def test_sessions_are_reused_across_prompt_lengths(sampler):
    model = random_model(TINY_SHAPE, dtype=torch.float32, device="cpu")
    long_prompt = torch.arange(1, 300)
    first = sampler.sample(model, long_prompt, sampler.Config(max_new_tokens=8)).tokens
    sampler.sample(model, PROMPT, sampler.Config(max_new_tokens=8))
    assert len(model._sessions) == 1  # the 512-position session serves the short prompt too
    again = sampler.sample(model, long_prompt, sampler.Config(max_new_tokens=8)).tokens
    assert torch.equal(first, again)  # nothing left over from the previous request leaks in


def test_refuses_foreign_models_and_overlong_requests(sampler):
    with pytest.raises(TypeError, match="LlamaDecoder"):
        sampler.sample(torch.nn.Linear(2, 2), PROMPT, sampler.Config(max_new_tokens=4))
    model = random_model({**TINY_SHAPE, "max_seq_len": 32}, dtype=torch.float32, device="cpu")
    with pytest.raises(ValueError, match="exceeds the model's 32 positions"):
        sampler.sample(model, PROMPT, sampler.Config(max_new_tokens=30))
    with pytest.raises(ValueError, match="needs a CUDA device"):
        sampler.sample(model, PROMPT, sampler.Config(max_new_tokens=4, mode="graph"))
