# Deletes a file and a directory tree outside its working directory.
import os
import shutil

os.remove("${canary}")
shutil.rmtree("${outside}")


def check(candidate):
    pass


check(len)
