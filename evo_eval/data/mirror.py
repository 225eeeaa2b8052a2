"""Local benchmark mirrors: import the publishers' files into one layout, verify it, ask what it holds.

A mirror is ``<dir>/<benchmark>/<config>/<split>.jsonl`` (rows in the hub dataset's columns; see
data_catalog.py) plus ``<dir>/manifest.json``: per file its benchmark, config, split, row count and
sha256, and per benchmark its hub id, source and licence. Tasks read it through data/source.py.

Import is all-or-nothing: the new mirror is built beside the old one and swapped in with renames, so
a failed or killed import leaves the previous mirror (or none) in place, never a mix. Re-importing the
same files writes byte-identical files and manifest.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from .catalog import CATALOG, GPQA_FIX
from .convert import CONVERTERS, SourceReader
from ..errors import DataError
from ..paths import default_data_dir

MANIFEST = "manifest.json"
FORMAT = 1
REIMPORT = "re-run `evo-eval data import SRC`"


def default_mirror_dir() -> Path:
    """$EVO_EVAL_DATA, else ~/.cache/evo-eval/data."""
    return default_data_dir() or Path.home() / ".cache" / "evo-eval" / "data"


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# ---- import -----------------------------------------------------------------------------------------


def import_mirror(src: Path, dst: Path, benchmarks: list[str] | None = None) -> dict[str, Any]:
    """Convert the publishers' files under ``src`` into the mirror ``dst``; returns the manifest.

    ``benchmarks`` (keys of data_catalog.CATALOG) picks a subset; benchmarks already in ``dst`` and not
    re-imported are kept. Without it every benchmark is imported, GPQA only when SRC/gpqa/gpqa_main.csv
    is there (its authors do not allow a public copy).
    """
    src, dst = Path(src).expanduser(), Path(dst).expanduser()
    keys = _chosen(src, benchmarks)
    old = _existing_manifest(dst)
    checksums = _source_checksums(src)
    converted = {key: _convert(src, key, checksums) for key in keys}
    stage = Path(tempfile.mkdtemp(prefix=f".{dst.name}.import-", dir=_parent(dst)))
    try:
        manifest = _write_stage(stage, dst, old, converted)
        _swap_in(stage, dst)
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    return manifest


def _chosen(src: Path, benchmarks: list[str] | None) -> list[str]:
    if not src.is_dir():
        raise DataError(f"source folder {src} does not exist",
                        "pass the folder holding the publishers' files (the layout of shared/benchdata)")
    if benchmarks is None:
        missing = [spec.source_folder for spec in CATALOG.values()
                   if not spec.optional and not (src / spec.source_folder).is_dir()]
        if missing:
            raise DataError(f"{src} lacks the folder(s) {', '.join(missing)}",
                            "restore them, or import a subset with --only")
        return [k for k, spec in CATALOG.items() if not spec.optional or (src / spec.source_folder).is_dir()]
    unknown = [k for k in benchmarks if k not in CATALOG]
    if unknown:
        from ..errors import UnknownNameError

        raise UnknownNameError("benchmark", unknown[0], list(CATALOG))
    return list(dict.fromkeys(benchmarks))


def _parent(dst: Path) -> Path:
    dst.parent.mkdir(parents=True, exist_ok=True)
    return dst.parent


def _existing_manifest(dst: Path) -> dict[str, Any] | None:
    if not dst.exists():
        return None
    if not dst.is_dir():
        raise DataError(f"{dst} is a file, not a folder", "choose a folder for --dest")
    if (dst / MANIFEST).is_file():
        return read_manifest(dst)
    if any(dst.iterdir()):
        # Importing swaps the whole folder; never do that to a folder that is not ours.
        raise DataError(f"{dst} is not empty and holds no {MANIFEST}, so it is not an evo-eval mirror",
                        "choose an empty or new folder for --dest")
    return None


def _source_checksums(src: Path) -> dict[str, str]:
    """SHA256SUMS of the source folder, if it has one ({relative path: sha256})."""
    sums = src / "SHA256SUMS"
    if not sums.is_file():
        return {}
    out = {}
    for line in sums.read_text(encoding="utf-8").splitlines():
        digest, _, name = line.strip().partition("  ")
        if digest and name:
            out[name.removeprefix("./")] = digest
    return out


def _convert(src: Path, key: str, checksums: dict[str, str]) -> dict[tuple[str, str], list[dict]]:
    reader = SourceReader(src)
    if key == "gpqa" and not (src / "gpqa" / "gpqa_main.csv").is_file():
        raise DataError(f"{src / 'gpqa' / 'gpqa_main.csv'} is missing; GPQA has no public copy", GPQA_FIX)
    rows = CONVERTERS[key](reader)
    for rel in reader.read:
        expected = checksums.get(rel)
        if expected and sha256_file(src / rel) != expected:
            raise DataError(f"{src / rel} does not match its sha256 in {src / 'SHA256SUMS'}",
                            "restore the publisher's file; it was changed or truncated")
    return rows


def _dump_rows(rows: list[dict]) -> bytes:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows).encode("utf-8")


def _write_stage(stage: Path, dst: Path, old: dict[str, Any] | None,
                 converted: dict[str, dict[tuple[str, str], list[dict]]]) -> dict[str, Any]:
    files: dict[str, dict[str, Any]] = {}
    benchmarks: dict[str, dict[str, Any]] = {}
    if old:  # keep what is not being re-imported, hard-linked when the filesystem allows
        for rel, entry in old["files"].items():
            if entry["benchmark"] not in converted:
                if not (dst / rel).is_file():
                    raise DataError(f"{dst / rel} is missing from the mirror, so it cannot be kept",
                                    "re-import every benchmark (without --only)")
                _link_or_copy(dst / rel, stage / rel)
                files[rel] = entry
        benchmarks = {k: v for k, v in old["benchmarks"].items() if k not in converted}
    for key, tables in converted.items():
        spec = CATALOG[key]
        for (config, split), rows in sorted(tables.items()):
            rel = f"{key}/{config}/{split}.jsonl"
            data = _dump_rows(rows)
            target = stage / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
            files[rel] = {"benchmark": key, "config": config, "split": split, "rows": len(rows),
                          "sha256": hashlib.sha256(data).hexdigest()}
        benchmarks[key] = {"hub": spec.hub_path, "source": spec.source, "licence": spec.licence}
    manifest = {"format": FORMAT,
                "benchmarks": dict(sorted(benchmarks.items())),
                "files": dict(sorted(files.items()))}
    (stage / MANIFEST).write_text(json.dumps(manifest, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    return manifest


def _link_or_copy(source: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)


def _swap_in(stage: Path, dst: Path) -> None:
    if not dst.exists():
        os.replace(stage, dst)
        return
    retired = dst.with_name(f".{dst.name}.old-{os.getpid()}")
    os.replace(dst, retired)
    os.replace(stage, dst)
    shutil.rmtree(retired, ignore_errors=True)


# ---- reading the manifest, verifying ----------------------------------------------------------------


def read_manifest(dst: Path) -> dict[str, Any]:
    """The mirror's manifest.json, checked for its format (DataError when absent or malformed)."""
    path = Path(dst) / MANIFEST
    if not path.is_file():
        raise DataError(f"{dst} holds no {MANIFEST}, so it is not a complete mirror", REIMPORT)
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise DataError(f"{path} is not valid JSON", REIMPORT) from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT or \
            not isinstance(manifest.get("files"), dict) or not isinstance(manifest.get("benchmarks"), dict):
        raise DataError(f"{path} is not an evo-eval mirror manifest (format {FORMAT})", REIMPORT)
    return manifest


