"""Where the project's own files live: model cards, task YAMLs, the paper's tables.

They ship inside the package (``evo_eval/resources``), so an installed wheel is the whole tool; the
environment variables let a user point at their own copies.
"""

import os
from importlib import resources
from pathlib import Path

# The folder above the package: a checkout of the project (tests, docs), or for an installed wheel the
# site-packages' parent, which is no checkout (checkout_root says which).
REPO_ROOT = Path(__file__).resolve().parents[1]


def checkout_root() -> Path | None:
    """REPO_ROOT when the package runs from a checkout of this project (git provenance), else None: an
    installed wheel's REPO_ROOT is a lib/pythonX.Y folder, which may sit inside somebody else's repository."""
    if (REPO_ROOT / ".git").exists() and (REPO_ROOT / "pyproject.toml").is_file():
        return REPO_ROOT
    return None


# Package data is real files on disk for both an editable install and a wheel in site-packages,
# which lm-eval's TaskManager needs (it globs YAMLs and imports task utils.py by path).
RESOURCES = Path(str(resources.files("evo_eval") / "resources"))


def cards_dir() -> Path:
    return Path(os.environ.get("EVO_EVAL_CARDS", RESOURCES / "cards"))


def paper_dir() -> Path:
    return RESOURCES / "paper"


def tasks_dir() -> Path:
    return Path(os.environ.get("EVO_EVAL_TASKS", RESOURCES / "tasks"))


def sample_benchdata_dir() -> Path:
    """A few real documents of every benchmark in the publishers' formats (evo_eval/data/sample.py)."""
    return RESOURCES / "benchdata"


def default_data_dir() -> Path | None:
    """The local benchmark mirror named by EVO_EVAL_DATA, if any (None means: use the hub)."""
    value = os.environ.get("EVO_EVAL_DATA")
    return Path(value).expanduser() if value else None
