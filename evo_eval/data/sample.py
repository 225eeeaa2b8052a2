"""The benchmark sample that ships inside the package: a few real documents of every benchmark, in the
publishers' own formats (the layout of shared/benchdata), so the demo runs on a machine that has
nothing but evo-eval installed.

``evo_eval/resources/benchdata`` is written by ``write_sample(SRC, DST)`` from the full publishers' files
(``python -m evo_eval.data.sample SRC``); it is a strict subset of them (tests/data/test_sample.py checks
every row against the full files when they are present). Rows are chosen by a fixed rule so the sample is
reproducible, and as few as the paper's shot counts allow: the evaluated split keeps a couple of
documents, a few-shot split keeps as many as the largest shot count draws from it. Among the eligible rows
the shortest are kept (the sample is for showing the pipeline, not for measuring anything), in the
publisher's order. GPQA is absent: its authors ask that the questions not be re-published.

Full data stays where it was: the hub, or a mirror made with ``evo-eval data import SRC``.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import io
import json
import shutil
import sys
from pathlib import Path
from typing import Any, Callable

from .catalog import (
    BBH_TASKS, CATALOG, CEVAL_SUBJECTS, CMMLU_SUBJECTS, HUMANEVAL_INFILLING, MATH_TYPES, MMLU_PRO_CATEGORIES,
    MMLU_SUBJECTS,
)
from ..errors import DataError

# Documents kept from an evaluated split, and from a few-shot split (the paper's largest shot count
# drawn from it: 5 for MMLU/CMMLU/C-Eval dev, 25 for ARC-C dev, 4 for GSM8K train).
EVAL_ROWS = 2
SHOT_ROWS = {"mmlu": 5, "cmmlu": 5, "ceval": 5, "arc_challenge": 25, "gsm8k": 4}
# WinoGrande and PIQA have only their evaluation split, and WinoGrande draws its 5 shots from it.
SAME_SPLIT_ROWS = {"winogrande": 8, "piqa": 4, "hellaswag": 4, "truthfulqa": 4, "humaneval": 4}
# MBPP by task_id: the prompt split the shots come from (1-5 covers the 4-shot order 2, 3, 4, 1), and two
# problems of each other split, so every split of the mirror holds rows.
MBPP_IDS = (1, 2, 3, 4, 5, 11, 12, 511, 512, 601, 602)
# Infilling shots come from other problems of the same file: items of four problems leave two to draw.
FIM_PROBLEMS = 4
LICENCE_FILES = ("LICENSE",)


def _shortest(rows: list, n: int, size: Callable[[Any], int]) -> list:
    """The ``n`` shortest rows, in their original order (ties by position)."""
    keep = sorted(sorted(range(len(rows)), key=lambda i: (size(rows[i]), i))[:n])
    return [rows[i] for i in keep]


def _text(path: Path) -> str:
    raw = path.read_bytes()
    if path.name.endswith(".gz"):
        raw = gzip.decompress(raw)
    return raw.decode("utf-8")


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    data = text.encode("utf-8")
    # mtime=0 and no file name: the same rows always give the same bytes.
    path.write_bytes(gzip.compress(data, mtime=0) if path.name.endswith(".gz") else data)


def _jsonl_lines(path: Path) -> list[str]:
    return [line for line in _text(path).split("\n") if line.strip()]


def _csv_subset(src: Path, dst: Path, n: int) -> None:
    text = _text(src)
    bom = "\ufeff" if text.startswith("\ufeff") else ""
    rows = list(csv.reader(io.StringIO(text.removeprefix("\ufeff"), newline="")))
    header, body = rows[0], [r for r in rows[1:] if r]
    terminator = "\r\n" if "\r\n" in text[:4096] else "\n"
    out = io.StringIO()
    writer = csv.writer(out, lineterminator=terminator)
    writer.writerow(header)
    writer.writerows(_shortest(body, n, lambda r: sum(len(c) for c in r)))
    _write(dst, bom + out.getvalue())


def _jsonl_subset(src: Path, dst: Path, n: int) -> list[int]:
    lines = _jsonl_lines(src)
    chosen = _shortest(list(enumerate(lines)), n, lambda item: len(item[1]))
    _write(dst, "".join(line + "\n" for _, line in chosen))
    return [i for i, _ in chosen]


def _by_group(src: Path, dst: Path, group: Callable[[dict], str], groups, n: int) -> None:
    lines = _jsonl_lines(src)
    keep: set[int] = set()
    for name in groups:
        members = [(i, line) for i, line in enumerate(lines) if group(json.loads(line)) == name]
        if not members:
            raise DataError(f"{src} has no rows of '{name}'", "pass the full publishers' files as SRC")
        keep |= {i for i, _ in _shortest(members, n, lambda item: len(item[1]))}
    _write(dst, "".join(lines[i] + "\n" for i in sorted(keep)))


def _with_labels(src: Path, labels: Path, dst: Path, n: int) -> None:
    chosen = _jsonl_subset(src, dst / src.name, n)
    values = [line for line in labels.read_text(encoding="utf-8").splitlines() if line.strip()]
    _write(dst / labels.name, "".join(values[i] + "\n" for i in chosen))


# ---- one rule per benchmark folder ----------------------------------------------------------------


def _mmlu(src: Path, dst: Path) -> None:
    for subject in MMLU_SUBJECTS:
        for split, n in (("test", EVAL_ROWS), ("dev", SHOT_ROWS["mmlu"])):
            rel = f"{split}/{subject}_{split}.csv"
            _csv_subset(src / rel, dst / rel, n)


def _cmmlu(src: Path, dst: Path) -> None:
    for subject in CMMLU_SUBJECTS:
        for split, n in (("test", EVAL_ROWS), ("dev", SHOT_ROWS["cmmlu"])):
            _csv_subset(src / split / f"{subject}.csv", dst / split / f"{subject}.csv", n)


def _ceval(src: Path, dst: Path) -> None:
    for subject in CEVAL_SUBJECTS:
        for split, n in (("val", EVAL_ROWS), ("dev", SHOT_ROWS["ceval"])):
            rel = f"{split}/{subject}_{split}.csv"
            _csv_subset(src / rel, dst / rel, n)


def _arc(src: Path, dst: Path) -> None:
    _jsonl_subset(src / "ARC-Challenge-Test.jsonl", dst / "ARC-Challenge-Test.jsonl", EVAL_ROWS)
    _jsonl_subset(src / "ARC-Challenge-Dev.jsonl", dst / "ARC-Challenge-Dev.jsonl", SHOT_ROWS["arc_challenge"])


def _gsm8k(src: Path, dst: Path) -> None:
    _jsonl_subset(src / "test.jsonl", dst / "test.jsonl", EVAL_ROWS)
    _jsonl_subset(src / "train.jsonl", dst / "train.jsonl", SHOT_ROWS["gsm8k"])


def _bbh(src: Path, dst: Path) -> None:
    for task in BBH_TASKS:
        data = json.loads(_text(src / f"{task}.json"))
        data["examples"] = _shortest(data["examples"], EVAL_ROWS, lambda r: len(json.dumps(r)))
        _write(dst / f"{task}.json", json.dumps(data, indent=2, ensure_ascii=False) + "\n")
        # The authors' 3 chain-of-thought exemplars are the shots: copied whole.
        _write(dst / "cot-prompts" / f"{task}.txt", _text(src / "cot-prompts" / f"{task}.txt"))


def _hellaswag(src: Path, dst: Path) -> None:
    name = "hellaswag_val_preprocessed.jsonl.gz"
    _jsonl_subset(src / name, dst / name, SAME_SPLIT_ROWS["hellaswag"])


def _truthfulqa(src: Path, dst: Path) -> None:
    items = json.loads(_text(src / "mc_task.json"))
    chosen = _shortest(items, SAME_SPLIT_ROWS["truthfulqa"], lambda r: len(json.dumps(r)))
    _write(dst / "mc_task.json", json.dumps(chosen, indent=2, ensure_ascii=False) + "\n")


def _winogrande(src: Path, dst: Path) -> None:
    _with_labels(src / "winogrande_dev.jsonl", src / "dev-labels.lst", dst, SAME_SPLIT_ROWS["winogrande"])


def _piqa(src: Path, dst: Path) -> None:
    _with_labels(src / "dev.jsonl", src / "dev-labels.lst", dst, SAME_SPLIT_ROWS["piqa"])


def _math(src: Path, dst: Path) -> None:
    _by_group(src / "test.jsonl", dst / "test.jsonl", lambda r: r["type"], MATH_TYPES, EVAL_ROWS)


def _mmlu_pro(src: Path, dst: Path) -> None:
    _by_group(src / "test.jsonl.gz", dst / "test.jsonl.gz", lambda r: r["category"], MMLU_PRO_CATEGORIES, 1)


def _humaneval(src: Path, dst: Path) -> None:
    _jsonl_subset(src / "HumanEval.jsonl.gz", dst / "HumanEval.jsonl.gz", SAME_SPLIT_ROWS["humaneval"])


def _humaneval_infilling(src: Path, dst: Path) -> None:
    for config in HUMANEVAL_INFILLING:
        lines = _jsonl_lines(src / f"{config}.jsonl.gz")
        seen: dict[str, str] = {}
        for line in lines:  # the first item of each of the first problems
            problem = "/".join(json.loads(line)["task_id"].split("/")[1:3])
            if problem not in seen and len(seen) < FIM_PROBLEMS:
                seen[problem] = line
        _write(dst / f"{config}.jsonl.gz", "".join(line + "\n" for line in seen.values()))


def _mbpp(src: Path, dst: Path) -> None:
    lines = [line for line in _jsonl_lines(src / "mbpp.jsonl") if json.loads(line)["task_id"] in MBPP_IDS]
    _write(dst / "mbpp.jsonl", "".join(line + "\n" for line in lines))
    sanitized = [r for r in json.loads(_text(src / "sanitized-mbpp.json")) if r["task_id"] in MBPP_IDS]
    _write(dst / "sanitized-mbpp.json", json.dumps(sanitized, indent=1, ensure_ascii=False) + "\n")


RULES: dict[str, Callable[[Path, Path], None]] = {
    "mmlu": _mmlu, "mmlu_pro": _mmlu_pro, "bbh": _bbh, "arc_challenge": _arc, "hellaswag": _hellaswag,
    "truthfulqa": _truthfulqa, "winogrande": _winogrande, "piqa": _piqa, "gsm8k": _gsm8k, "math": _math,
    "humaneval": _humaneval, "humaneval_infilling": _humaneval_infilling, "mbpp": _mbpp,
    "cmmlu": _cmmlu, "ceval": _ceval,
}
FOLDER_KEY = {spec.source_folder: key for key, spec in CATALOG.items()}


def write_sample(src: Path, dst: Path) -> None:
    """Write the sample of the full publishers' files ``src`` into ``dst`` (replacing it)."""
    src, dst = Path(src), Path(dst)
    if dst.exists():
        shutil.rmtree(dst)
    for folder, rule in RULES.items():
        rule(src / folder, dst / folder)
        for name in LICENCE_FILES:
            if (src / folder / name).is_file():
                shutil.copyfile(src / folder / name, dst / folder / name)
    files = sorted(p for p in dst.rglob("*") if p.is_file())
    sums = "".join(f"{hashlib.sha256(p.read_bytes()).hexdigest()}  ./{p.relative_to(dst).as_posix()}\n"
                   for p in files)
    (dst / "SHA256SUMS").write_text(sums, encoding="utf-8")
    (dst / "README.md").write_text(_readme(dst), encoding="utf-8")


