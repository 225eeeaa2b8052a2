"""A built wheel is the whole tool: installed into a fresh virtual environment and run from a folder
that has no checkout, ``evo-eval models``, ``suites``, ``data import`` and a tiny ``run`` work.

The fresh venv gets the wheel alone (``pip install --no-deps``); its dependencies come from the test's
own environment through a ``.pth`` line, so nothing is downloaded. A path in a ``.pth`` file is put on
sys.path without its own ``.pth`` files being read, so an editable install of evo-eval there stays
invisible: ``import evo_eval`` can only find the wheel's copy, which the test checks.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from evo_eval.paths import REPO_ROOT

pytestmark = pytest.mark.slow  # builds, installs and runs a real wheel: about a minute on two cores


def _run(args: list, cwd: Path, env: dict[str, str], timeout: float = 600) -> subprocess.CompletedProcess:
    done = subprocess.run([str(a) for a in args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"{args} exited {done.returncode}:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """(venv folder, clean environment, an unrelated working folder) with the wheel installed."""
    root = tmp_path_factory.mktemp("install")
    src = root / "src"  # a copy, so building never writes build/ or *.egg-info into the checkout
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO_ROOT / name, src / name)
    shutil.copytree(REPO_ROOT / "evo_eval", src / "evo_eval", ignore=shutil.ignore_patterns("__pycache__"))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "EVO_EVAL_", "VIRTUAL_ENV"))}
    env |= {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "PIP_NO_INDEX": "1",
            "PIP_DISABLE_PIP_VERSION_CHECK": "1", "HOME": str(root / "home"), "COLUMNS": "250"}
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", root / "dist", src],
         root, env)
    wheel = next((root / "dist").glob("evo_eval-*.whl"))
    venv = root / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", venv], root, env)
    site = Path(_run([venv / "bin" / "python", "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                     root, env).stdout.strip())
    (site / "_deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n", encoding="utf-8")
    _run([venv / "bin" / "python", "-m", "pip", "install", "-q", "--no-deps", "--ignore-installed", wheel], root, env)
    elsewhere = root / "elsewhere"
    elsewhere.mkdir()
    return venv, env, elsewhere


def test_the_wheel_is_what_runs(installed):
    venv, env, elsewhere = installed
    found = _run([venv / "bin" / "python", "-c", "import evo_eval, evo_eval.paths as p; "
                  "print(evo_eval.__file__); print(p.checkout_root())"], elsewhere, env).stdout.split()
    assert Path(found[0]).is_relative_to(venv) and found[1] == "None"


def test_models_and_suites(installed):
    venv, env, elsewhere = installed
    models = _run([venv / "bin" / "evo-eval", "models"], elsewhere, env).stdout
    assert "evo-8b-instruct" in models and "llama3-8b" in models
    suites = _run([venv / "bin" / "evo-eval", "suites"], elsewhere, env).stdout
    assert "evo_arc_challenge" in suites and "evo_mmlu_pro" in suites


def test_tiny_run_from_the_shipped_sample(installed, tiny_llama_dir):
    """The sample shipped in the wheel becomes a mirror; a task with Python helpers (HumanEval's utils.py,
    run in the sandbox) and a plain one (GSM8K) score on a tiny checkpoint, with provenance that names
    no checkout."""
    venv, env, elsewhere = installed
    sample = _run([venv / "bin" / "python", "-c", "from evo_eval.paths import sample_benchdata_dir as s; print(s())"],
                  elsewhere, env).stdout.strip()
    assert Path(sample).is_relative_to(venv)
    _run([venv / "bin" / "evo-eval", "data", "import", sample, "--dest", "mirror", "--only", "gsm8k,humaneval"],
         elsewhere, env)
    _run([venv / "bin" / "evo-eval", "run", "--model", "llama3-8b", "--checkpoint", tiny_llama_dir,
          "--tasks", "gsm8k,humaneval", "--limit", "1", "--data-dir", "mirror", "--device", "cpu",
          "--gen-kwargs", "max_gen_toks=4", "--allow-code-exec", "--bootstrap-iters", "0", "--output", "out"],
         elsewhere, env)
    for key, metric in (("gsm8k", "exact_match,flexible-extract"), ("humaneval", "pass@1,create_test")):
        record = json.loads((elsewhere / "out" / "base" / "llama3-8b" / f"{key}.json").read_text(encoding="utf-8"))
        assert record["metric"] == metric and record["score"] in (0.0, 1.0)
        assert {row["doc_id"] for row in record["samples"][record["task"]]} == {0}  # --limit 1
        assert record["provenance"]["git"] == {"commit": None, "dirty": None}
