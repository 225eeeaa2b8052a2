"""Where the project's own files live: model cards, task YAMLs, the paper's tables.

They ship inside the package (``evo_eval/resources``), so an installed wheel is the whole tool; the
environment variables let a user point at their own copies.
"""

import os
from importlib import resources
from pathlib import Path

# The checkout holding the package, when there is one (git provenance, the demo's ../shared lookup);
# for an installed wheel this is site-packages, which has no .git and no shared/ beside it.
REPO_ROOT = Path(__file__).resolve().parents[1]
# Package data is real files on disk for both an editable install and a wheel in site-packages,
# which lm-eval's TaskManager needs (it globs YAMLs and imports task utils.py by path).
RESOURCES = Path(str(resources.files("evo_eval") / "resources"))


def cards_dir() -> Path:
    return Path(os.environ.get("EVO_EVAL_CARDS", RESOURCES / "cards"))


def paper_dir() -> Path:
    return RESOURCES / "paper"


def tasks_dir() -> Path:
    return Path(os.environ.get("EVO_EVAL_TASKS", RESOURCES / "tasks"))


def default_data_dir() -> Path | None:
    """The local benchmark mirror named by EVO_EVAL_DATA, if any (None means: use the hub)."""
    value = os.environ.get("EVO_EVAL_DATA")
    return Path(value).expanduser() if value else None