def _readme(dst: Path) -> str:
    lines = [
        "# Benchmark sample (ships inside evo-eval)",
        "",
        "A few real documents of every benchmark, in the publishers' formats and the layout of the full",
        "offline data (shared/benchdata), so `evo-eval demo` runs with nothing but the package installed.",
        "Written by `python -m evo_eval.data.sample SRC` from the full files; every row is a verbatim copy",
        "of a row there (the rule is in evo_eval/data/sample.py: the shortest rows, as many as the paper's",
        "shot counts need). It is for showing the pipeline, not for measuring models: real runs read the",
        "hub, or a mirror made with `evo-eval data import SRC` from the full files.",
        "",
        "Each folder keeps its own licence; the licence files the publishers ship are copied beside their",
        "data. CMMLU and C-Eval are CC BY-NC-SA 4.0: their sample rows may be shared for non-commercial",
        "use, with attribution, under the same licence, and are not covered by evo-eval's MIT licence.",
        "GPQA is not here: its authors ask that its questions not be re-published in plain text.",
        "",
        "| folder | benchmark | size (bytes) | source (repository @ commit : path) | licence |",
        "|---|---|---|---|---|",
    ]
    for folder in RULES:
        spec = CATALOG[FOLDER_KEY[folder]]
        size = sum(p.stat().st_size for p in (dst / folder).rglob("*") if p.is_file())
        lines.append(f"| {folder} | {spec.hub_path} | {size:,} | {spec.source} | {spec.licence} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    from ..paths import sample_benchdata_dir

    if len(sys.argv) != 2:
        sys.exit("usage: python -m evo_eval.data.sample SRC  (the full publishers' files, e.g. ../shared/benchdata)")
    write_sample(Path(sys.argv[1]), sample_benchdata_dir())
    print(f"wrote {sample_benchdata_dir()}")
