"""A user's own benchmark without a fork: an lm-eval task YAML plus an evo_eval metadata block in a folder
(--include-path), run with `evo-eval run --tasks KEY`, listed by `suites` and shown by `table`."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from evo_eval.cli import app
from evo_eval.suites import use_include_path

runner = CliRunner()

# ARC-Easy-shaped items written here (the format of allenai/ai2_arc); ARC-Easy is not in the paper's suite.
ITEMS = [
    ("What do plants need to make food?", ["sunlight", "sand", "noise", "plastic"], "A"),
    ("Which of these is a liquid at room temperature?", ["iron", "water", "wood", "salt"], "B"),
    ("What force pulls objects toward Earth?", ["magnetism", "friction", "gravity", "light"], "C"),
    ("Which animal lays eggs?", ["dog", "cow", "horse", "chicken"], "D"),
    ("What is frozen water called?", ["ice", "steam", "fog", "rain"], "A"),
]

TASK_YAML = """\
task: my_arc_easy
dataset_path: json
dataset_kwargs:
  data_files:
    test: {test}
    train: {train}
output_type: multiple_choice
test_split: test
fewshot_split: train
doc_to_text: "Question: {{{{question}}}}\\nAnswer:"
doc_to_target: "{{{{choices.label.index(answerKey)}}}}"
doc_to_choice: "{{{{choices.text}}}}"
metric_list:
  - metric: acc
    aggregation: mean
    higher_is_better: true
  - metric: acc_norm
    aggregation: mean
    higher_is_better: true
metadata:
  version: 1.0
  evo_eval:
    benchmark: arc_easy
    label: ARC-E
    section: General Tasks
    stages:
      base: {{shots: 2, mode: likelihood, metric: "acc_norm,none"}}
"""


def _write(folder, rows):
    folder.mkdir(parents=True, exist_ok=True)
    for name, part in (("test", rows[:3]), ("train", rows[3:])):
        with (folder / f"{name}.jsonl").open("w", encoding="utf-8") as handle:
            for i, (question, texts, answer) in enumerate(part):
                handle.write(json.dumps({"id": f"{name}-{i}", "question": question, "answerKey": answer,
                                         "choices": {"text": texts, "label": list("ABCD")}}) + "\n")
    (folder / "my_arc_easy.yaml").write_text(TASK_YAML.format(test=folder / "test.jsonl", train=folder / "train.jsonl"),
                                             encoding="utf-8")
    return folder


@pytest.fixture(autouse=True)
def forget_own_benchmarks():
    yield
    use_include_path(None)  # the registry is per process: leave it as the other tests expect


@pytest.mark.slow  # a run, a suites and a table command: about half a minute on two cores
def test_own_benchmark_runs_lists_and_tabulates(tmp_path, tiny_llama_dir):
    tasks = _write(tmp_path / "my-tasks", ITEMS)
    listed = runner.invoke(app, ["suites", "--stage", "base", "--include-path", str(tasks)],
                           env={"COLUMNS": "250"})
    assert listed.exit_code == 0, listed.stderr
    assert "arc_easy" in listed.stdout and "my_arc_easy" in listed.stdout and "acc_norm,none" in listed.stdout
    result = runner.invoke(app, ["run", "--model", "llama3-8b", "--checkpoint", str(tiny_llama_dir), "--include-path",
                                 str(tasks), "--tasks", "arc_easy", "--device", "cpu", "--bootstrap-iters", "0",
                                 "--output", str(tmp_path / "out")])
    assert result.exit_code == 0, result.stderr
    record = json.loads((tmp_path / "out" / "base" / "llama3-8b" / "arc_easy.json").read_text(encoding="utf-8"))
    assert record["task"] == "my_arc_easy" and record["shots"] == 2 and record["mode"] == "likelihood"
    assert record["metric"] == "acc_norm,none" and record["score"] in (0.0, 1 / 3, 2 / 3, 1.0)
    assert record["label"] == "ARC-E" and record["section"] == "General Tasks"
    prompt = record["samples"]["my_arc_easy"][0]["arguments"][0][0]
    assert prompt.count("Question: ") == 3  # two shots from the train split, then the item
    use_include_path(None)  # `table` reads the results files alone
    table = runner.invoke(app, ["table", "--results", str(tmp_path / "out")])
    assert table.exit_code == 0, table.stderr
    line = next(row for row in table.stdout.splitlines() if row.startswith("| ARC-E (2-shot)"))
    assert f"{record['score'] * 100:.1f}" in line
    general = table.stdout.index("*General Tasks*")
    assert general < table.stdout.index("| ARC-E (2-shot)") < table.stdout.index("*Mathematics & Science*")


@pytest.mark.parametrize("change, message", [
    (lambda t: t.replace("benchmark: arc_easy", "benchmark: mmlu"), "benchmark 'mmlu' is one of the paper's"),
    (lambda t: t.replace("mode: likelihood", "mode: guess"), "mode must be likelihood or generation, got 'guess'"),
    (lambda t: t.replace('metric: "acc_norm,none"', "metric: acc_norm"), "must be lm-eval's '<metric>,<filter>' key"),
    (lambda t: t.replace("shots: 2", "shots: -1"), "shots must be a whole number >= 0, got -1"),
    (lambda t: t.replace("    label: ARC-E\n", ""), "lacks label"),
    (lambda t: t.replace("      base:", "      pretrained:"), "unknown stage 'pretrained'"),
])
def test_a_bad_block_is_one_line_and_exit_2(tmp_path, change, message):
    tasks = _write(tmp_path / "my-tasks", ITEMS)
    path = tasks / "my_arc_easy.yaml"
    path.write_text(change(path.read_text(encoding="utf-8")), encoding="utf-8")
    result = runner.invoke(app, ["suites", "--include-path", str(tasks)])
    assert result.exit_code == 2
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith(f"error: {path}: ") and message in line


def test_unknown_own_task_without_include_path_says_how(tmp_path, tiny_llama_dir):
    result = runner.invoke(app, ["run", "--model", "llama3-8b", "--checkpoint", str(tiny_llama_dir),
                                 "--tasks", "arc_easy", "--output", str(tmp_path / "out")])
    assert result.exit_code == 2 and "--include-path DIR" in result.stderr
