# Changes metadata outside the working directory: setuid bits, a world-writable directory, mtime,
# an extended attribute, and chmod through a symlink planted in the working directory.
import os

changed, refusal = [], None


def attempt(what, call):
    global refusal
    try:
        call()
        changed.append(what)
    except OSError as exc:
        refusal = exc


attempt("chmod file", lambda: os.chmod("$canary", 0o6777))
attempt("chmod dir", lambda: os.chmod("$outside", 0o777))
attempt("utime", lambda: os.utime("$canary", (0, 0)))
attempt("xattr", lambda: os.setxattr("$canary", "user.evil", b"1"))
attempt("symlink", lambda: os.symlink("$canary", "link"))
attempt("chmod via symlink", lambda: os.chmod("link", 0o777))
if not set(changed) - {"symlink"}:
    raise refusal


def check(candidate):
    pass


check(len)
