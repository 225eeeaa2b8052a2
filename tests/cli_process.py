"""Real ``evo-eval`` processes for tests that kill, interrupt or starve them, started in milliseconds.

Each command runs tests/evo_child.py in a child of one multiprocessing forkserver per session; the
server imports torch, transformers and lm-eval once, so a command costs its own work, not several
seconds of imports. The test holds the child's pid and may SIGKILL or SIGINT it at any moment.
"""

from __future__ import annotations

import multiprocessing
import os
import runpy
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

CHILD = Path(__file__).with_name("evo_child.py")
# What an `evo-eval run` imports before its first request; the server imports it once.
# transformers imports most of itself lazily, at the first model it builds: those modules too.
PRELOAD = ["torch", "transformers", "datasets", "lm_eval", "lm_eval.evaluator", "lm_eval.tasks",
           "lm_eval.models.huggingface", "transformers.modeling_utils", "transformers.core_model_loading",
           "transformers.models.llama.modeling_llama", "transformers.models.qwen2.modeling_qwen2",
           "transformers.integrations.hub_kernels", "evo_eval.cli", "evo_eval.run", "evo_eval.adapters.hf",
           "evo_eval.data.source"]


def _context():
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(PRELOAD)
    return ctx


@dataclass
class Command:
    process: Any
    stdout_path: Path
    stderr_path: Path
    started: float = field(default_factory=time.monotonic)

    @property
    def pid(self) -> int:
        return self.process.pid

    def alive(self) -> bool:
        return self.process.is_alive()

    def kill(self) -> None:
        os.kill(self.process.pid, signal.SIGKILL)

    def interrupt(self) -> None:
        os.kill(self.process.pid, signal.SIGINT)

    def wait(self, timeout: float = 300) -> int:
        self.process.join(timeout)
        if self.process.exitcode is None:
            self.kill()
            self.process.join()
            raise TimeoutError(f"evo-eval did not finish in {timeout} s; stderr:\n{self.stderr}")
        return self.process.exitcode

    def wait_until(self, condition: Callable[[], bool], poll_s: float = 0.005, timeout: float = 300) -> bool:
        """Poll ``condition`` while the process lives; True once it holds, False if the process ended first."""
        deadline = time.monotonic() + timeout
        while self.alive() and time.monotonic() < deadline:
            if condition():
                return True
            time.sleep(poll_s)
        return condition() and self.alive()

    @property
    def stdout(self) -> str:
        return self.stdout_path.read_text(encoding="utf-8", errors="replace")

    @property
    def stderr(self) -> str:
        return self.stderr_path.read_text(encoding="utf-8", errors="replace")


class CliProcesses:
    """Starts ``evo-eval ARGS`` as a child of the warm server, with output captured to files."""

    def __init__(self, workdir: Path, env: dict[str, str], git: dict[str, Any], env_info: str | None = None):
        self.ctx = _context()
        self.workdir = Path(workdir)
        self.env = dict(env)
        self.git = dict(git)
        self.env_info = env_info
        self.count = 0
        self.commands: list[Command] = []

    def start(self, *args: str, kill_at: tuple | None = None, fsize: int | None = None,
              env: dict[str, str] | None = None, cwd: Path | None = None) -> Command:
        self.count += 1
        out = self.workdir / f"cmd{self.count}.out"
        err = self.workdir / f"cmd{self.count}.err"
        settings = {"ARGS": [str(a) for a in args], "CWD": str(cwd or self.workdir), "ENV": self.env | (env or {}),
                    "STDOUT": str(out), "STDERR": str(err), "GIT": self.git, "KILL_AT": kill_at, "FSIZE": fsize,
                    "ENV_INFO": self.env_info}
        process = self.ctx.Process(target=runpy.run_path, args=(str(CHILD),),
                                   kwargs={"init_globals": settings, "run_name": "__evo_child__"})
        process.start()
        self.commands.append(Command(process, out, err))
        return self.commands[-1]

    def close(self) -> None:
        """Kill whatever a failed test left running (only this session's own children)."""
        for command in self.commands:
            if command.alive():
                command.kill()
            command.process.join(10)

    def run(self, *args: str, timeout: float = 300, **kwargs: Any) -> tuple[int, Command]:
        command = self.start(*args, **kwargs)
        return command.wait(timeout), command
