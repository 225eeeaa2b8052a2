"""lm-eval's own CLI (``python -m evo_eval.lm_eval_cli``) evaluates what ``evo-eval run`` evaluates: same
tasks (found in the installed package), same shots per stage, same data folder ($EVO_EVAL_DATA), same
samples in the results files."""

from __future__ import annotations

import json
import sys

import pytest
from typer.testing import CliRunner

from evo_eval.cli import app
from evo_eval.lm_eval_cli import paper_shots, stage_of

# The compared fields of a logged sample: the document, the request sent and everything scored from it.
SAMPLE_FIELDS = ("doc_id", "doc", "target", "arguments", "resps", "filtered_resps", "filter", "metrics",
                 "doc_hash", "prompt_hash", "target_hash")


@pytest.fixture(scope="module")
def sample_mirror(tmp_path_factory):
    from evo_eval.data.mirror import import_mirror
    from evo_eval.paths import sample_benchdata_dir

    dst = tmp_path_factory.mktemp("lm-eval-cli") / "mirror"
    import_mirror(sample_benchdata_dir(), dst, ["arc_challenge", "gsm8k"])
    return dst


def _as_lm_eval_writes(sample: dict) -> dict:
    """A sample from our results file in the form lm-eval's EvaluationTracker writes to samples_*.jsonl
    (its own sanitising: arguments as gen_args_i/arg_j, responses as strings, target as a string)."""
    from lm_eval.loggers.evaluation_tracker import sanitize_list
    from lm_eval.utils import handle_non_serializable

    out = dict(sample)
    out["arguments"] = {f"gen_args_{i}": {f"arg_{j}": value for j, value in enumerate(arg)}
                        for i, arg in enumerate(sample["arguments"])}
    out["resps"], out["filtered_resps"] = sanitize_list(sample["resps"]), sanitize_list(sample["filtered_resps"])
    out["target"] = str(sample["target"])
    return json.loads(json.dumps(out, default=handle_non_serializable, ensure_ascii=False))


def _lm_eval_cli(monkeypatch, *args: str) -> None:
    from evo_eval import lm_eval_cli

    monkeypatch.setattr(sys, "argv", ["evo_eval.lm_eval_cli", *args])
    lm_eval_cli.main()


@pytest.mark.slow  # two full routes on a tiny model: about half a minute on two cores
def test_both_routes_log_identical_samples(tmp_path, monkeypatch, tiny_llama_dir, sample_mirror):
    """ARC-C (25-shot likelihood) and GSM8K (4-shot generation) on a tiny Llama, without --num_fewshot or
    --include_path on lm-eval's side, the mirror named only by EVO_EVAL_DATA."""
    result = CliRunner().invoke(app, [
        "run", "--model", "llama3-8b", "--checkpoint", str(tiny_llama_dir), "--tasks", "arc_challenge,gsm8k",
        "--limit", "2", "--data-dir", str(sample_mirror), "--device", "cpu", "--bootstrap-iters", "0",
        "--gen-kwargs", "max_gen_toks=8", "--output", str(tmp_path / "evo")])
    assert result.exit_code == 0, result.stderr
    monkeypatch.setenv("EVO_EVAL_DATA", str(sample_mirror))
    monkeypatch.chdir(tmp_path)  # not the checkout: the tasks must come from the package
    _lm_eval_cli(monkeypatch, "run", "--model", "hf", "--model_args", f"pretrained={tiny_llama_dir},dtype=float32",
                 "--tasks", "evo_arc_challenge,evo_gsm8k", "--limit", "2", "--device", "cpu",
                 "--gen_kwargs", "max_gen_toks=8", "--output_path", str(tmp_path / "lm-eval"), "--log_samples")
    for key, task, shots in (("arc_challenge", "evo_arc_challenge", 25), ("gsm8k", "evo_gsm8k", 4)):
        ours = json.loads((tmp_path / "evo" / "base" / "llama3-8b" / f"{key}.json").read_text(encoding="utf-8"))
        (path,) = (tmp_path / "lm-eval").rglob(f"samples_{task}_*.jsonl")
        theirs = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
        assert len(theirs) == len(ours["samples"][task]) >= 2
        for mine, other in zip(ours["samples"][task], theirs):
            mine = _as_lm_eval_writes(mine)
            assert {f: mine[f] for f in SAMPLE_FIELDS} == {f: other[f] for f in SAMPLE_FIELDS}
        (results,) = (tmp_path / "lm-eval").rglob("results_*.json")
        assert json.loads(results.read_text(encoding="utf-8"))["n-shot"][task] == shots == ours["shots"]


@pytest.mark.parametrize("task, stage, shots", [
    ("evo_arc_challenge", "base", 25), ("evo_arc_challenge_gen", "instruct", 0), ("evo_mmlu_anatomy", "base", 5),
    ("evo_mmlu_gen_anatomy", "instruct", 5), ("evo_math_algebra", "base", 4), ("evo_math_algebra", "instruct", 0),
    ("evo_bbh_navigate", "base", 3), ("evo_humaneval_instruct", "instruct", 0), ("evo_ppl", "base", None),
])
def test_paper_shots_per_leaf_and_stage(task, stage, shots):
    assert paper_shots(task, stage) == shots


def test_stage_comes_from_the_card_or_the_chat_template():
    from argparse import Namespace

    assert stage_of(Namespace(model_args={"card": "evo-8b-instruct"})) == "instruct"
    assert stage_of(Namespace(model_args={"pretrained": "x"}, apply_chat_template=True)) == "instruct"
    assert stage_of(Namespace(model_args={"pretrained": "x"})) == "base"


def test_missing_data_folder_names_the_environment_variable(tmp_path, monkeypatch):
    from evo_eval.data.source import load
    from evo_eval.errors import DataError

    monkeypatch.setenv("EVO_EVAL_DATA", str(tmp_path / "nowhere"))
    with pytest.raises(DataError, match=r"EVO_EVAL_DATA names .*nowhere, which does not exist") as err:
        load("gsm8k", "main")
    assert "--data-dir" not in str(err.value)