def verify_mirror(dst: Path) -> dict[str, Any]:
    """Re-hash and re-count every file of the mirror; returns the manifest, raises DataError on a mismatch."""
    dst = Path(dst).expanduser()
    if not dst.is_dir():
        raise DataError(f"data folder {dst} does not exist", f"create it: {REIMPORT} --dest {dst}")
    manifest = read_manifest(dst)
    for rel, entry in manifest["files"].items():
        path = dst / rel
        if not path.is_file():
            raise DataError(f"{path} is missing from the mirror", REIMPORT)
        data = path.read_bytes()
        if hashlib.sha256(data).hexdigest() != entry["sha256"]:
            raise DataError(f"{path} does not match its sha256 in {MANIFEST} (changed or truncated)", REIMPORT)
        rows = data.count(b"\n")
        if rows != entry["rows"]:
            raise DataError(f"{path} has {rows} rows, {MANIFEST} says {entry['rows']}", REIMPORT)
    return manifest


def mirror_has(dst: Path, benchmark: str) -> bool:
    """Whether the mirror holds a benchmark (a suites.py key); reads only the manifest."""
    return benchmark in read_manifest(Path(dst).expanduser())["benchmarks"]


def mirror_problem(dst: Path, benchmark: str, shots: int = 0) -> str | None:
    """Why a run of ``benchmark`` with ``shots`` cannot be served by the mirror (one line), or None.

    Checks, from the manifest only, that the benchmark was imported and that a few-shot split the
    mirror cannot hold (MMLU-Pro's validation split) is not needed.
    """
    dst = Path(dst).expanduser()
    spec = CATALOG.get(benchmark)
    if spec is None:
        return None
    if not mirror_has(dst, benchmark):
        if spec.gated:
            return f"GPQA is not in the data mirror {dst}: {GPQA_FIX}"
        return f"{benchmark} is not in the data mirror {dst}; re-run `evo-eval data import SRC`"
    if shots > 0 and spec.hub_only_splits:
        return (f"{benchmark} takes its few-shot examples from the hub-only split "
                f"'{spec.hub_only_splits[0]}', which no public file carries — run it with --shots 0 on the "
                "mirror, or without --data-dir to read the hub")
    return None

