# Overwrites a file, creates a file, and renames into a directory outside its working directory,
# by absolute path and by climbing out of its own directory.
import os

with open("${canary}", "w") as out:
    out.write("owned")
with open(os.path.join(os.getcwd(), "..", "..", "planted.txt"), "w") as out:
    out.write("owned")
with open("mine.txt", "w") as out:
    out.write("owned")
os.replace("mine.txt", "${outside}/planted.txt")


def check(candidate):
    pass


check(len)
