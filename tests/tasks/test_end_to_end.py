"""Our tasks through lm-eval's own evaluator on a tiny local model, reading only the mirror."""

from __future__ import annotations

import pytest

from evo_eval.suites import resolve


@pytest.fixture(scope="module")
def results(task_manager, tiny_llama_dir):
    """One simple_evaluate per benchmark with the paper's shots, merged, as run.py does it."""
    import lm_eval
    from lm_eval.models.huggingface import HFLM

    lm = HFLM(pretrained=str(tiny_llama_dir), dtype="float32", device="cpu", batch_size=16)
    merged: dict = {}
    for entry in resolve("all", "base", tasks=["mmlu", "arc_challenge", "gsm8k"]):
        out = lm_eval.simple_evaluate(model=lm, tasks=[entry.task], num_fewshot=entry.shots,
                                      task_manager=task_manager, limit=2, gen_kwargs={"max_gen_toks": 8},
                                      bootstrap_iters=0, log_samples=True)
        for section in ("results", "groups", "n-shot", "n-samples", "samples"):
            merged.setdefault(section, {}).update(out.get(section, {}))
    return merged


def test_scores_for_every_leaf_and_the_group(results):
    leaves = [name for name in results["results"] if name.startswith("evo_mmlu_")]
    assert len(leaves) == 57
    for name in ("evo_arc_challenge", "evo_gsm8k", *leaves):
        assert results["n-samples"][name]["effective"] == 2
    assert 0.0 <= results["results"]["evo_arc_challenge"]["acc_norm,none"] <= 1.0
    assert 0.0 <= results["results"]["evo_gsm8k"]["exact_match,flexible-extract"] <= 1.0
    group = sum(results["results"][name]["acc,none"] for name in leaves) / len(leaves)  # 2 docs per leaf
    assert results["groups"]["evo_mmlu"]["acc,none"] == pytest.approx(group)
    assert results["n-shot"]["evo_mmlu_anatomy"] == 5 and results["n-shot"]["evo_arc_challenge"] == 25
    assert results["n-shot"]["evo_gsm8k"] == 4


def test_prompts_come_from_the_mirror(results):
    gsm8k = results["samples"]["evo_gsm8k"][0]
    prompt = gsm8k["arguments"][0][0]
    assert prompt.endswith("Question: Janet’s ducks lay 16 eggs per day. She eats three for breakfast every "
                           "morning and bakes muffins for her friends every day with four. She sells the remainder "
                           "at the farmers' market daily for $2 per fresh duck egg. How much in dollars does she "
                           "make every day at the farmers' market?\nAnswer:")
    assert prompt.count("\nAnswer:") == 5 and prompt.count("#### ") == 4
    anatomy = results["samples"]["evo_mmlu_anatomy"][0]["arguments"][0][0]
    assert anatomy.startswith("The following are multiple choice questions (with answers) about anatomy.\n\n"
                              "What is the embryological origin of the hyoid bone?\nA. The first pharyngeal arch\n")
    assert anatomy.count("\nAnswer:") == 6
    arc = results["samples"]["evo_arc_challenge"][0]["arguments"]
    assert arc[0][0].count("Question: ") == 26 and [a[1] for a in arc][0].startswith(" ")
