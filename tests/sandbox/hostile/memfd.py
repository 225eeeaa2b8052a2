# Holds memory outside the address-space limit: memfd pages stay allocated once unmapped.
import os

fds = [os.memfd_create(f"hoard{index}") for index in range(2)]
for fd in fds:
    os.write(fd, b"x" * (1 << 20))


def check(candidate):
    pass


check(len)
