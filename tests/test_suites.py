import pytest

from evo_eval.errors import UnknownNameError, UserError
from evo_eval.suites import GENERATION, LIKELIHOOD, parse_cell, resolve


def test_base_suite_is_table_one_with_evo_shots():
    entries = resolve("all", "base")
    assert len(entries) == 15
    shots = {e.key: e.shots for e in entries}
    assert shots == {
        "mmlu": 5, "bbh": 3, "arc_challenge": 25, "hellaswag": 0, "truthfulqa": 0, "winogrande": 5,
        "piqa": 0, "gsm8k": 4, "math": 4, "gpqa": 5, "humaneval": 0, "humaneval_fim": 2, "mbpp": 4,
        "cmmlu": 5, "ceval": 5,
    }
    modes = {e.key: e.mode for e in entries}
    assert modes["mmlu"] == LIKELIHOOD and modes["gsm8k"] == GENERATION and modes["humaneval_fim"] == GENERATION


def test_instruct_suite_is_table_two_all_generative():
    entries = resolve("all", "instruct")
    assert [e.key for e in entries] == [
        "mmlu", "mmlu_pro", "arc_challenge", "hellaswag", "gsm8k", "math", "gpqa", "humaneval", "mbpp"]
    assert {e.mode for e in entries} == {GENERATION}
    assert {e.key: e.shots for e in entries}["mmlu_pro"] == 0


def test_subset_and_override():
    entries = resolve("all", "base", tasks=["gsm8k", "mmlu"], shots=1)
    assert [(e.key, e.shots) for e in entries] == [("mmlu", 1), ("gsm8k", 1)]


def test_bad_names():
    with pytest.raises(UnknownNameError, match="suite"):
        resolve("everything", "base")
    with pytest.raises(UnknownNameError, match="stage"):
        resolve("all", "chat")
    with pytest.raises(UnknownNameError, match="did you mean gsm8k"):
        resolve("all", "base", tasks=["gsm8"])
    with pytest.raises(UserError, match="stage"):
        resolve("all", "base", tasks=["mmlu_pro"])


def test_parse_cell():
    assert parse_cell("76.8 (5)") == (76.8, 5)
    assert parse_cell("-") == (None, None)
