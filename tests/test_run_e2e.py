"""The whole pipeline on the real data: `evo-eval run` over full suites with tiny local models, then `table`.

Every family runs the paper's whole suite for its stage (one document per leaf task, short
generations) through the real CLI, loaders, lm-eval tasks, journal and results store; the results
must be complete, resumable, and land in the comparison table.
"""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from evo_eval.cli import app
from evo_eval.suites import resolve

runner = CliRunner()
FAST = ["--limit", "1", "--device", "cpu", "--allow-code-exec", "--skip-missing", "--bootstrap-iters", "0",
        "--gen-kwargs", "max_gen_toks=6"]
NO_DATA = {"gpqa"}  # not in the publishers' files here: needs the gated hub dataset


def run(*args):
    result = runner.invoke(app, ["run", *args])
    return result.exit_code, result.stderr


def results_of(root, stage, model):
    folder = root / stage / model
    return {p.stem: json.loads(p.read_text()) for p in folder.glob("*.json")}


@pytest.fixture(scope="module")
def llama_run(tmp_path_factory, tiny_llama_dir, mirror):
    out = tmp_path_factory.mktemp("results")
    code, err = run("--model", "llama3-8b", "--checkpoint", str(tiny_llama_dir), "--data-dir", str(mirror),
                    "--output", str(out), "--batch-size", "8", *FAST)
    return out, code, err


def test_base_suite_runs_every_benchmark_with_the_papers_shots(llama_run):
    out, code, err = llama_run
    assert code == 0, err
    stored = results_of(out, "base", "llama3-8b")
    expected = {e.key: e for e in resolve("all", "base")}
    assert set(stored) == set(expected) - NO_DATA
    for key, record in stored.items():
        assert record["shots"] == expected[key].shots
        assert record["mode"] == expected[key].mode
        assert record["score"] is None or 0.0 <= record["score"] <= 1.0
        assert record["provenance"]["git"]["commit"] and record["provenance"]["data_dir"] != "hub"
        assert record["provenance"]["dtype"] == "float32"
        assert record["prompt_hashes"] and record["samples"]
    assert "GPQA is not in the data mirror" in err and "Idavidrein/gpqa" in err


def test_rerun_skips_finished_benchmarks_and_force_redoes_one(llama_run, tiny_llama_dir, mirror):
    out, _, _ = llama_run
    before = (out / "base" / "llama3-8b" / "mmlu.json").read_bytes()
    code, err = run("--model", "llama3-8b", "--checkpoint", str(tiny_llama_dir), "--data-dir", str(mirror),
                    "--output", str(out), *FAST)
    assert code == 0 and err.count("done earlier") == 14
    assert (out / "base" / "llama3-8b" / "mmlu.json").read_bytes() == before
    code, err = run("--model", "llama3-8b", "--checkpoint", str(tiny_llama_dir), "--data-dir", str(mirror),
                    "--output", str(out), "--tasks", "gsm8k", "--force", *FAST)
    assert code == 0 and "gsm8k" in err and "done earlier" not in err


def test_missing_data_without_skip_is_an_error_after_the_rest(llama_run, tiny_llama_dir, mirror):
    out, _, _ = llama_run
    code, err = run("--model", "llama3-8b", "--checkpoint", str(tiny_llama_dir), "--data-dir", str(mirror),
                    "--output", str(out), "--tasks", "gsm8k,gpqa", "--limit", "1", "--device", "cpu")
    assert code == 2
    assert err.strip().splitlines()[-1].startswith("error: GPQA is not in the data mirror")


def test_table_shows_the_run(llama_run):
    out, _, _ = llama_run
    result = runner.invoke(app, ["table", "--results", str(out), "--format", "csv"])
    assert result.exit_code == 0
    rows = {line.split(",")[1]: line.split(",") for line in result.stdout.splitlines()[1:]}
    llama = 3 + 5  # section, benchmark, flagged, then LLaMA3 8B is the sixth system
    assert rows["MMLU (5-shot)"][llama] != "" and rows["GPQA (5-shot)"][llama] == ""


