"""Mirror import and verification on the real publishers' files, and every way a source or mirror can be bad."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest

from evo_eval.data.mirror import default_mirror_dir, import_mirror, mirror_has, mirror_problem, verify_mirror
from evo_eval.errors import DataError, UnknownNameError

# Rows per (benchmark, split) from shared/benchdata/README.md.
README_ROWS = {
    ("gsm8k", "test"): 1319, ("gsm8k", "train"): 7473, ("mmlu", "test"): 14042, ("mmlu", "dev"): 285,
    ("arc_challenge", "test"): 1172, ("arc_challenge", "validation"): 299, ("truthfulqa", "validation"): 817,
    ("bbh", "test"): 6511, ("hellaswag", "validation"): 10042, ("winogrande", "validation"): 1267,
    ("piqa", "validation"): 1838, ("math", "test"): 5000, ("mmlu_pro", "test"): 12032,
    ("cmmlu", "test"): 11582, ("cmmlu", "dev"): 335, ("ceval", "val"): 1346, ("ceval", "dev"): 260,
    ("humaneval", "test"): 164, ("humaneval_fim", "test"): 1033 + 5815 + 1640 + 164,
    ("mbpp", "test"): 500 + 257, ("mbpp", "prompt"): 10 + 7,  # full + sanitized
}


@pytest.fixture(scope="module")
def mirror(benchdata, tmp_path_factory) -> Path:
    dst = tmp_path_factory.mktemp("mirror") / "data"
    import_mirror(benchdata, dst)
    return dst


def _small_src(benchdata: Path, tmp_path: Path, *folders: str) -> Path:
    src = tmp_path / "src"
    for folder in folders:
        shutil.copytree(benchdata / folder, src / folder)
    return src


def test_import_counts_every_split_as_published(mirror):
    manifest = json.loads((mirror / "manifest.json").read_text(encoding="utf-8"))
    rows: dict[tuple[str, str], int] = {}
    for entry in manifest["files"].values():
        key = (entry["benchmark"], entry["split"])
        rows[key] = rows.get(key, 0) + entry["rows"]
    for key, expected in README_ROWS.items():
        assert rows[key] == expected, key
    assert sorted(manifest["benchmarks"]) == sorted(
        {"gsm8k", "mmlu", "arc_challenge", "truthfulqa", "bbh", "hellaswag", "winogrande", "piqa", "math",
         "mmlu_pro", "cmmlu", "ceval", "humaneval", "humaneval_fim", "mbpp"})
    assert manifest["benchmarks"]["gsm8k"] == {
        "hub": "openai/gsm8k", "licence": "MIT",
        "source": "openai/grade-school-math @3101c7d5 : grade_school_math/data/"}
    entry = manifest["files"]["mmlu/anatomy/dev.jsonl"]
    data = (mirror / "mmlu/anatomy/dev.jsonl").read_bytes()
    assert entry == {"benchmark": "mmlu", "config": "anatomy", "split": "dev", "rows": 5,
                     "sha256": hashlib.sha256(data).hexdigest()}


def test_rows_are_in_the_hub_schema(mirror):
    first = json.loads((mirror / "mmlu/anatomy/dev.jsonl").read_text(encoding="utf-8").splitlines()[0])
    assert first == {"question": "What is the embryological origin of the hyoid bone?", "subject": "anatomy",
                     "choices": ["The first pharyngeal arch", "The first and second pharyngeal arches",
                                 "The second pharyngeal arch", "The second and third pharyngeal arches"],
                     "answer": 3}
    arc = json.loads((mirror / "arc_challenge/ARC-Challenge/validation.jsonl").read_text().splitlines()[0])
    assert arc["id"] == "Mercury_SC_407695" and arc["answerKey"] == "D"
    assert arc["choices"]["label"] == ["A", "B", "C", "D"] and arc["choices"]["text"][0] == "Put the objects in groups."
    mbpp = [json.loads(line) for line in (mirror / "mbpp/full/prompt.jsonl").read_text().splitlines()]
    assert [r["task_id"] for r in mbpp] == list(range(1, 11))


def test_verify_and_membership(mirror):
    manifest = verify_mirror(mirror)
    assert len(manifest["files"]) == 435
    assert mirror_has(mirror, "mmlu") and not mirror_has(mirror, "gpqa")
    assert mirror_problem(mirror, "gsm8k", 4) is None
    assert mirror_problem(mirror, "mmlu_pro", 0) is None
    assert "hub-only split 'validation'" in mirror_problem(mirror, "mmlu_pro", 5)
    assert "Idavidrein/gpqa" in mirror_problem(mirror, "gpqa", 5)


def test_reimport_is_idempotent_and_leaves_no_temporaries(benchdata, tmp_path):
    src = _small_src(benchdata, tmp_path, "gsm8k", "piqa")
    dst = tmp_path / "mirror"
    first = import_mirror(src, dst, ["gsm8k", "piqa"])
    before = {p.name: p.read_bytes() for p in dst.rglob("*") if p.is_file()}
    assert import_mirror(src, dst, ["gsm8k", "piqa"]) == first
    assert {p.name: p.read_bytes() for p in dst.rglob("*") if p.is_file()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mirror", "src"]


def test_partial_reimport_keeps_other_benchmarks(benchdata, tmp_path):
    src = _small_src(benchdata, tmp_path, "gsm8k", "piqa")
    dst = tmp_path / "mirror"
    import_mirror(src, dst, ["gsm8k", "piqa"])
    manifest = import_mirror(src, dst, ["piqa"])
    assert sorted(manifest["benchmarks"]) == ["gsm8k", "piqa"]
    verify_mirror(dst)
    (dst / "gsm8k/main/train.jsonl").unlink()
    with pytest.raises(DataError, match=r"train\.jsonl is missing from the mirror, so it cannot be kept"):
        import_mirror(src, dst, ["piqa"])
    import_mirror(src, dst, ["gsm8k"])  # re-importing the damaged benchmark repairs the mirror
    verify_mirror(dst)


def test_failed_import_leaves_the_previous_mirror(benchdata, tmp_path):
    src = _small_src(benchdata, tmp_path, "gsm8k")
    dst = tmp_path / "mirror"
    import_mirror(src, dst, ["gsm8k"])
    manifest_before = (dst / "manifest.json").read_bytes()
    (src / "gsm8k" / "train.jsonl").write_text('{"question": "q"}\n', encoding="utf-8")
    with pytest.raises(DataError, match=r"train\.jsonl: line 1 lacks field\(s\) answer"):
        import_mirror(src, dst, ["gsm8k"])
    assert (dst / "manifest.json").read_bytes() == manifest_before
    verify_mirror(dst)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mirror", "src"]


@pytest.mark.parametrize("damage, message", [
    (lambda src: (src / "piqa" / "dev-labels.lst").unlink(), r"piqa/dev-labels\.lst: file is missing"),
    (lambda src: (src / "piqa" / "dev.jsonl").write_bytes(b'{"goal": "caf\xe9"}\n'), r"dev\.jsonl: is not UTF-8 text"),
    (lambda src: (src / "piqa" / "dev.jsonl").write_text("{not json\n"), r"dev\.jsonl: line 1 is not valid JSON"),
    (lambda src: (src / "piqa" / "dev-labels.lst").write_text("0\n1\n"), r"has 2 labels for 1838 questions"),
    (lambda src: (src / "piqa" / "dev-labels.lst").write_text("2\n" * 1838), r"line 1: label '2' is not 0 or 1"),
])
def test_bad_source_files_are_refused_in_one_line(benchdata, tmp_path, damage, message):
    src = _small_src(benchdata, tmp_path, "piqa")
    damage(src)
    with pytest.raises(DataError, match=message) as err:
        import_mirror(src, tmp_path / "mirror", ["piqa"])
    assert "\n" not in str(err.value) and "evo-eval data import SRC" in str(err.value)
    assert not (tmp_path / "mirror").exists()


def test_wrong_csv_columns_are_refused(benchdata, tmp_path):
    src = _small_src(benchdata, tmp_path, "mmlu")
    path = src / "mmlu" / "test" / "anatomy_test.csv"
    path.write_text(path.read_text(encoding="utf-8").replace("choice3,answer", "choice3,label", 1), encoding="utf-8")
    with pytest.raises(DataError, match=r"anatomy_test\.csv: has columns .*'label'\], expected .*'answer'\]"):
        import_mirror(src, tmp_path / "mirror", ["mmlu"])


def test_source_checksums_are_enforced(benchdata, tmp_path):
    src = _small_src(benchdata, tmp_path, "gsm8k")
    shutil.copy(benchdata / "SHA256SUMS", src / "SHA256SUMS")
    lines = (src / "gsm8k" / "test.jsonl").read_text(encoding="utf-8").split("\n")
    (src / "gsm8k" / "test.jsonl").write_text("\n".join(lines[:100]) + "\n", encoding="utf-8")  # truncated
    with pytest.raises(DataError, match=r"gsm8k/test\.jsonl does not match its sha256 in .*SHA256SUMS"):
        import_mirror(src, tmp_path / "mirror", ["gsm8k"])


def test_missing_folders_unknown_names_and_foreign_destinations(benchdata, tmp_path):
    src = _small_src(benchdata, tmp_path, "gsm8k")
    with pytest.raises(DataError, match=r"lacks the folder\(s\) mmlu, mmlu_pro, bbh, .* — restore them, or import a subset with --only"):
        import_mirror(src, tmp_path / "mirror")
    with pytest.raises(UnknownNameError, match="unknown benchmark 'gsm8kk' — did you mean gsm8k"):
        import_mirror(src, tmp_path / "mirror", ["gsm8kk"])
    with pytest.raises(DataError, match="source folder .*nowhere does not exist"):
        import_mirror(tmp_path / "nowhere", tmp_path / "mirror", ["gsm8k"])
    foreign = tmp_path / "home"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(DataError, match="is not empty and holds no manifest.json"):
        import_mirror(src, foreign, ["gsm8k"])
    assert (foreign / "notes.txt").read_text() == "mine"


def test_gpqa_needs_the_users_file(benchdata, tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    for folder in benchdata.iterdir():
        (src / folder.name).symlink_to(folder)
    with pytest.raises(DataError, match="gpqa_main.csv is missing; GPQA has no public copy — it needs the gated hub dataset Idavidrein/gpqa"):
        import_mirror(src, tmp_path / "mirror", ["gpqa"])
    # Made-up questions in the official columns: the real ones must not be re-published.
    (src / "gpqa").mkdir()
    header = "Question,Correct Answer,Incorrect Answer 1,Incorrect Answer 2,Incorrect Answer 3,Subdomain\n"
    (src / "gpqa" / "gpqa_main.csv").write_text(header + "What is 2+2?,4,3,5,22,Arithmetic\n", encoding="utf-8")
    manifest = import_mirror(src, tmp_path / "mirror")  # a default import picks GPQA up when the file is there
    assert manifest["files"]["gpqa/gpqa_main/train.jsonl"]["rows"] == 1
    assert mirror_has(tmp_path / "mirror", "gpqa") and mirror_problem(tmp_path / "mirror", "gpqa", 5) is None
    (src / "gpqa" / "gpqa_main.csv").write_text("Question,Answer\nq,a\n", encoding="utf-8")
    with pytest.raises(DataError, match="lacks column\\(s\\) Correct Answer, Incorrect Answer 1"):
        import_mirror(src, tmp_path / "mirror", ["gpqa"])


@pytest.mark.parametrize("damage, message", [
    (lambda d: (d / "gsm8k/main/test.jsonl").unlink(), r"gsm8k/main/test\.jsonl is missing from the mirror"),
    (lambda d: (d / "gsm8k/main/test.jsonl").write_bytes((d / "gsm8k/main/test.jsonl").read_bytes()[:-500]),
     r"test\.jsonl does not match its sha256 in manifest\.json"),
    (lambda d: (d / "manifest.json").unlink(), r"holds no manifest\.json"),
    (lambda d: (d / "manifest.json").write_text("{"), r"manifest\.json is not valid JSON"),
])
def test_verify_names_the_bad_file_and_the_fix(benchdata, tmp_path, damage, message):
    dst = tmp_path / "mirror"
    import_mirror(_small_src(benchdata, tmp_path, "gsm8k"), dst, ["gsm8k"])
    damage(dst)
    with pytest.raises(DataError, match=message) as err:
        verify_mirror(dst)
    assert str(err.value).endswith("re-run `evo-eval data import SRC`") and "\n" not in str(err.value)


def test_verify_counts_rows(benchdata, tmp_path):
    dst = tmp_path / "mirror"
    import_mirror(_small_src(benchdata, tmp_path, "gsm8k"), dst, ["gsm8k"])
    manifest = json.loads((dst / "manifest.json").read_text())
    manifest["files"]["gsm8k/main/test.jsonl"]["rows"] = 1320
    (dst / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(DataError, match=r"test\.jsonl has 1319 rows, manifest\.json says 1320"):
        verify_mirror(dst)
    with pytest.raises(DataError, match="data folder .*absent does not exist"):
        verify_mirror(tmp_path / "absent")


def test_default_mirror_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("EVO_EVAL_DATA", str(tmp_path / "m"))
    assert default_mirror_dir() == tmp_path / "m"
    monkeypatch.delenv("EVO_EVAL_DATA")
    assert default_mirror_dir() == Path.home() / ".cache" / "evo-eval" / "data"
