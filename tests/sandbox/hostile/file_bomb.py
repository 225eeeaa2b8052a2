# Creates files until refused: 176,830 files in 2 s when the working directory had no quota
# (5,000 here: over the tests' 2,000-inode quota, and quick where there is none).
import os

for index in range(5000):
    os.close(os.open(f"f{index}", os.O_CREAT | os.O_WRONLY))


def check(candidate):
    pass


check(len)
