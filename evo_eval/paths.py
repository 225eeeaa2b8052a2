"""Where the project's own files live: model cards, task YAMLs, the paper's tables.

The package is installed editable (see the Makefile), so these resolve inside the checkout; the
environment variables let a user point at their own copies.
"""

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]


def cards_dir() -> Path:
    return Path(os.environ.get("EVO_EVAL_CARDS", REPO_ROOT / "baselines"))


def paper_dir() -> Path:
    return cards_dir() / "paper"


def tasks_dir() -> Path:
    return Path(os.environ.get("EVO_EVAL_TASKS", REPO_ROOT / "tasks"))


def default_data_dir() -> Path | None:
    """The local benchmark mirror named by EVO_EVAL_DATA, if any (None means: use the hub)."""
    value = os.environ.get("EVO_EVAL_DATA")
    return Path(value).expanduser() if value else None
