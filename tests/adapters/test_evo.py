"""lm-eval backend ``evo``: registration beside the built-ins, requests end to end, settings, errors."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch
from lm_eval.api.instance import Instance

from evo_eval.errors import CheckpointError
from evo_eval.tiny import tiny_card


@pytest.fixture(scope="module")
def tiny_evo_dir(tiny_checkpoint):
    return tiny_checkpoint("evo", seed=4)


@pytest.fixture(scope="module")
def adapter(tiny_evo_dir):
    from evo_eval.adapters.evo import EvoAdapter

    return EvoAdapter(pretrained=str(tiny_evo_dir), card=tiny_card("evo"), device="cpu", max_gen_toks=12,
                      k_max=4, mc_num=4, batch=5)


def _request(kind, args, doc_id=0):
    return Instance(request_type=kind, doc={}, arguments=args, idx=0, metadata=("evo_test", doc_id, 1))


def test_registered_as_evo_and_the_builtin_backends_stay_visible():
    import evo_eval.adapters.evo as module
    from lm_eval.api.registry import get_model
    from lm_eval.models.huggingface import HFLM

    assert get_model("evo") is module.EvoAdapter
    assert get_model("hf") is HFLM


def test_loglikelihood_through_the_elbo_and_the_ar_limit(adapter, tiny_evo_dir):
    from evo_eval.adapters.evo import EvoAdapter
    from evo_eval.scoring.ar import ar_logprob

    requests = [_request("loglikelihood", ("The quick brown", " fox")),
                _request("loglikelihood", ("The quick brown", " dog"), 1)]
    elbo = adapter.loglikelihood(requests)
    assert len(elbo) == 2 and all(isinstance(v, float) and v < 0 for v, _ in elbo)
    assert elbo == adapter.loglikelihood(requests)  # seeded per request
    assert {r.method for r in adapter.records[-2:]} == {"evo_elbo"} and adapter.records[-1].nfe == 1 + 1
    exact = EvoAdapter(pretrained=str(tiny_evo_dir), card=tiny_card("evo"), device="cpu", estimator="ar")
    context, continuation = exact._encode_pair("The quick brown", " fox")
    logprob, _ = exact.loglikelihood(requests[:1])[0]
    expected, _ = ar_logprob(exact.model, torch.tensor(context), torch.tensor(continuation))
    assert logprob == pytest.approx(expected) and exact.records[-1].method == "evo_ar_limit"
    rolling = exact.loglikelihood_rolling([_request("loglikelihood_rolling", ("A man is sitting on a roof.",))])
    assert rolling[0] < 0


def test_generate_until_stops_and_records_the_work(adapter):
    texts = adapter.generate_until([_request("generate_until", ("Question: 2 + 3?\nAnswer:", {"until": ["\n"]}))])
    assert len(texts) == 1 and "\n" not in texts[0]
    record = adapter.records[-1]
    assert record.method == "evo" and record.nfe >= 1 and 1 <= record.new_tokens <= 12
    assert record.extra["schedule"] == "learned" and record.extra["k_max"] == 4
    settings = adapter.decoding_settings()
    assert settings["sampler_config"]["k_max"] == 4 and settings["likelihood_config"]["estimator"] == "elbo"


def test_model_args_win_over_the_cards_per_benchmark_settings(tiny_evo_dir):
    from evo_eval.adapters.evo import EvoAdapter

    card = tiny_card("evo")
    card = replace(card, decoding={"default": card.decoding["default"], "tasks": {"gsm8k": {"schedule": "fixed:1"}}})
    plain = EvoAdapter(pretrained=str(tiny_evo_dir), card=card, device="cpu")
    ablated = EvoAdapter(pretrained=str(tiny_evo_dir), card=card, device="cpu", schedule="fixed:0.5")
    plain, ablated = (lm.with_settings(benchmark="gsm8k") for lm in (plain, ablated))
    assert plain.sampler_config_for({}).schedule == "fixed:1"
    assert ablated.sampler_config_for({}).schedule == "fixed:0.5"
    assert ablated.sampler_config_for({"temperature": 0.0}).temperature == 0.0


def test_a_checkpoint_that_does_not_fit_is_one_line(tiny_evo_dir, tmp_path):
    from evo_eval.adapters.evo import EvoAdapter
    from evo_eval.cards import get_card

    with pytest.raises(CheckpointError, match="card evo-8b has n_layers=40"):
        EvoAdapter(pretrained=str(tiny_evo_dir), card=get_card("evo-8b"), device="cpu")
    with pytest.raises(CheckpointError, match="no public checkpoint"):
        EvoAdapter(card=get_card("evo-8b"), device="cpu")
    # A 300-token model saved with the 512-token tokenizer: the pair cannot belong together.
    from transformers import AutoTokenizer

    from evo_eval.models.evo import TINY_SHAPE, random_model

    narrow = tmp_path / "narrow"
    random_model(dict(TINY_SHAPE, vocab_size=300), dtype=torch.float32, device="cpu").save_pretrained(narrow)
    AutoTokenizer.from_pretrained(tiny_evo_dir).save_pretrained(narrow)
    small = replace(tiny_card("evo"), shape=dict(tiny_card("evo").shape, vocab_size=300))
    with pytest.raises(CheckpointError, match="has 512 tokens but the model only 300"):
        EvoAdapter(pretrained=str(narrow), card=small, device="cpu")
    with pytest.raises(CheckpointError, match="vocab_size=300 but card evo-tiny has vocab_size=512"):
        EvoAdapter(pretrained=str(narrow), card=tiny_card("evo"), device="cpu")


def test_the_ablation_perplexity_task_runs_on_the_real_data(adapter, benchdata, tmp_path, tiny_evo_dir):
    """evo_ppl through lm-eval's evaluator on a HellaSwag mirror: word perplexity is exp(-sum ll / words)."""
    import lm_eval
    from lm_eval.tasks import TaskManager

    from evo_eval.adapters.evo import EvoAdapter
    from evo_eval.ablation import ppl_document
    from evo_eval.data.mirror import import_mirror
    from evo_eval.paths import tasks_dir

    mirror = tmp_path / "data"
    import_mirror(benchdata, mirror, ["hellaswag"])
    manager = TaskManager(include_path=str(tasks_dir()), include_defaults=False, metadata={"data_dir": str(mirror)})
    lm = EvoAdapter(pretrained=str(tiny_evo_dir), card=tiny_card("evo"), device="cpu", estimator="ar")
    out = lm_eval.simple_evaluate(model=lm, tasks=["evo_ppl"], task_manager=manager, limit=2, log_samples=True,
                                  bootstrap_iters=0)
    samples = out["samples"]["evo_ppl"]
    assert len(samples) == 2
    assert samples[0]["arguments"][0][0] == "A man is sitting on a roof. he starts pulling up roofing on a roof."
    lls = [float(s["resps"][0][0]) for s in samples]
    words = [len(ppl_document(s["doc"]).split()) for s in samples]
    expected = math.exp(-sum(lls) / sum(words))
    assert out["results"]["evo_ppl"]["word_perplexity,none"] == pytest.approx(expected, rel=1e-6)


def test_ablation_variants_share_one_loaded_model(adapter):
    from evo_eval.ablation import ablation_variants

    variants = {v["slug"]: adapter.with_settings(**v["overrides"]) for v in ablation_variants()}
    assert variants["fixed-0"].model is adapter.model and variants["fixed-0"].sampler_config.schedule == "fixed:0"
    assert variants["no-time"].scorer_config.time_conditioning is False
    assert variants["no-time"].sampler_config.schedule == "none"
    assert variants["fixed-0"].sampler_config.k_max == 4  # the adapter's own model_args are kept
    assert adapter.sampler_config.schedule == "learned" and adapter.scorer_config.time_conditioning is True
    assert variants["fixed-0"].with_settings(benchmark="gsm8k").sampler_config_for({}).schedule == "fixed:0"
