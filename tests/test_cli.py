"""The CLI through Typer's runner: bad input is one line on stderr and exit status 2."""

import pytest
from typer.testing import CliRunner

from evo_eval.cli import app

runner = CliRunner()


def invoke(*args):
    result = runner.invoke(app, list(args))
    return result.exit_code, result.stdout, result.stderr


@pytest.mark.parametrize("args, message", [
    (["run", "--model", "gpt-5"], "error: unknown model 'gpt-5'"),
    (["run", "--model", "llama3-8b", "--suite", "everything"], "error: unknown suite 'everything'"),
    (["run", "--model", "llama3-8b", "--tasks", "gsm9k"], "error: unknown task 'gsm9k' — did you mean gsm8k?"),
    (["run", "--model", "llama3-8b", "--stage", "chat"], "error: unknown stage 'chat'"),
    (["run", "--model", "llama3-8b", "--stage", "instruct"], "use --model llama3-8b-instruct"),
    (["run", "--model", "llama3-8b", "--tasks", "mmlu_pro"], "stage(s) instruct"),
    (["run", "--model", "evo-8b"], "error: model 'evo-8b' has no public weights — pass --checkpoint DIR"),
    (["run", "--model", "llama3-8b", "--checkpoint", "/no/such/dir"], "checkpoint folder /no/such/dir does not exist"),
    (["run", "--model", "llama3-8b", "--batch-size", "many"], "--batch-size must be a positive integer or auto"),
    (["run", "--model", "llama3-8b", "--shots", "-1"], "--shots must be 0 or more"),
    (["run", "--model", "llama3-8b", "--data-dir", "/no/such/mirror"], "data folder /no/such/mirror does not exist"),
    (["table", "--format", "html"], "error: unknown format 'html'"),
    (["table", "--stage", "post"], "error: unknown stage 'post'"),
    (["suites", "--stage", "mid"], "error: unknown stage 'mid'"),
])
def test_bad_input_is_one_line_and_exit_2(args, message, tmp_path):
    code, out, err = invoke(*args)
    assert code == 2, (out, err)
    assert message in err
    assert len(err.strip().splitlines()) == 1
    assert "Traceback" not in err


def test_checkpoint_without_config_is_refused(tmp_path):
    code, _, err = invoke("run", "--model", "llama3-8b", "--checkpoint", str(tmp_path))
    assert code == 2 and "has no config.json" in err


def test_models_and_suites_listings(monkeypatch):
    monkeypatch.setenv("COLUMNS", "250")
    code, out, _ = invoke("models")
    assert code == 0
    for name in ("evo-8b", "llada-8b-instruct", "GSAI-ML/LLaDA-8B-Base", "--checkpoint DIR"):
        assert name in out
    code, out, _ = invoke("suites", "--stage", "instruct")
    assert code == 0 and "evo_mmlu_pro" in out and "generation" in out


def test_corrupt_results_file_stops_table_without_touching_it(tmp_path):
    bad = tmp_path / "base" / "llama3-8b" / "mmlu.json"
    bad.parent.mkdir(parents=True)
    bad.write_text('{"schema_version": 1, "kind": "evo-eval/benchmark-result", "model"')
    code, _, err = invoke("table", "--results", str(tmp_path))
    assert code == 2 and "truncated JSON" in err and len(err.strip().splitlines()) == 1
    assert bad.read_text().endswith('"model"')


def test_code_benchmarks_without_opt_in_end_with_a_summary_and_exit_3(monkeypatch, tiny_llama_dir, tmp_path):
    """Skipping code benchmarks for want of --allow-code-exec leaves the suite incomplete: exit 3 says so."""
    monkeypatch.delenv("EVO_EVAL_DATA", raising=False)
    args = ["run", "--model", "llama3-8b", "--checkpoint", str(tiny_llama_dir), "--tasks", "humaneval,mbpp",
            "--device", "cpu", "--output", str(tmp_path)]
    code, _, err = invoke(*args)
    assert code == 3, err
    last = err.strip().splitlines()[-1]
    assert last.startswith("incomplete: 2 of 2 benchmark(s) not run: humaneval, mbpp execute model-written code")
    assert "--skip-missing" in last and "exit status 3" in last
    code, _, err = invoke(*args, "--skip-missing")
    assert code == 0, err
    assert err.strip().splitlines()[-1].startswith("incomplete, as --skip-missing accepts: 2 of 2 benchmark(s)")


