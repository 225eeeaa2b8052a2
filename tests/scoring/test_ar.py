"""The exact AR log-likelihood: the chain rule from one forward, for every kind of causal model."""

from __future__ import annotations

import pytest
import torch

from evo_eval.scoring.ar import ARScorer, ar_logprob, causal_logits

CONTEXT = torch.tensor([0, 44, 301, 7])
CONTINUATION = torch.tensor([12, 150, 9])

@pytest.fixture(scope="module")
def llama(tiny_llama_dir):
    from transformers import LlamaForCausalLM

    return LlamaForCausalLM.from_pretrained(tiny_llama_dir).eval()


def _by_hand(model, context, continuation) -> float:
    """One token at a time: log p(c_j | context, c_<j) from a fresh forward per token."""
    total, prefix = 0.0, context
    with torch.no_grad():
        for token in continuation:
            logits = model(prefix[None]).logits[0, -1]
            total += float(torch.log_softmax(logits, -1)[token])
            prefix = torch.cat([prefix, token[None]])
    return total


def test_equals_the_token_by_token_chain_rule(llama):
    logprob, greedy = ar_logprob(llama, CONTEXT, CONTINUATION)
    assert logprob == pytest.approx(_by_hand(llama, CONTEXT, CONTINUATION), abs=1e-4)
    assert greedy is False
    out = ARScorer().score(llama, CONTEXT, CONTINUATION, ARScorer.Config())
    assert (out.logprob, out.method, out.nfe) == (pytest.approx(logprob), "ar_exact", 1)


def test_is_greedy_when_the_continuation_is_the_argmax_chain(llama):
    prefix = CONTEXT
    with torch.no_grad():
        for _ in range(4):
            prefix = torch.cat([prefix, llama(prefix[None]).logits[0, -1].argmax()[None]])
    logprob, greedy = ar_logprob(llama, CONTEXT, prefix[CONTEXT.numel():])
    assert greedy is True and logprob < 0


def test_every_causal_view_gives_the_same_score(llama, tiny_llama_dir):
    """transformers' .logits, the fast decoder's plain tensor and Evo's AR limit all reuse the scorer."""
    from evo_eval.models.evo import init_from_llama
    from evo_eval.models.llama_checkpoint import load_pretrained

    reference, _ = ar_logprob(llama, CONTEXT, CONTINUATION)
    fast = load_pretrained(str(tiny_llama_dir), dtype=torch.float32, device="cpu")
    evo = init_from_llama(llama).eval()
    for model in (fast, evo):
        assert ar_logprob(model, CONTEXT, CONTINUATION)[0] == pytest.approx(reference, abs=1e-4)
    assert causal_logits(evo, CONTEXT).shape == (4, llama.config.vocab_size)


def test_empty_context_is_refused_and_empty_continuation_scores_zero(llama):
    with pytest.raises(ValueError, match="at least one context token"):
        ar_logprob(llama, CONTEXT[:0], CONTINUATION)
    assert ar_logprob(llama, CONTEXT, CONTINUATION[:0]) == (0.0, True)
