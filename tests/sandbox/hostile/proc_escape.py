# Goes around path checks through /proc: the secret via /proc/self/root, the canary via its
# parent's working directory.
import os

with open("/proc/self/root${secret}") as handle:
    print(handle.read())
with open(f"/proc/{os.getppid()}/root${canary}", "w") as out:
    out.write("owned")


def check(candidate):
    pass


check(len)