def test_global_options_work_after_the_command_and_are_listed():
    result = runner.invoke(app, ["run", "--model", "gpt-5", "--debug"])  # --debug re-raises; CliRunner keeps it
    assert type(result.exception).__name__ == "UnknownNameError"
    code, _, err = invoke("run", "--model", "gpt-5", "--verbose")
    assert code == 2 and "unknown model 'gpt-5'" in err and "No such option" not in err
    code, _, err = invoke("data", "verify", "/no/such/mirror", "-v")
    assert code == 2 and "No such option" not in err
    result = runner.invoke(app, ["run", "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    for text in ("--debug", "--verbose", "Global options", "path of a card YAML file"):
        assert text in result.stdout, text
    assert "--install-completion" not in result.stdout


@pytest.mark.parametrize("columns", ["80", "250"])
def test_listings_never_cut_names(monkeypatch, columns):
    """At 80 columns and piped (CliRunner is no terminal) every name a user types is whole; other text wraps."""
    from evo_eval.cards import all_cards
    from evo_eval.suites import resolve

    monkeypatch.setenv("COLUMNS", columns)
    code, out, _ = invoke("models")
    assert code == 0 and "…" not in out
    words = set(out.split())
    for card in all_cards().values():
        assert card.name in words and (card.checkpoint is None or card.checkpoint in words), card.name
    assert "MDLM 9B*" in out and "* MDLM 9B: the paper's Table 2 header, kept as printed" in " ".join(out.split())
    for stage in ("base", "instruct"):
        code, out, _ = invoke("suites", "--stage", stage)
        assert code == 0 and "…" not in out
        words = set(out.split())
        for entry in resolve("all", stage):
            assert {entry.key, entry.task, entry.benchmark.metric[stage]} <= words, entry.key


def test_post_training_and_columns_match_the_papers_table_2():
    import csv

    from evo_eval.cards import all_cards
    from evo_eval.paths import paper_dir

    with (paper_dir() / "table2_posttrained.csv").open(encoding="utf-8") as handle:
        rows = list(csv.reader(handle))
    header, post = rows[0], next(r for r in rows if r[0] == "post-training")
    paper = dict(zip(header[2:], post[2:]))
    cards = [c for c in all_cards().values() if c.stage == "instruct" and c.stand_in_for is None]
    assert sorted(c.column for c in cards) == sorted(paper)  # MDLM 9B included: the paper's own header
    for card in cards:
        assert card.paper["post_training"] == paper[card.column], card.name


def test_a_changed_dtype_is_said_once_and_recorded(tiny_llama_dir, small_mirror, tmp_path):
    import json

    args = ["run", "--model", "llama3-8b", "--checkpoint", str(tiny_llama_dir), "--data-dir", str(small_mirror),
            "--tasks", "arc_challenge", "--limit", "1", "--shots", "0", "--device", "cpu", "--bootstrap-iters", "0"]
    code, _, err = invoke(*args, "--output", str(tmp_path / "cpu"))
    assert code == 0, err
    note = ("note: model card llama3-8b is bfloat16; it runs in float32 because the device is a CPU (bfloat16 "
            "matmuls are slow or missing on many CPUs) — pass --dtype bfloat16 to keep the card's")
    assert err.count("note: model card") == 1 and note in err
    record = json.loads((tmp_path / "cpu" / "base" / "llama3-8b" / "arc_challenge.json").read_text())
    assert record["provenance"]["dtype"] == "float32" and record["provenance"]["card_dtype"] == "bfloat16"
    assert record["provenance"]["dtype_change"] == note.removeprefix("note: ")

    code, _, err = invoke(*args, "--dtype", "bfloat16", "--output", str(tmp_path / "bf16"))
    assert code == 0, err
    assert "note: model card" not in err
    record = json.loads((tmp_path / "bf16" / "base" / "llama3-8b" / "arc_challenge.json").read_text())
    assert record["provenance"]["dtype"] == "bfloat16" and record["provenance"]["dtype_change"] is None
    assert record["fingerprint"]["fields"]["dtype"] == "bfloat16"

    code, _, err = invoke(*args, "--dtype", "fp8", "--output", str(tmp_path / "bad"))
    assert code == 2 and err.strip() == ("error: unknown dtype 'fp8' — choose one of: float32, bfloat16, float16 "
                                         "(in --dtype)"), err


def test_instruct_checkpoint_without_chat_template_is_one_line_before_loading(tiny_llama_dir, tmp_path, monkeypatch):
    import json
    import shutil

    import evo_eval.run as run_module

    plain = tmp_path / "no-template"
    shutil.copytree(tiny_llama_dir, plain)
    (plain / "chat_template.jinja").unlink(missing_ok=True)
    config = json.loads((plain / "tokenizer_config.json").read_text())
    config.pop("chat_template", None)
    (plain / "tokenizer_config.json").write_text(json.dumps(config))

    def no_loading(*_args, **_kwargs):
        raise AssertionError("weights were loaded before the chat template was checked")

    monkeypatch.setattr(run_module, "build_lm", no_loading)
    code, out, err = invoke("run", "--model", "llama3-8b-instruct", "--checkpoint", str(plain), "--tasks", "gsm8k",
                            "--device", "cpu", "--output", str(tmp_path / "out"))
    assert code == 2, (out, err)
    assert err.strip() == (f"error: the tokenizer in {plain} has no chat template, and llama3-8b-instruct renders "
                           "every prompt through one (the instruct stage) — pass the post-trained checkpoint, whose "
                           "tokenizer_config.json or chat_template.jinja has it, or run the base stage with "
                           "--model llama3-8b")


def test_stage_hint_names_a_card_that_exists(tmp_path):
    """A card YAML of the user's own (no -instruct sibling) gets a hint that does not invent a card name."""
    import yaml

    from evo_eval.cards import get_card

    data = get_card("qwen2.5-7b").to_dict()
    data.pop("path")
    data.update(name="my-model", system="mine")
    path = tmp_path / "my-model.yaml"
    path.write_text(yaml.safe_dump(data))
    code, _, err = invoke("run", "--model", str(path), "--stage", "instruct")
    assert code == 2 and "my-model-instruct" not in err
    assert "write a card with stage: instruct for it and pass its YAML path as --model" in err
    code, _, err = invoke("run", "--model", "mdlm-7b-instruct", "--stage", "base")
    assert code == 2 and "use --model mdlm-7b for the base stage" in err
