"""Fixtures for the task tests: task managers on the session's mirror of the real benchmark files (tests/conftest.py)."""

from __future__ import annotations

import pytest

from evo_eval.paths import tasks_dir


@pytest.fixture(scope="session")
def task_manager(mirror):
    from lm_eval.tasks import TaskManager

    return TaskManager(include_path=str(tasks_dir()), include_defaults=False, metadata={"data_dir": str(mirror)})
