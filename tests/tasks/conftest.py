"""Fixtures for the task tests: task managers on the session's mirror of the real benchmark files (tests/conftest.py)."""

from __future__ import annotations

import pytest

from evo_eval.paths import tasks_dir


@pytest.fixture(scope="session")
def task_manager(mirror):
    from lm_eval.tasks import TaskManager

    return TaskManager(include_path=str(tasks_dir()), include_defaults=False, metadata={"data_dir": str(mirror)})


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """The tiny model's matrices are small: one thread beats two fighting over a shared machine's cores."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
