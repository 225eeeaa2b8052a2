# Leaves a 1,500-level directory tree (files along the way, an unwritable directory and an
# unreadable one at the bottom): shutil.rmtree raises RecursionError on it, which used to lose the
# whole batch's verdicts. Then fails honestly: only the cleanup is under attack.
import os

for level in range(1500):
    os.mkdir("d")
    os.chdir("d")
    if level % 250 == 0:
        open("f", "w").close()
os.mkdir("unreadable")
os.chmod("unreadable", 0)
os.chmod(".", 0o500)


def check(candidate):
    assert candidate("abc") == 4


check(len)
