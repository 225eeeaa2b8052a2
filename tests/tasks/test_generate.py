"""The committed per-subject task files are exactly what tasks/generate.py writes, and nothing stale is left."""

from __future__ import annotations

import importlib.util

from evo_eval.paths import tasks_dir


def _generator():
    spec = importlib.util.spec_from_file_location("tasks_generate", tasks_dir() / "generate.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_generated_files_are_current(benchdata):
    generator = _generator()
    expected = generator.render(benchdata)
    assert len(expected) == 57 + 57 + 27 + 7 + 14 + 67 + 52 + 7  # leaves + one group per folder
    for rel, text in expected.items():
        path = tasks_dir() / rel
        assert path.is_file(), f"tasks/{rel} is missing: run python tasks/generate.py"
        assert path.read_text(encoding="utf-8") == text, f"tasks/{rel} is stale: run python tasks/generate.py"
    written = {str(p.relative_to(tasks_dir())) for p in tasks_dir().rglob("*.yaml")
               if p.read_text(encoding="utf-8").startswith(generator.HEADER)}
    assert written == set(expected), f"generated files no generator writes: {sorted(written - set(expected))}"


def test_every_task_names_its_builtin_and_deviations():
    """The machine-readable fields the parity test reads, on every leaf of every folder."""
    from lm_eval.tasks._index import TaskIndex
    from lm_eval.tasks._yaml_loader import load_yaml

    from evo_eval.suites import BENCHMARKS

    index = TaskIndex.build([tasks_dir()])
    leaves = {name: entry for name, entry in index.items() if entry.kind.name == "TASK"}
    suite_tasks = {task for b in BENCHMARKS for task in b.task.values()}
    assert suite_tasks <= set(index), sorted(suite_tasks - set(index))
    assert len([name for name in leaves if name.startswith("evo_mmlu_gen_")]) == 57
    for name, entry in leaves.items():
        meta = load_yaml(entry.yaml_path, resolve_func=False, recursive=True)["metadata"]
        assert "builtin" in meta and isinstance(meta["deviations"], list), name
        for deviation in meta["deviations"]:
            assert set(deviation) == {"what", "fields", "reason"} and deviation["reason"].strip(), name
