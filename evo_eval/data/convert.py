"""Readers for the publishers' formats (the layout of shared/benchdata), each producing rows in the hub
dataset's own columns.

``CONVERTERS[key](reader)`` returns ``{(config folder, split): [row, ...]}`` for one benchmark. Every read
goes through a ``SourceReader``, which refuses a missing file, text that is not UTF-8, malformed JSON or
CSV and rows without the expected fields with one line naming the file and the fix, and remembers which
files it read so the import can check them against the folder's SHA256SUMS.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import re
from pathlib import Path
from typing import Any, Callable, Iterable

from .catalog import (
    BBH_TASKS, CEVAL_SUBJECTS, CMMLU_SUBJECTS, DEFAULT_CONFIG, HUMANEVAL_INFILLING, MATH_TYPES, MBPP_SPLITS,
    MMLU_SUBJECTS,
)
from ..errors import DataError

Rows = dict[tuple[str, str], list[dict[str, Any]]]
REFETCH = "restore the publisher's file (shared/benchdata/README.md lists them) and re-run `evo-eval data import SRC`"


class SourceReader:
    """Strict access to one source folder; ``read`` lists every file opened, relative to the folder."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self.read: list[str] = []

    def fail(self, rel: str, problem: str, fix: str = REFETCH) -> DataError:
        return DataError(f"{self.root / rel}: {problem}", fix)

    def text(self, rel: str) -> str:
        path = self.root / rel
        if not path.is_file():
            raise self.fail(rel, "file is missing")
        raw = path.read_bytes()
        if rel.endswith(".gz"):
            try:
                raw = gzip.decompress(raw)
            except (OSError, EOFError) as err:
                raise self.fail(rel, f"is not a readable gzip file ({err})") from None
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as err:
            raise self.fail(rel, f"is not UTF-8 text (byte {err.start})") from None
        self.read.append(rel)
        return text.removeprefix("\ufeff")

    def json(self, rel: str) -> Any:
        try:
            return json.loads(self.text(rel))
        except json.JSONDecodeError as err:
            raise self.fail(rel, f"is not valid JSON (line {err.lineno})") from None

    def jsonl(self, rel: str, keys: Iterable[str]) -> list[dict[str, Any]]:
        rows = []
        # split on "\n" only: str.splitlines also breaks at U+0085 and U+2028, which occur inside strings
        for number, line in enumerate(self.text(rel).split("\n"), 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                raise self.fail(rel, f"line {number} is not valid JSON") from None
            rows.append(self.check_keys(rel, row, keys, f"line {number}"))
        if not rows:
            raise self.fail(rel, "holds no rows")
        return rows

    def csv(self, rel: str, header: list[str], optional: Iterable[str] = ()) -> list[dict[str, str]]:
        reader = csv.reader(io.StringIO(self.text(rel), newline=""))
        try:
            found = next(reader)
        except StopIteration:
            raise self.fail(rel, "is empty") from None
        allowed = header + [c for c in optional if c not in header]
        if found[:len(header)] != header or any(c not in allowed for c in found):
            raise self.fail(rel, f"has columns {found}, expected {header}")
        rows = []
        for number, values in enumerate(reader, 2):
            if not values:
                continue
            if len(values) != len(found):
                raise self.fail(rel, f"row {number} has {len(values)} fields, the header has {len(found)}")
            rows.append(dict(zip(found, values)))
        if not rows:
            raise self.fail(rel, "holds no rows")
        return rows

    def lines(self, rel: str) -> list[str]:
        return [line.strip() for line in self.text(rel).splitlines() if line.strip()]

    def check_keys(self, rel: str, row: Any, keys: Iterable[str], where: str) -> dict[str, Any]:
        if not isinstance(row, dict):
            raise self.fail(rel, f"{where} is not a JSON object")
        missing = [k for k in keys if k not in row]
        if missing:
            raise self.fail(rel, f"{where} lacks field(s) {', '.join(missing)}")
        return row


# ---- one converter per benchmark --------------------------------------------------------------------


def convert_gsm8k(src: SourceReader) -> Rows:
    return {("main", split): [{"question": r["question"], "answer": r["answer"]}
                              for r in src.jsonl(f"gsm8k/{split}.jsonl", ("question", "answer"))]
            for split in ("test", "train")}


def _letter_index(src: SourceReader, rel: str, value: str, letters: str, where: str) -> str:
    if value not in letters:
        raise src.fail(rel, f"{where}: answer '{value}' is not one of {', '.join(letters)}")
    return value


def convert_mmlu(src: SourceReader) -> Rows:
    out: Rows = {}
    header = ["question", "choice0", "choice1", "choice2", "choice3", "answer"]
    for subject in MMLU_SUBJECTS:
        for split in ("test", "dev"):
            rel = f"mmlu/{split}/{subject}_{split}.csv"
            rows = []
            for number, r in enumerate(src.csv(rel, header), 2):
                if r["answer"] not in ("0", "1", "2", "3"):
                    raise src.fail(rel, f"row {number}: answer '{r['answer']}' is not an index 0-3")
                rows.append({"question": r["question"], "subject": subject,
                             "choices": [r[f"choice{i}"] for i in range(4)], "answer": int(r["answer"])})
            out[(subject, split)] = rows
    return out


def convert_arc_challenge(src: SourceReader) -> Rows:
    out: Rows = {}
    for split, name in (("test", "Test"), ("validation", "Dev")):
        rel = f"arc_challenge/ARC-Challenge-{name}.jsonl"
        rows = []
        for number, r in enumerate(src.jsonl(rel, ("id", "question", "answerKey")), 1):
            question = src.check_keys(rel, r["question"], ("stem", "choices"), f"line {number} question")
            choices = [src.check_keys(rel, c, ("text", "label"), f"line {number} choice") for c in question["choices"]]
            labels = [c["label"] for c in choices]
            if r["answerKey"] not in labels:
                raise src.fail(rel, f"line {number}: answerKey '{r['answerKey']}' is not among labels {labels}")
            rows.append({"id": r["id"], "question": question["stem"],
                         "choices": {"text": [c["text"] for c in choices], "label": labels},
                         "answerKey": r["answerKey"]})
        out[("ARC-Challenge", split)] = rows
    return out


def convert_hellaswag(src: SourceReader) -> Rows:
    rel = "hellaswag/hellaswag_val_preprocessed.jsonl.gz"
    rows = []
    for number, r in enumerate(src.jsonl(rel, ("ctx", "label", "endings")), 1):
        label, rest = r["ctx"].partition(": ")[::2]
        if not rest or len(r["endings"]) != 4 or r["label"] not in (0, 1, 2, 3):
            raise src.fail(rel, f"line {number} is not 'activity: context' with 4 endings and a label 0-3")
        # The publisher already joined and cleaned 'activity_label: ctx_a ctx_b'; keeping the joined text
        # in ctx_a with an empty ctx_b lets lm-eval's own process_docs rebuild the same query string.
        rows.append({"activity_label": label, "ctx_a": rest, "ctx_b": "", "ctx": rest,
                     "endings": list(r["endings"]), "label": str(r["label"])})
    return {(DEFAULT_CONFIG, "validation"): rows}


def convert_truthfulqa(src: SourceReader) -> Rows:
    rel = "truthfulqa/mc_task.json"
    data = src.json(rel)
    if not isinstance(data, list) or not data:
        raise src.fail(rel, "is not a JSON list of questions")
    rows = []
    for number, r in enumerate(data, 1):
        src.check_keys(rel, r, ("question", "mc1_targets", "mc2_targets"), f"item {number}")
        rows.append({"question": r["question"],
                     "mc1_targets": {"choices": list(r["mc1_targets"]), "labels": list(r["mc1_targets"].values())},
                     "mc2_targets": {"choices": list(r["mc2_targets"]), "labels": list(r["mc2_targets"].values())}})
    return {("multiple_choice", "validation"): rows}


def _blank_split(options: list[str]) -> int:
    """Where the blank was: the common prefix of the two filled-in sentences, backed off to a word start."""
    a, b = options
    common = 0
    while common < min(len(a), len(b)) and a[common] == b[common]:
        common += 1
    return a.rfind(" ", 0, common) + 1 if common < len(a) or common < len(b) else common


def convert_winogrande(src: SourceReader) -> Rows:
    rel, labels_rel = "winogrande/winogrande_dev.jsonl", "winogrande/dev-labels.lst"
    items = src.jsonl(rel, ("context_options", "continuation", "gold"))
    labels = src.lines(labels_rel)
    if len(labels) != len(items):
        raise src.fail(labels_rel, f"has {len(labels)} labels for {len(items)} sentences in {rel}")
    rows = []
    for number, (r, label) in enumerate(zip(items, labels), 1):
        if label not in ("1", "2") or int(label) - 1 != r["gold"] or len(r["context_options"]) != 2:
            raise src.fail(labels_rel, f"line {number}: label '{label}' disagrees with gold {r['gold']} in {rel}")
        cut = _blank_split(r["context_options"])
        prefix = r["context_options"][0][:cut]
        # lm-eval's winogrande reads sentence[:blank] + option as the context and the text after the
        # blank as the continuation; rebuilding the sentence this way reproduces both exactly.
        rows.append({"sentence": f"{prefix}_ {r['continuation']}", "option1": r["context_options"][0][cut:],
                     "option2": r["context_options"][1][cut:], "answer": label})
    return {("winogrande_xl", "validation"): rows}


def convert_piqa(src: SourceReader) -> Rows:
    rel, labels_rel = "piqa/dev.jsonl", "piqa/dev-labels.lst"
    items = src.jsonl(rel, ("goal", "sol1", "sol2"))
    labels = src.lines(labels_rel)
    if len(labels) != len(items):
        raise src.fail(labels_rel, f"has {len(labels)} labels for {len(items)} questions in {rel}")
    bad = next((i for i, label in enumerate(labels, 1) if label not in ("0", "1")), None)
    if bad:
        raise src.fail(labels_rel, f"line {bad}: label '{labels[bad - 1]}' is not 0 or 1")
    rows = [{"goal": r["goal"], "sol1": r["sol1"], "sol2": r["sol2"], "label": int(label)}
            for r, label in zip(items, labels)]
    return {(DEFAULT_CONFIG, "validation"): rows}


COT_HEADER_END = "-----\n"
COT_ANSWER = re.compile(r"\nA: Let's think step by step\.[ \n]")


def parse_cot_prompt(text: str, rel: str = "cot prompt", src: SourceReader | None = None
                     ) -> tuple[str, list[dict[str, str]]]:
    """(task description, [{input, target}]) from a BIG-Bench-Hard cot-prompts/<task>.txt file."""
    def fail(problem):
        return src.fail(rel, problem) if src else DataError(f"{rel}: {problem}")

    _, sep, body = text.partition(COT_HEADER_END)
    if not sep:
        raise fail("has no '-----' line after the canary header")
    description, sep, examples = body.strip("\n").partition("\n\nQ: ")
    if not sep:
        raise fail("has no 'Q: ' exemplar after the description")
    shots = []
    for block in ("Q: " + examples).rstrip("\n").split("\n\nQ: "):
        # One file (sports_understanding) puts the reasoning on the "A:" line itself; like lm-eval's
        # bbh tasks we read it as the same exemplar, so every prompt ends the line after "step."
        parts = COT_ANSWER.split(block.removeprefix("Q: "), maxsplit=1)
        if len(parts) != 2:
            raise fail(f"exemplar '{parts[0][:40]}...' lacks \"A: Let's think step by step.\"")
        shots.append({"input": parts[0], "target": parts[1]})
    return description, shots


def convert_bbh(src: SourceReader) -> Rows:
    out: Rows = {}
    for task in BBH_TASKS:
        rel = f"bbh/{task}.json"
        data = src.json(rel)
        if not isinstance(data, dict) or not isinstance(data.get("examples"), list):
            raise src.fail(rel, "has no 'examples' list")
        out[(task, "test")] = [{"input": r["input"], "target": r["target"]}
                               for n, r in enumerate(data["examples"], 1)
                               if src.check_keys(rel, r, ("input", "target"), f"example {n}")]
        cot = f"bbh/cot-prompts/{task}.txt"
        out[(task, "fewshot")] = parse_cot_prompt(src.text(cot), cot, src)[1]
    return out


def convert_math(src: SourceReader) -> Rows:
    rel = "math/test.jsonl"
    out: Rows = {(config, "test"): [] for config in MATH_TYPES.values()}
    for number, r in enumerate(src.jsonl(rel, ("problem", "level", "type", "solution")), 1):
        if r["type"] not in MATH_TYPES:
            raise src.fail(rel, f"line {number}: unknown type '{r['type']}'")
        out[(MATH_TYPES[r["type"]], "test")].append(
            {"problem": r["problem"], "level": r["level"], "type": r["type"], "solution": r["solution"]})
    return out


HUMANEVAL_KEYS = ("task_id", "prompt", "canonical_solution", "test", "entry_point")


def convert_humaneval(src: SourceReader) -> Rows:
    rows = src.jsonl("humaneval/HumanEval.jsonl.gz", HUMANEVAL_KEYS)
    return {(DEFAULT_CONFIG, "test"): [{k: r[k] for k in HUMANEVAL_KEYS} for r in rows]}


def convert_humaneval_fim(src: SourceReader) -> Rows:
    keys = ("task_id", "entry_point", "prompt", "suffix", "canonical_solution", "test")
    return {(config, "test"): [{k: r[k] for k in keys}
                               for r in src.jsonl(f"humaneval_infilling/{config}.jsonl.gz", keys)]
            for config in HUMANEVAL_INFILLING}


def _mbpp_split(src: SourceReader, rel: str, task_id: Any) -> str:
    for split, first, last in MBPP_SPLITS:
        if isinstance(task_id, int) and first <= task_id <= last:
            return split
    raise src.fail(rel, f"task_id {task_id!r} is outside MBPP's 1-974")


def convert_mbpp(src: SourceReader) -> Rows:
    out: Rows = {(config, split): [] for config in ("full", "sanitized") for split, _, _ in MBPP_SPLITS}
    full_keys = ("task_id", "text", "code", "test_list", "test_setup_code", "challenge_test_list")
    rel = "mbpp/mbpp.jsonl"
    for r in sorted(src.jsonl(rel, full_keys), key=lambda r: r["task_id"]):
        out[("full", _mbpp_split(src, rel, r["task_id"]))].append({k: r[k] for k in full_keys})
    rel = "mbpp/sanitized-mbpp.json"
    data = src.json(rel)
    if not isinstance(data, list) or not data:
        raise src.fail(rel, "is not a JSON list of problems")
    keys = ("source_file", "task_id", "prompt", "code", "test_imports", "test_list")
    for n, r in enumerate(sorted(data, key=lambda r: r.get("task_id", 0)), 1):
        src.check_keys(rel, r, keys[1:], f"item {n}")
        out[("sanitized", _mbpp_split(src, rel, r["task_id"]))].append(
            {"source_file": r.get("source_file", ""), **{k: r[k] for k in keys[1:]}})
    return out


def convert_mmlu_pro(src: SourceReader) -> Rows:
    keys = ("question_id", "question", "options", "answer", "answer_index", "cot_content", "category", "src")
    rows = src.jsonl("mmlu_pro/test.jsonl.gz", keys)
    return {(DEFAULT_CONFIG, "test"): [{k: r[k] for k in keys} for r in rows]}


def convert_cmmlu(src: SourceReader) -> Rows:
    out: Rows = {}
    for subject in CMMLU_SUBJECTS:
        for split in ("test", "dev"):
            rel = f"cmmlu/{split}/{subject}.csv"
            rows = src.csv(rel, ["", "Question", "A", "B", "C", "D", "Answer"])
            out[(subject, split)] = [
                {"Question": r["Question"], "A": r["A"], "B": r["B"], "C": r["C"], "D": r["D"],
                 "Answer": _letter_index(src, rel, r["Answer"], "ABCD", f"row {n}")}
                for n, r in enumerate(rows, 2)]
    return out


def convert_ceval(src: SourceReader) -> Rows:
    out: Rows = {}
    for subject in CEVAL_SUBJECTS:
        for split in ("val", "dev"):
            rel = f"ceval/{split}/{subject}_{split}.csv"
            rows = src.csv(rel, ["id", "question", "A", "B", "C", "D", "answer"], optional=("explanation",))
            out[(subject, split)] = [
                {"id": int(r["id"]), "question": r["question"], "A": r["A"], "B": r["B"], "C": r["C"],
                 "D": r["D"], "answer": _letter_index(src, rel, r["answer"], "ABCD", f"row {n}"),
                 "explanation": r.get("explanation", "")}
                for n, r in enumerate(rows, 2)]
    return out


GPQA_COLUMNS = ["Question", "Correct Answer", "Incorrect Answer 1", "Incorrect Answer 2", "Incorrect Answer 3"]


def convert_gpqa(src: SourceReader) -> Rows:
    rel = "gpqa/gpqa_main.csv"
    text = src.text(rel)
    reader = csv.DictReader(io.StringIO(text, newline=""))
    missing = [c for c in GPQA_COLUMNS if c not in (reader.fieldnames or [])]
    if missing:
        raise src.fail(rel, f"lacks column(s) {', '.join(missing)}",
                       "use gpqa_main.csv from the official dataset.zip (github.com/idavidrein/gpqa)")
    rows = [dict(r) for r in reader]
    if not rows:
        raise src.fail(rel, "holds no rows")
    return {("gpqa_main", "train"): rows}


CONVERTERS: dict[str, Callable[[SourceReader], Rows]] = {
    "mmlu": convert_mmlu, "mmlu_pro": convert_mmlu_pro, "bbh": convert_bbh, "arc_challenge": convert_arc_challenge,
    "hellaswag": convert_hellaswag, "truthfulqa": convert_truthfulqa, "winogrande": convert_winogrande,
    "piqa": convert_piqa, "gsm8k": convert_gsm8k, "math": convert_math, "gpqa": convert_gpqa,
    "humaneval": convert_humaneval, "humaneval_fim": convert_humaneval_fim, "mbpp": convert_mbpp,
    "cmmlu": convert_cmmlu, "ceval": convert_ceval,
}
