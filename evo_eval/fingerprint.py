"""What produced a benchmark's results, as a comparable record: the key for reusing a results file.

A results file is reused by a later run only when the later run would produce it again: same card
(family, shape, dtype, decoding and likelihood settings, chat template), same weights (checkpoint and
revision), same protocol (task definition files, shots, limit, data manifest, few-shot seed) and the
same user overrides (model args, generation kwargs, seed, dtype). Everything here is known before a
model is loaded, so the decision costs nothing; the task folder's files stand for the prompts (they
are what renders them), the data manifest for the documents.

Presentation-only card fields (column header, paper facts, sources, notes) are left out: editing a
note must not redo a week of GPU time. Package versions are left out too (the journal keys on them);
a results file records them in its provenance.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from .data.prompts import FEWSHOT_SEED

# The card fields that change what a model answers.
_CARD_FIELDS = ("family", "shape", "tokenizer", "likelihood", "chat_template")


def _canonical(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, ensure_ascii=False, default=str, separators=(",", ":"))


def _digest(obj: Any) -> str:
    return hashlib.sha256(_canonical(obj).encode("utf-8")).hexdigest()


def folder_hash(folder: Path | None) -> str | None:
    """sha256 over every file (relative name and bytes) under a task's folder, caches excluded."""
    if folder is None or not Path(folder).is_dir():
        return None
    digest = hashlib.sha256()
    for path in sorted(Path(folder).rglob("*")):
        if path.is_file() and "__pycache__" not in path.parts and not path.name.endswith(".pyc"):
            digest.update(str(path.relative_to(folder)).encode("utf-8") + b"\0")
            digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()


def benchmark_fingerprint(*, card: Any, checkpoint: str, revision: str | None, benchmark: str, task: str,
                          shots: int, limit: int | float | None, dtype: str | None, seed: int,
                          model_args: dict[str, Any] | None, gen_kwargs: dict[str, Any] | None,
                          data_manifest: str | None, task_files: str | None,
                          overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """{"sha256": ..., "fields": {...}}: the fields are kept so a mismatch can say what changed."""
    card_dict = card.to_dict()
    fields = {
        "card": card.name,
        "card_settings": _digest({k: card_dict.get(k) for k in _CARD_FIELDS}),
        "checkpoint": checkpoint,
        "revision": revision,
        "dtype": dtype or card.dtype,
        "decoding": card.decoding_for(benchmark) | dict(overrides or {}),
        "task": task,
        "task_files": task_files,
        "shots": shots,
        "limit": limit,
        "data_manifest": data_manifest,
        "fewshot_seed": FEWSHOT_SEED,
        "seed": seed,
        "model_args": dict(model_args or {}),
        "gen_kwargs": dict(gen_kwargs or {}),
    }
    fields = json.loads(_canonical(fields))  # as a results file will hold them, so comparisons are exact
    return {"sha256": _digest(fields), "fields": fields}


_LABELS = {"card_settings": "card settings", "task_files": "task definition", "data_manifest": "data manifest",
           "fewshot_seed": "few-shot seed", "model_args": "--model-args", "gen_kwargs": "--gen-kwargs",
           "limit": "--limit", "shots": "shots", "checkpoint": "checkpoint", "dtype": "dtype", "seed": "--seed"}


def _show(value: Any) -> str:
    if value is None:
        return "none"
    if isinstance(value, dict):
        return ",".join(f"{k}={v}" for k, v in sorted(value.items())) or "none"
    text = str(value)
    return text if len(text) <= 60 else "…" + text[-57:]


def differences(stored: dict[str, Any] | None, current: dict[str, Any]) -> list[str]:
    """What changed between a results file's fingerprint and this run's, one phrase per field.

    An empty list means the file is this run's result; a file without a fingerprint (written by an
    evo-eval before fingerprints) cannot be shown to match, so it counts as changed.
    """
    if not isinstance(stored, dict) or not isinstance(stored.get("fields"), dict):
        return ["it records no fingerprint (written by an older evo-eval)"]
    old, new = stored["fields"], current["fields"]
    out = []
    for key in sorted(set(old) | set(new), key=lambda k: list(new).index(k) if k in new else len(new)):
        if old.get(key) == new.get(key):
            continue
        label = _LABELS.get(key, key)
        if key in ("card_settings", "task_files", "data_manifest") or len(_show(old.get(key))) > 60:
            out.append(f"{label} changed")
        else:
            out.append(f"{label} {_show(old.get(key))} → {_show(new.get(key))}")
    return out


# Results replaced because the settings changed are kept here, beside the results, never read by report/.
SUPERSEDED = ".superseded"


def supersede(path: Path, fingerprint: dict[str, Any]) -> Path | None:
    """Move a results file made with other settings aside before this run's result takes its name.

    A re-run with the same fingerprint (``--force``) replaces the file; one with other settings keeps
    the old numbers as ``.superseded/<benchmark>.<old fingerprint>.json``, so no finished work is lost.
    """
    path = Path(path)
    if not path.is_file():
        return None
    try:
        old = json.loads(path.read_text(encoding="utf-8")).get("fingerprint")
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, AttributeError):
        return None  # unreadable: --force was given to replace it
    if isinstance(old, dict) and old.get("sha256") == fingerprint["sha256"]:
        return None
    tag = old.get("sha256", "")[:12] if isinstance(old, dict) and isinstance(old.get("sha256"), str) else "unfingerprinted"
    target = path.parent / SUPERSEDED / f"{path.stem}.{tag}.json"
    target.parent.mkdir(parents=True, exist_ok=True)
    path.replace(target)
    return target
