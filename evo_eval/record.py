"""What a results file holds for one benchmark: the score lm-eval computed and why it may be missing,
per-document prompt hashes and the protocol fingerprint that tables compare, the settings that
produced the samples, per-request records, and provenance (store.py writes and reads it).

``options`` is run.py's ``RunOptions`` (limit, seed, dtype, device, checkpoint).
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .data.prompts import FEWSHOT_SEED, prompt_hash
from .settings import in_force
from .store import KIND, SCHEMA_VERSION, device_info, provenance, sha256_text, to_json
from .suites import scoring_choice

if TYPE_CHECKING:
    from .cards import ModelCard
    from .suites import SuiteEntry

# Benchmarks whose samples are model-written programs run in the sandbox.
CODE_BENCHMARKS = {"humaneval", "humaneval_fim", "mbpp"}


def main_score(results: dict[str, Any], task: str, metric: str) -> float | None:
    for section in ("groups", "results"):
        block = results.get(section, {}).get(task)
        if block and metric in block and isinstance(block[metric], (int, float)):
            value = float(block[metric])
            # lm-eval reports NaN when a metric is undefined (e.g. TruthfulQA mc2 when every choice's
            # probability underflows): that is no result, shown as a dash, not a number.
            return None if math.isnan(value) else value
    return None


def score_reason(results: dict[str, Any], task: str, metric: str) -> str | None:
    """Why a benchmark that ran has no score: lm-eval computed its metric as NaN (or found no such metric)."""
    for section in ("groups", "results"):
        block = results.get(section, {}).get(task)
        if block and metric in block:
            value = block[metric]
            if isinstance(value, (int, float)) and math.isnan(value):
                return f"lm-eval computed {metric} as NaN (undefined for these outputs)"
            return None
    return f"lm-eval reported no {metric} for {task}"


def prompt_hashes(samples: dict[str, list[dict[str, Any]]]) -> dict[str, dict[str, str]]:
    """{leaf task: {doc_id: hash of the rendered prompt}} from lm-eval's logged samples."""
    out: dict[str, dict[str, str]] = {}
    for task, rows in samples.items():
        per_doc = out.setdefault(task, {})
        for row in rows:
            args = row.get("arguments") or []
            first = args[0] if args else None
            context = first[0] if isinstance(first, (list, tuple)) and first else str(first)
            per_doc[str(row.get("doc_id"))] = prompt_hash(str(context))
    return out


def protocol_fingerprint(results: dict[str, Any], shots: int, data_manifest: str | None) -> str:
    """Hash of what defines the matched protocol for a benchmark: task configs, shots and data.

    Equal fingerprints mean equal prompt templates, few-shot sources and documents, even where each
    post-trained model wraps the prompt in its own chat template.
    """
    configs = {name: {k: v for k, v in cfg.items() if k not in ("metadata",)}
               for name, cfg in sorted(results.get("configs", {}).items())}
    # lm-eval writes functions as "<function f at 0x7f...>": the address differs per process.
    text = re.sub(r" at 0x[0-9a-f]+>", ">", to_json([configs, shots, data_manifest]))
    return sha256_text(text)


def build_record(entry: "SuiteEntry", card: "ModelCard", checkpoint: str, lm: Any, options: Any,
                 outcome: dict[str, Any], data_dir: Path | None, model: str | None = None) -> dict[str, Any]:
    results = outcome["results"]
    samples = results.pop("samples", {})
    metric = entry.benchmark.metric[entry.stage]
    manifest = _manifest_hash(data_dir)
    return {
        "schema_version": SCHEMA_VERSION,
        "kind": KIND,
        "model": model or card.name,
        "card": card.name,
        "column": card.column,
        "system": card.system,
        "stage": entry.stage,
        "benchmark": entry.key,
        "task": entry.task,
        "shots": entry.shots,
        "mode": entry.mode,
        "metric": metric,
        "label": entry.benchmark.label,  # so `table` can show a user's own benchmark from results alone
        "section": entry.benchmark.section,
        "scoring": scoring_choice(entry.key, entry.stage),  # the choice the paper leaves to us, if any
        "score": main_score(results, entry.task, metric),
        "score_reason": score_reason(results, entry.task, metric),
        "limit": options.limit,
        "prompt_hashes": prompt_hashes(samples),
        "protocol": protocol_fingerprint(results, entry.shots, manifest),
        "chat_template": card.chat_template,
        # What produced the samples: the merged settings, with what the requests changed folded in.
        "decoding": in_force(lm.decoding_settings(), outcome["records"]),
        "requests": {"reused_from_journal": outcome["reused"], "computed": outcome["computed"],
                     "per_request": outcome["records"]},
        "lm_eval": results,
        "samples": samples,
        "provenance": provenance(
            checkpoint=checkpoint, revision=None if options.checkpoint else card.revision,
            dtype=_model_dtype(lm, options), device=device_info(options.device),
            seeds={"random": options.seed, "numpy": options.seed, "torch": options.seed, "fewshot": FEWSHOT_SEED},
            shots=entry.shots, limit=options.limit, data_dir=str(data_dir) if data_dir else "hub",
            data_manifest_sha256=manifest, wall_time_s=outcome["wall_s"], world_size=getattr(lm, "world_size", 1),
            weights="checkpoint", **_sandbox_provenance(entry.key),
        ),
    }


def _sandbox_provenance(benchmark: str) -> dict[str, Any]:
    """For code benchmarks: which protections the sandbox had on this machine, which it lacked,
    and how many of this benchmark's programs had their verdict taken split or in one process."""
    if benchmark not in CODE_BENCHMARKS:
        return {}
    from .sandbox.code_exec import protections, take_verdict_counts

    return {"sandbox": protections(), "sandbox_verdicts": take_verdict_counts()}


def _model_dtype(lm: Any, options: Any) -> str:
    """The dtype the weights ran in: our adapters say it; lm-eval's HFLM only has it on its model."""
    dtype = getattr(lm, "dtype", None) or getattr(getattr(lm, "model", None), "dtype", None) or options.dtype
    return str(dtype).removeprefix("torch.")


def _manifest_hash(data_dir: Path | None) -> str | None:
    if data_dir is None:
        return None
    manifest = data_dir / "manifest.json"
    return sha256_text(manifest.read_text(encoding="utf-8")) if manifest.is_file() else None
