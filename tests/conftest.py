"""Shared fixtures: tiny tokenizer and models built locally, and the real benchmark data beside the repo."""

from __future__ import annotations

import os
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
