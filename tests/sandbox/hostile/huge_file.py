# Writes a file far larger than the file-size limit into its working directory.
chunk = b"x" * (1 << 20)
with open("huge.bin", "wb") as out:
    for _ in range(4096):  # 4 GiB
        out.write(chunk)


def check(candidate):
    pass


check(len)
