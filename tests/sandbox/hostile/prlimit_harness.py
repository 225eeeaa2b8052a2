# Lowers the resource limits of the harness (and of its parent) with prlimit: one line of this with
# RLIMIT_CPU got `evo-eval run` SIGKILLed. RLIMIT_NICE stands in here: as reachable, but harmless.
import os
import resource

changed, refusal = [], None
for pid in {os.getppid(), $harness_pid, 1}:
    try:
        resource.prlimit(pid, resource.RLIMIT_NICE, (7, 7))
        changed.append(pid)
    except OSError as exc:
        refusal = exc
if not changed:
    raise refusal


def check(candidate):
    pass


check(len)
