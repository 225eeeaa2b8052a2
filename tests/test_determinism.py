"""Determinism: the same card, seed and inputs give identical generations and scores, run after run.

End to end, through `evo-eval run` in two processes: the AR path (lm-eval's HF backend, sampling on
so that the seed matters) and Evo. Per family, through each adapter: Evo, LLaDA, MDLM, BD3-LM and ARD
with sampling on, two fresh instances, the second with torch's global generator disturbed and the
requests in reverse order: every sampler draws only from the generator ``EvalAdapter`` seeds per
request, so neither what ran before nor the order of the requests may change an answer. Another
seed must change something, or the comparison would prove nothing.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch
import yaml
from lm_eval.api.instance import Instance

from evo_eval.store import to_json

# What differs between two runs of the same command: when, and how long (as in tests/test_resume.py).
TIMES = (("provenance", "written_at"), ("provenance", "wall_time_s"), ("lm_eval", "date"))


def comparable(path: Path) -> str:
    data = json.loads(path.read_text(encoding="utf-8"))
    for section, key in TIMES:
        data[section][key] = "<time>"
    for record in data["requests"]["per_request"]:
        record["wall_s"] = "<time>"
    return to_json(data)


def generations(path: Path) -> list:
    return [row["resps"] for row in json.loads(path.read_text())["samples"]["evo_gsm8k"]]


def run_twice_and_once_more(cli_processes, tmp_path: Path, args: list[str]) -> tuple[Path, Path, Path]:
    """The same command in two folders, then with another seed; returns the three results folders."""
    folders = []
    for name, extra in (("first", []), ("second", []), ("other-seed", ["--seed", "7"])):
        (tmp_path / name).mkdir()
        code, command = cli_processes.run(*args, "--output", "results", *extra, cwd=tmp_path / name)
        assert code == 0, command.stderr
        folders.append(tmp_path / name / "results" / "base")
    return tuple(folders)


@pytest.mark.slow
def test_the_ar_path_samples_the_same_twice(cli_processes, small_mirror, tiny_llama_dir, tmp_path):
    args = ["run", "--model", "llama3-8b", "--checkpoint", str(tiny_llama_dir), "--data-dir", str(small_mirror),
            "--tasks", "gsm8k", "--limit", "3", "--shots", "1", "--batch-size", "2", "--device", "cpu",
            "--bootstrap-iters", "0", "--gen-kwargs", "max_gen_toks=12,do_sample=true,temperature=1.0"]
    first, second, other = (f / "llama3-8b" / "gsm8k.json" for f in run_twice_and_once_more(cli_processes, tmp_path, args))
    assert comparable(first) == comparable(second)
    assert generations(first) != generations(other)


@pytest.mark.slow
def test_evo_samples_the_same_twice(cli_processes, small_mirror, tokenizer_dir, tmp_path):
    from evo_eval.tiny import build_tiny_checkpoint, tiny_card

    checkpoint = build_tiny_checkpoint("evo", tmp_path / "evo", tokenizer_dir=tokenizer_dir, seed=2)
    card = tiny_card("evo")
    card_file = tmp_path / f"{card.name}.yaml"
    fields = {k: v for k, v in card.to_dict().items() if k != "path"}
    card_file.write_text(yaml.safe_dump(fields, sort_keys=False), encoding="utf-8")
    args = ["run", "--model", str(card_file), "--checkpoint", str(checkpoint), "--data-dir", str(small_mirror),
            "--tasks", "gsm8k,arc_challenge", "--limit", "2", "--shots", "0", "--device", "cpu",
            "--bootstrap-iters", "0", "--gen-kwargs", "max_gen_toks=8", "--model-args", "k_max=3,mc_num=2,batch=2"]
    first, second, other = (f / card.name for f in run_twice_and_once_more(cli_processes, tmp_path, args))
    for benchmark in ("gsm8k", "arc_challenge"):
        assert comparable(first / f"{benchmark}.json") == comparable(second / f"{benchmark}.json"), benchmark
    assert comparable(first / "arc_challenge.json") != comparable(other / "arc_challenge.json")


# ---- every adapter, request by request -------------------------------------------------------------------


def _family(name: str, checkpoint: Path):
    """A function building the adapter of a tiny checkpoint of family ``name`` with a given run seed."""
    if name == "evo":
        from evo_eval.adapters.evo import EvoAdapter as cls
        from evo_eval.tiny import tiny_card

        settings = dict(card=tiny_card("evo"), k_max=3, mc_num=3, batch=3, temperature=0.9)
    elif name == "llada":
        from evo_eval.adapters.llada import LLaDAAdapter as cls
        from evo_eval.tiny import tiny_card

        settings = dict(card=tiny_card("llada"), gen_length=8, steps=8, block_length=8, mc_num=3, batch=3, temperature=0.9)
    elif name in ("mdlm", "bd3lm"):
        from evo_eval.adapters.bd3lm import BD3LMAdapter
        from evo_eval.adapters.mdlm import MDLMAdapter

        cls = MDLMAdapter if name == "mdlm" else BD3LMAdapter
        settings = dict(card=f"{name}-7b", steps=8, mc_num=3, batch=3)
    else:
        from evo_eval.adapters.ard import ARDAdapter as cls
        from evo_eval.tiny import tiny_card

        settings = dict(card=tiny_card("ard"), gen_timesteps=4, mc_num=3, batch=3)
    return lambda run_seed: cls(pretrained=str(checkpoint), device="cpu", seed=run_seed, max_gen_toks=8, **settings)


def _requests(benchdata: Path) -> tuple[list[Instance], list[Instance]]:
    docs = [json.loads(line) for line in (benchdata / "gsm8k" / "test.jsonl").read_text().splitlines()[:3]]
    generate = [Instance("generate_until", doc, (f"Question: {doc['question']}\nAnswer:",
                                                 {"until": ["Question:"], "max_gen_toks": 8}), 0, ("gsm8k", i, 1))
                for i, doc in enumerate(docs)]
    arc = json.loads((benchdata / "arc_challenge" / "ARC-Challenge-Test.jsonl").read_text().splitlines()[0])
    context = f"Question: {arc['question']['stem']}\nAnswer:"
    score = [Instance("loglikelihood", arc, (context, " " + c["text"]), i, ("arc_challenge", 0, 1))
             for i, c in enumerate(arc["question"]["choices"])]
    return generate, score


def _answers(lm, generate, score, reverse: bool = False):
    order = (lambda xs: xs[::-1]) if reverse else (lambda xs: xs)
    texts = order(lm.generate_until(order(generate)))
    logprobs = order(lm.loglikelihood(order(score)))
    nfe = sorted((r.request_type, r.doc_id, r.nfe) for r in lm.records)
    return texts, logprobs, nfe


@pytest.mark.parametrize("family", ["evo", "llada", "mdlm", "bd3lm", "ard"])
def test_every_sampler_is_seeded_per_request(family, tiny_checkpoint, benchdata):
    make = _family(family, tiny_checkpoint(family, seed=3))
    generate, score = _requests(benchdata)
    first = _answers(make(1234), generate, score)
    torch.manual_seed(99)
    torch.rand(1000)  # whatever the process drew before must not matter
    second = _answers(make(1234), generate, score, reverse=True)
    assert first == second
    texts, logprobs, _ = _answers(make(7), generate, score)
    assert (texts, logprobs) != first[:2], "another seed changed nothing: the comparison above proves nothing"
