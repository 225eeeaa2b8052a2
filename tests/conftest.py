"""Shared fixtures: tiny tokenizer and models built locally, and the real benchmark data beside the repo."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from evo_eval.paths import REPO_ROOT

# CI clones the repository with ../shared beside it; EVO_EVAL_BENCHDATA overrides.
BENCHDATA = Path(os.environ.get("EVO_EVAL_BENCHDATA", REPO_ROOT.parent / "shared" / "benchdata"))


def pytest_configure(config):
    # Nothing in the tests may reach the hub; fail fast instead of waiting on timeouts.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    # What `evo-eval` itself does before tqdm is first imported (cli.py); in one pytest process another
    # test module may import tqdm before the CLI's, and a progress bar would be a second stderr line.
    os.environ.setdefault("TQDM_DISABLE", "1")


@pytest.fixture(scope="session")
def benchdata() -> Path:
    if not (BENCHDATA / "SHA256SUMS").is_file():
        pytest.fail(f"benchmark data not found at {BENCHDATA}; clone with ../shared beside the repo "
                    "or set EVO_EVAL_BENCHDATA")
    return BENCHDATA


@pytest.fixture(scope="session")
def tokenizer_dir(tmp_path_factory) -> Path:
    from evo_eval.tiny import build_tokenizer

    out = tmp_path_factory.mktemp("tokenizer")
    build_tokenizer(out)
    return out


@pytest.fixture(scope="session")
def tiny_llama_dir(tmp_path_factory, tokenizer_dir) -> Path:
    from evo_eval.tiny import build_tiny_ar

    return build_tiny_ar(tmp_path_factory.mktemp("tiny-llama"), "llama", tokenizer_dir=tokenizer_dir)


@pytest.fixture(scope="session")
def tiny_qwen_dir(tmp_path_factory, tokenizer_dir) -> Path:
    from evo_eval.tiny import build_tiny_ar

    return build_tiny_ar(tmp_path_factory.mktemp("tiny-qwen2"), "qwen2", tokenizer_dir=tokenizer_dir)


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory, tokenizer_dir):
    """``tiny_checkpoint(family, seed=0)``: the folder of a tiny random-weight checkpoint of a non-AR family
    (evo_eval.tiny.build_tiny_checkpoint, with the session's tokenizer), built once per session for each
    (family, seed). Tests share it, so they only read it: copy it before changing a file."""
    from evo_eval.tiny import build_tiny_checkpoint

    built: dict[tuple[str, int], Path] = {}

    def get(family: str, seed: int = 0) -> Path:
        if (family, seed) not in built:
            out = tmp_path_factory.mktemp(f"tiny-{family}-{seed}")
            built[family, seed] = build_tiny_checkpoint(family, out, tokenizer_dir, seed=seed)
        return built[family, seed]

    return get


@pytest.fixture(scope="session")
def tiny_llada_dir(tiny_checkpoint) -> Path:
    return tiny_checkpoint("llada")


@pytest.fixture(scope="session")
def tiny_ard_dir(tiny_checkpoint) -> Path:
    return tiny_checkpoint("ard")


@pytest.fixture(scope="session")
def mirror(benchdata, tmp_path_factory) -> Path:
    """Every benchmark the publishers' files hold, imported once per session through the real importer."""
    from evo_eval.data.mirror import import_mirror

    dst = tmp_path_factory.mktemp("mirror") / "data"
    import_mirror(benchdata, dst)
    return dst


@pytest.fixture(scope="session")
def sample_mirror(tmp_path_factory) -> Path:
    """The benchmark sample shipped in the package (a few real documents of every benchmark but GPQA),
    imported once per session: lm-eval processes every document of a task however small --limit is,
    so suite-wide runs that test the machinery rather than the data read this one."""
    from evo_eval.data.mirror import import_mirror
    from evo_eval.paths import sample_benchdata_dir

    dst = tmp_path_factory.mktemp("sample-mirror") / "data"
    import_mirror(sample_benchdata_dir(), dst)
    return dst


@pytest.fixture(autouse=True, scope="session")
def one_torch_thread():
    """Tiny models are per-op overhead: one thread beats two fighting over CI's two shared cores."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def small_mirror(benchdata, tmp_path_factory) -> Path:
    """GSM8K and ARC-Challenge imported from the real files: one generative and one likelihood benchmark."""
    from evo_eval.data.mirror import import_mirror

    dst = tmp_path_factory.mktemp("small-mirror") / "data"
    import_mirror(benchdata, dst, ["gsm8k", "arc_challenge"])
    return dst


@pytest.fixture(scope="session")
def cli_processes(tmp_path_factory):
    """Real `evo-eval` processes forked from one warm server (tests/cli_process.py)."""
    import importlib.util

    from torch.utils.collect_env import get_pretty_env_info

    from evo_eval.store import git_state

    # pytest runs with --import-mode=importlib, so tests/ is not on sys.path: load the helper by path.
    spec = importlib.util.spec_from_file_location("evo_eval_tests_cli_process", Path(__file__).with_name("cli_process.py"))
    helper = sys.modules.setdefault(spec.name, importlib.util.module_from_spec(spec))
    spec.loader.exec_module(helper)
    env = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    processes = helper.CliProcesses(tmp_path_factory.mktemp("cli"), env, git_state(), get_pretty_env_info())
    yield processes
    processes.close()
