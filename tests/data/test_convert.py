"""The publishers' formats converted to the hub's columns: lm-eval's own processing gives back the source text."""

from __future__ import annotations

import pytest

from evo_eval.data.convert import CONVERTERS, SourceReader, _blank_split, parse_cot_prompt
from evo_eval.errors import DataError


@pytest.fixture(scope="module")
def read(benchdata):
    return lambda key: CONVERTERS[key](SourceReader(benchdata))


def test_winogrande_sentences_give_back_the_published_options(read, benchdata):
    from lm_eval.tasks.winogrande.preprocess_winogrande import doc_to_choice, doc_to_target, doc_to_text

    rows = read("winogrande")[("winogrande_xl", "validation")]
    published = SourceReader(benchdata).jsonl("winogrande/winogrande_dev.jsonl", ())
    assert len(rows) == len(published) == 1267
    for row, source in zip(rows, published):
        assert doc_to_choice(row) == source["context_options"]
        assert doc_to_target(row) == source["continuation"].strip()
        assert doc_to_text(row) == source["gold"]
    assert rows[0] == {"sentence": "Sarah was a much better surgeon than Maria so _ always got the easier cases.",
                       "option1": "Sarah", "option2": "Maria", "answer": "2"}


@pytest.mark.parametrize("options, cut", [
    (["but the blanket", "but the bed"], 8),  # shared letters back off to the word start
    (["so John", "so Johnson"], 3),
    (["Sarah", "Maria"], 0),
])
def test_blank_position(options, cut):
    assert _blank_split(options) == cut


def test_hellaswag_keeps_the_published_context_whole(read, benchdata):
    from lm_eval.tasks.hellaswag.utils import process_docs

    import datasets

    rows = read("hellaswag")[("default", "validation")]
    published = SourceReader(benchdata).jsonl("hellaswag/hellaswag_val_preprocessed.jsonl.gz", ())
    for row, source in zip(rows, published):
        assert row["activity_label"] + ": " + row["ctx_a"] == source["ctx"] and row["ctx_b"] == ""
        assert row["endings"] == source["endings"] and int(row["label"]) == source["label"]
    first = process_docs(datasets.Dataset.from_list(rows[:1]))[0]
    assert first["query"] == "Roof shingle removal: A man is sitting on a roof. he" and first["gold"] == 3


def test_truthfulqa_targets_keep_order_and_labels(read):
    rows = read("truthfulqa")[("multiple_choice", "validation")]
    assert len(rows) == 817
    first = rows[0]["mc2_targets"]
    assert first["choices"][0].startswith("Nauru is the smallest country") and first["labels"][:2] == [1, 0]
    assert all(r["mc1_targets"]["labels"].count(1) == 1 for r in rows)


def test_cot_prompts(benchdata):
    text = (benchdata / "bbh" / "cot-prompts" / "sports_understanding.txt").read_text(encoding="utf-8")
    description, shots = parse_cot_prompt(text)
    assert description == "Determine whether an artificially constructed sentence relating to sports is plausible or not."
    assert shots[1] == {"input": 'Is the following sentence plausible? "Santi Cazorla scored a touchdown."',
                        "target": "Santi Cazorla is a soccer player. Touchdown is part of American football and "
                                  "rugby. So the answer is no."}
    with pytest.raises(DataError, match="has no '-----' line"):
        parse_cot_prompt("Q: x\nA: Let's think step by step.\ny")
    with pytest.raises(DataError, match="lacks \"A: Let's think step by step.\""):
        parse_cot_prompt("canary\n-----\nTask.\n\nQ: x\nA: y")


def test_math_and_mbpp_are_split_as_on_the_hub(read):
    math = read("math")
    assert {config: len(rows) for (config, _), rows in math.items()} == {
        "algebra": 1187, "counting_and_probability": 474, "geometry": 479, "intermediate_algebra": 903,
        "number_theory": 540, "prealgebra": 871, "precalculus": 546}
    mbpp = read("mbpp")
    assert [r["task_id"] for r in mbpp[("full", "prompt")]] == list(range(1, 11))
    assert (mbpp[("full", "test")][0]["task_id"], mbpp[("full", "test")][-1]["task_id"]) == (11, 510)
    assert len(mbpp[("sanitized", "test")]) == 257 and mbpp[("sanitized", "test")][0]["source_file"]