def test_post_trained_suite_renders_through_the_chat_template(tmp_path, tiny_qwen_dir, sample_mirror):
    code, err = run("--model", "qwen2.5-7b-instruct", "--checkpoint", str(tiny_qwen_dir), "--data-dir",
                    str(sample_mirror), "--output", str(tmp_path), *FAST)
    stored = results_of(tmp_path, "instruct", "qwen2.5-7b-instruct")
    expected = {e.key for e in resolve("all", "instruct")}
    assert code == 0, err
    assert set(stored) == expected - NO_DATA
    sample = stored["gsm8k"]["samples"]["evo_gsm8k"][0]
    context = sample["arguments"][0][0]
    assert context.startswith("<|user|>") and context.endswith("<|assistant|>") and stored["gsm8k"]["chat_template"]
    # the post-trained scoring choices (suites.SCORING_CHOICES) are what ran, and are recorded
    assert stored["math"]["metric"] == "math_verify,none" and stored["math"]["scoring"].startswith("math_verify")
    assert stored["math"]["score"] is not None  # the evo_math group aggregates math_verify
    assert stored["humaneval"]["task"] == "evo_humaneval_instruct"
    assert stored["humaneval"]["samples"]["evo_humaneval_instruct"][0]["arguments"][0][0].endswith(
        "Here is the completed function:\n```python\n" + stored["humaneval"]["samples"]["evo_humaneval_instruct"][0]["doc"]["prompt"] + "\n")


@pytest.mark.slow
@pytest.mark.parametrize("family", ["evo", "llada", "mdlm", "bd3lm", "ard", "dream", "fast_dllm_v2"])
def test_every_family_runs_the_whole_suite_and_lands_in_the_table(family, tmp_path, tokenizer_dir, sample_mirror):
    from evo_eval.cards import get_card
    from evo_eval.tiny import build_tiny_family

    card, checkpoint = build_tiny_family(family, tmp_path / "models", tokenizer_dir)
    stage = get_card(str(card)).stage  # base, but instruct for a post-trained-only stand-in (Fast-dLLM v2)
    # One shot instead of the paper's (up to 25): the few-shot path is exercised, the prompts stay short
    # enough for five families' diffusion likelihoods on two CPU cores.
    # The shipped sample (a few documents per benchmark): the full files cost lm-eval seconds of document
    # processing per task whatever --limit is; llama_run above runs the suite on them.
    code, err = run("--model", str(card), "--checkpoint", str(checkpoint), "--data-dir", str(sample_mirror),
                    "--output", str(tmp_path / "results"), "--shots", "1", *FAST)
    assert code == 0, err
    stored = results_of(tmp_path / "results", stage, f"{family}-tiny")
    # MMLU-Pro's few-shot examples are a hub-only split: with --shots 1 the mirror cannot serve it
    assert set(stored) == {e.key for e in resolve("all", stage)} - NO_DATA - {"mmlu_pro"}
    per_request = [r for rec in stored.values() for r in rec["requests"]["per_request"]]
    # Every request did work, except options that shared the forward of an earlier one (adapters/batching.py).
    assert per_request and all(r["nfe"] > 0 or r["extra"].get("shared_forward", 0) > 1 for r in per_request)
    mmlu = stored["mmlu"]["requests"]["per_request"]
    if family in ("llada", "mdlm", "bd3lm"):  # four one-token options after one context: one forward
        assert sum(r["nfe"] for r in mmlu) * 4 == len(mmlu)
    assert stored["mmlu"]["decoding"]["sampler"] == family and stored["mmlu"]["shots"] == 1
    table = runner.invoke(app, ["table", "--results", str(tmp_path / "results"), "--stage", stage, "--format", "json"])
    payload = json.loads(table.stdout)
    assert payload["cards"][-1] == f"{family}-tiny"
