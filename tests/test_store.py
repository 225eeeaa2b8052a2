import json

import pytest

from evo_eval.errors import ResultsError
from evo_eval.store import KIND, SCHEMA_VERSION, atomic_write_text, read_result, result_path, to_json


def record(**overrides):
    data = {"schema_version": SCHEMA_VERSION, "kind": KIND, "model": "llama3-8b", "stage": "base",
            "benchmark": "gsm8k", "task": "evo_gsm8k", "metric": "exact_match,flexible-extract", "score": 0.5,
            "shots": 4, "lm_eval": {}, "provenance": {}}
    data.update(overrides)
    return data


def test_atomic_write_replaces_whole_file_and_leaves_no_temp(tmp_path):
    path = result_path(tmp_path, "base", "llama3-8b", "gsm8k")
    atomic_write_text(path, to_json(record()))
    atomic_write_text(path, to_json(record(score=0.75)))
    assert read_result(path).score == 0.75
    assert [p.name for p in path.parent.iterdir()] == ["gsm8k.json"]


def test_truncated_file_is_one_clear_error(tmp_path):
    path = tmp_path / "base" / "m" / "gsm8k.json"
    path.parent.mkdir(parents=True)
    text = to_json(record())
    path.write_text(text[: len(text) // 2])
    with pytest.raises(ResultsError, match=r"truncated JSON .*--force"):
        read_result(path)


def test_other_schema_version_and_foreign_json_refused(tmp_path):
    path = tmp_path / "r.json"
    path.write_text(json.dumps(record(schema_version=99)))
    with pytest.raises(ResultsError, match="schema version 99"):
        read_result(path)
    path.write_text(json.dumps({"results": {}}))
    with pytest.raises(ResultsError, match="not an evo-eval results file"):
        read_result(path)
    path.write_text(json.dumps(record(score="high")))
    with pytest.raises(ResultsError, match="non-numeric score"):
        read_result(path)
    path.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(ResultsError, match="not UTF-8"):
        read_result(path)
