"""One ``evo-eval`` command in a process forked from a warm server, for tests that kill or starve it.

tests/cli_process.py runs this file with ``runpy.run_path`` in a child of a multiprocessing
forkserver that has already imported torch, transformers and lm-eval, so each command starts in
a fraction of a second instead of several; the command itself is the real CLI (``evo_eval.cli``)
in its own process, which the test may SIGKILL or SIGINT at will.

Settings arrive as globals (``init_globals``):

* ``ARGS`` — the command line after ``evo-eval``; ``CWD``, ``ENV`` — where and with what it runs;
* ``STDOUT``, ``STDERR`` — files that receive the process's output;
* ``GIT`` — what ``store.git_state`` reports: other developers commit to this checkout while a test
  runs, and the commit is an input of every results file, pinned here like the model and the data;
* ``KILL_AT`` — ``None`` or where the process SIGKILLs itself:
  ``("write", file name, "before-rename" | "after-rename")`` while writing that results file, after
  the temporary file is complete and synced but before the rename, or after the rename but before
  the folder is synced; ``("append", n, "before" | "after")`` at its n-th journal line, before the
  line is written or right after the OS has it. Exact points, where a kill from outside would race
  with a loaded machine's scheduler;
* ``ENV_INFO`` — ``None`` or the text of torch's ``get_pretty_env_info()``, computed once per session;
* ``FSIZE`` — ``None`` or a byte limit for every file the process writes (RLIMIT_FSIZE, with
  SIGXFSZ ignored so that a write past it fails with EFBIG, like a full disk).
"""

import os
import resource
import signal
import sys

os.chdir(CWD)  # noqa: F821  (globals from init_globals)
os.environ.update(ENV)  # noqa: F821
for fd, name in ((1, STDOUT), (2, STDERR)):  # noqa: F821
    target = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.dup2(target, fd)
    os.close(target)
# Line-buffered: a SIGKILL must not swallow what the command had already said.
sys.stdout = open(1, "w", encoding="utf-8", buffering=1, closefd=False)
sys.stderr = open(2, "w", encoding="utf-8", buffering=1, closefd=False)
# The forkserver ignores SIGINT to protect itself; a command must see Ctrl-C as a user's would.
signal.signal(signal.SIGINT, signal.default_int_handler)

import torch  # noqa: E402

torch.set_num_threads(1)  # tiny matrices: one thread is faster than two fighting over shared cores

import evo_eval.store as store  # noqa: E402

store.git_state = lambda *args, **kwargs: dict(GIT)  # noqa: F821

if ENV_INFO is not None:  # noqa: F821
    import torch.utils.collect_env

    # lm-eval runs pip, lscpu, gcc, ... for every benchmark (about a second each) to fill
    # results["pretty_env_info"]; the answer cannot change while a test runs, so it is asked once.
    torch.utils.collect_env.get_pretty_env_info = lambda: ENV_INFO  # noqa: F821


def die():
    os.kill(os.getpid(), signal.SIGKILL)


if KILL_AT is not None and KILL_AT[0] == "write":  # noqa: F821
    _, victim, moment = KILL_AT  # noqa: F821
    real_replace = os.replace

    def replace(src, dst, *args, **kwargs):
        if os.path.basename(str(dst)) == victim and moment == "before-rename":
            die()
        real_replace(src, dst, *args, **kwargs)
        if os.path.basename(str(dst)) == victim and moment == "after-rename":
            die()

    os.replace = replace

if KILL_AT is not None and KILL_AT[0] == "append":  # noqa: F821
    import evo_eval.journal as journal

    _, last, moment = KILL_AT  # noqa: F821
    real_append = journal.Journal._append
    appended = [0]

    def append(self, line):
        appended[0] += 1
        if appended[0] == last and moment == "before":
            die()
        real_append(self, line)
        if appended[0] == last and moment == "after":
            die()

    journal.Journal._append = append

if FSIZE is not None:  # noqa: F821
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (FSIZE, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))  # noqa: F821

from evo_eval.cli import main  # noqa: E402

sys.argv = ["evo-eval", *ARGS]  # noqa: F821
code = 0
try:
    main()
except SystemExit as exc:
    code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
except BaseException:  # a traceback the CLI let through: print it as Python would, status 1
    import traceback

    traceback.print_exc()
    code = 1
sys.stdout.flush()
sys.stderr.flush()
os._exit(code)
