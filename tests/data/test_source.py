"""The tasks' one data source: the mirror named by metadata or $EVO_EVAL_DATA, else the hub."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from evo_eval.data.mirror import import_mirror
from evo_eval.data.source import load
from evo_eval.errors import DataError, UnknownNameError


@pytest.fixture(scope="module")
def mirror(benchdata, tmp_path_factory) -> Path:
    src = tmp_path_factory.mktemp("src")
    for folder in ("gsm8k", "mmlu_pro", "mmlu"):
        shutil.copytree(benchdata / folder, src / folder)
    dst = tmp_path_factory.mktemp("mirror") / "data"
    import_mirror(src, dst, ["gsm8k", "mmlu_pro", "mmlu"])
    return dst


def test_mirror_from_metadata_serves_the_hub_splits(mirror, monkeypatch):
    monkeypatch.delenv("EVO_EVAL_DATA", raising=False)
    splits = load(benchmark="mmlu", config="anatomy", data_dir=str(mirror), version=1.0, config_source="x.yaml")
    assert sorted(splits) == ["dev", "test"] and len(splits["test"]) == 135 and len(splits["dev"]) == 5
    assert splits["dev"][0]["choices"][3] == "The second and third pharyngeal arches"
    assert splits["dev"].features["answer"].dtype == "int64"
    # parsed once per process: the 57 MMLU subjects and the 14 MMLU-Pro categories share their files
    assert load(benchmark="mmlu", config="anatomy", data_dir=str(mirror))["test"] is splits["test"]


def test_hub_only_split_is_empty_with_the_same_columns(mirror):
    splits = load(benchmark="mmlu_pro", data_dir=str(mirror))
    assert len(splits["test"]) == 12032 and len(splits["validation"]) == 0
    assert splits["validation"].features == splits["test"].features


def test_environment_names_the_mirror_when_metadata_does_not(mirror, monkeypatch):
    monkeypatch.setenv("EVO_EVAL_DATA", str(mirror))
    assert len(load(benchmark="gsm8k", config="main")["train"]) == 7473
    monkeypatch.setenv("EVO_EVAL_DATA", "/no/such/mirror")
    assert len(load(benchmark="gsm8k", config="main", data_dir=str(mirror))["test"]) == 1319  # metadata wins


def test_without_a_mirror_the_hub_is_asked_and_offline_fails_in_one_line(monkeypatch):
    monkeypatch.delenv("EVO_EVAL_DATA", raising=False)
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    with pytest.raises(DataError, match=r"could not load openai/gsm8k from the Hugging Face hub .* point EVO_EVAL_DATA \(evo-eval run: --data-dir\) at a mirror") as err:
        load(benchmark="gsm8k", config="main")
    assert "\n" not in str(err.value)
    with pytest.raises(DataError, match=r"could not load GPQA from the hub .* Idavidrein/gpqa .*`hf auth login`"):
        load(benchmark="gpqa", config="gpqa_main")


def test_missing_benchmark_or_mirror_is_a_data_error(mirror, tmp_path):
    with pytest.raises(DataError, match="GPQA is not in the data mirror .* gated hub dataset Idavidrein/gpqa"):
        load(benchmark="gpqa", config="gpqa_main", data_dir=str(mirror))
    with pytest.raises(DataError, match="piqa is not in the data mirror .* re-run `evo-eval data import SRC`"):
        load(benchmark="piqa", data_dir=str(mirror))
    with pytest.raises(DataError, match="holds no manifest.json, so it is not a data mirror"):
        load(benchmark="gsm8k", config="main", data_dir=str(tmp_path))
    with pytest.raises(UnknownNameError, match="unknown mmlu config 'anatomyy' — did you mean anatomy"):
        load(benchmark="mmlu", config="anatomyy", data_dir=str(mirror))
