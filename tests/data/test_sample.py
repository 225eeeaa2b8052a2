"""The benchmark sample shipped in the package (evo_eval/resources/benchdata): a verbatim subset of the
publishers' files, enough for every benchmark at the paper's shots, and what the demo runs on when there
is no ../shared."""

from __future__ import annotations

import json

import pytest

from evo_eval.data.catalog import CATALOG
from evo_eval.data.sample import write_sample
from evo_eval.paths import sample_benchdata_dir
from evo_eval.run import run
from evo_eval.suites import resolve


def _files(root):
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_sample_is_rebuilt_byte_for_byte_from_the_publishers_files(benchdata, tmp_path):
    """The shipped files are exactly what the rule in data/sample.py takes from the full files."""
    write_sample(benchdata, tmp_path / "sample")
    assert _files(tmp_path / "sample") == _files(sample_benchdata_dir())


def test_every_sampled_row_is_a_row_of_the_full_data(benchdata, sample_mirror, mirror):
    """Converted rows of the sample are rows of the full mirror, config and split alike (nothing generated)."""
    full = json.loads((mirror / "manifest.json").read_text(encoding="utf-8"))["files"]
    sample = json.loads((sample_mirror / "manifest.json").read_text(encoding="utf-8"))["files"]
    assert set(sample) <= set(full)
    for rel in sample:
        rows = (sample_mirror / rel).read_text(encoding="utf-8").splitlines()
        if not rows:
            continue
        pool = set((mirror / rel).read_text(encoding="utf-8").splitlines())
        assert set(rows) <= pool, rel


def test_sample_covers_every_benchmark_but_gated_gpqa(sample_mirror):
    manifest = json.loads((sample_mirror / "manifest.json").read_text(encoding="utf-8"))
    assert sorted(manifest["benchmarks"]) == sorted(k for k, spec in CATALOG.items() if not spec.gated)
    readme = (sample_benchdata_dir() / "README.md").read_text(encoding="utf-8")
    for spec in CATALOG.values():
        if not spec.gated:
            assert spec.source in readme and spec.licence in readme
    assert "GPQA is not here" in readme
    size = sum(len(b) for b in _files(sample_benchdata_dir()).values())
    assert size < 700_000, size  # a few documents each, not a dataset


# Leaf tasks: MMLU 57, BBH 27, MATH 7, CMMLU 67, C-Eval 52 and 9 single ones (base); MMLU 57, MMLU-Pro 14
# (0-shot here), MATH 7 and 5 single ones (instruct). GPQA has no sample.
@pytest.mark.slow  # builds every leaf task of a stage: about half a minute on two cores
@pytest.mark.parametrize("stage,expected", [("base", 219), ("instruct", 83)])
def test_sample_serves_every_task_at_the_papers_shots(sample_mirror, stage, expected):
    """Each leaf task builds its first request with the paper's shots from the sample alone (a few-shot
    split smaller than the shot count would raise here, as it would mid-run)."""
    from lm_eval.api.task import Task
    from lm_eval.tasks import TaskManager, get_task_dict

    from evo_eval.paths import tasks_dir

    manager = TaskManager(include_path=str(tasks_dir()), include_defaults=False,
                          metadata={"data_dir": str(sample_mirror)})
    entries = [e for e in resolve("all", stage) if e.key != "gpqa"]
    built = 0
    for entry in entries:
        if entry.key == "mmlu_pro" and entry.shots:
            continue  # its shots live in a hub-only split (data.mirror_problem refuses it up front)

        def leaves(node):
            for value in node.values():
                if isinstance(value, Task):
                    yield value
                elif isinstance(value, dict):
                    yield from leaves(value)

        for task in leaves(get_task_dict([entry.task], manager)):
            task.set_config(key="num_fewshot", value=entry.shots)
            task.set_fewshot_seed(seed=1234)
            task.build_all_requests(limit=1, rank=0, world_size=1)
            assert task.instances, f"{task.config.task} has no documents in the sample"
            built += 1
    assert built == expected


def test_demo_runs_without_shared(tmp_path, monkeypatch, tiny_llama_dir):
    """No ../shared, no EVO_EVAL_DATA, no hub: the demo imports the shipped sample and scores it."""
    from rich.console import Console

    import evo_eval.demo as demo
    import evo_eval.paths as paths

    for name in ("EVO_EVAL_DATA", "EVO_EVAL_BENCHDATA"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(paths, "REPO_ROOT", tmp_path / "fresh-clone")  # nothing beside it
    # One model and two benchmarks keep this fast; the demo's own choice of models is not under test.
    monkeypatch.setattr(demo, "_demo_models", lambda models_dir: [("llama3-8b", tiny_llama_dir)])
    console = Console(file=open(tmp_path / "console.txt", "w"), width=200)
    assert demo.run_demo(tmp_path / "demo", 1, None, console, execute=lambda options: run(options),
                         tasks=["arc_challenge", "winogrande"]) == 0
    mirror = tmp_path / "demo" / "data-sample"
    assert json.loads((mirror / "manifest.json").read_text(encoding="utf-8"))["files"]["winogrande/winogrande_xl/validation.jsonl"]["rows"] == 8
    for key, shots in (("arc_challenge", 25), ("winogrande", 5)):
        record = json.loads((tmp_path / "demo" / "results" / "base" / "llama3-8b" / f"{key}.json").read_text(encoding="utf-8"))
        assert record["shots"] == shots and record["score"] is not None
        assert record["provenance"]["data_dir"] == str(mirror.resolve())
