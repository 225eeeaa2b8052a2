"""A user's own benchmarks: lm-eval task YAMLs in a folder (``--include-path DIR``) with a small block
that places them in the protocol, so they run with ``evo-eval run --tasks KEY``, are listed by
``suites`` and land in ``table`` without editing the package.

The block goes in the task's (or group's) ``metadata``; lm-eval keeps metadata as it is::

    task: my_arc_easy
    ...                                   # any lm-eval 0.4.13 task config
    metadata:
      evo_eval:
        benchmark: arc_easy               # key for --tasks and the results file name
        label: ARC-E                      # row label in the tables
        section: General Tasks            # one of the paper's sections, or a new one
        stages:                           # the stages this task serves
          base: {shots: 25, mode: likelihood, metric: "acc_norm,none"}

``mode`` is ``likelihood`` or ``generation`` (what the task's output_type does); ``metric`` is the
``<metric>,<filter>`` key of lm-eval's results that the tables report. A benchmark may be split over
two YAMLs, one per stage (e.g. a likelihood task for base and a generative one for instruct).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .errors import UserError

BLOCK = "evo_eval"
MODES = ("likelihood", "generation")
EXAMPLE = ("metadata: {evo_eval: {benchmark: KEY, label: LABEL, section: SECTION, "
           "stages: {base: {shots: N, mode: likelihood, metric: 'acc,none'}}}}")


def load_benchmarks(include_path: Path, builtin: set[str]) -> list[dict[str, Any]]:
    """What the YAMLs under ``include_path`` declare, one dict of ``suites.Benchmark``'s fields per
    benchmark (suites builds them; ``builtin`` are the paper's keys, which a user's may not reuse).
    UserError on a malformed block."""
    from .cards import STAGES

    root = Path(include_path).expanduser()
    if not root.is_dir():
        raise UserError(f"--include-path {root} is not a folder", "pass the folder holding your task YAMLs")
    found: dict[str, dict[str, Any]] = {}
    for path in sorted(root.rglob("*.yaml")):
        config = _read(path)
        block = ((config.get("metadata") or {}) if isinstance(config, dict) else {}).get(BLOCK)
        if block is None:
            continue
        task = config.get("task") or config.get("group")
        if not isinstance(task, str) or not task:
            raise _bad(path, "the file names no `task:` (or `group:`) for the block to describe")
        if not isinstance(block, dict):
            raise _bad(path, f"metadata.{BLOCK} is not a mapping")
        missing = [k for k in ("benchmark", "label", "section", "stages") if not block.get(k)]
        if missing:
            raise _bad(path, f"metadata.{BLOCK} lacks {', '.join(missing)}")
        key = str(block["benchmark"])
        if key in builtin:
            raise _bad(path, f"benchmark '{key}' is one of the paper's; choose another key for your own")
        entry = found.setdefault(key, {"label": str(block["label"]), "section": str(block["section"]),
                                       "task": {}, "shots": {}, "mode": {}, "metric": {}, "files": []})
        if (entry["label"], entry["section"]) != (str(block["label"]), str(block["section"])):
            raise _bad(path, f"benchmark '{key}' has another label or section in {entry['files'][0]}")
        entry["files"].append(path)
        stages = block["stages"]
        if not isinstance(stages, dict):
            raise _bad(path, f"metadata.{BLOCK}.stages is not a mapping of stage to settings")
        for stage, settings in stages.items():
            if stage not in STAGES:
                raise _bad(path, f"unknown stage '{stage}' (choose from {', '.join(STAGES)})")
            if stage in entry["task"]:
                raise _bad(path, f"benchmark '{key}' already has a {stage} task ({entry['task'][stage]})")
            shots, mode, metric = _settings(path, stage, settings)
            entry["task"][stage], entry["shots"][stage] = task, shots
            entry["mode"][stage], entry["metric"][stage] = mode, metric
    return [dict(key=key, label=e["label"], section=e["section"], task=e["task"], metric=e["metric"],
                 shots=e["shots"], modes=e["mode"], origin=str(e["files"][0]))
            for key, e in found.items()]


def _settings(path: Path, stage: str, settings: Any) -> tuple[int, str, str]:
    if not isinstance(settings, dict):
        raise _bad(path, f"stages.{stage} is not a mapping of shots, mode and metric")
    shots, mode, metric = settings.get("shots"), settings.get("mode"), settings.get("metric")
    if not isinstance(shots, int) or isinstance(shots, bool) or shots < 0:
        raise _bad(path, f"stages.{stage}.shots must be a whole number >= 0, got {shots!r}")
    if mode not in MODES:
        raise _bad(path, f"stages.{stage}.mode must be {' or '.join(MODES)}, got {mode!r}")
    if not isinstance(metric, str) or "," not in metric:
        raise _bad(path, f"stages.{stage}.metric must be lm-eval's '<metric>,<filter>' key "
                         f"(e.g. 'acc,none'), got {metric!r}")
    return shots, mode, metric


def _read(path: Path) -> Any:
    from lm_eval.tasks._yaml_loader import load_yaml  # lm-eval's own reader: !function tags stay unresolved

    try:
        return load_yaml(path, resolve_func=False, recursive=False)  # the block is in the file itself
    except Exception as exc:  # a YAML the user wrote: say which file and why, in one line
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise UserError(f"task YAML {path} cannot be read: {first}", f"fix {path}") from None


def _bad(path: Path, problem: str) -> UserError:
    return UserError(f"{path}: {problem}", f"write the block as {EXAMPLE}")
