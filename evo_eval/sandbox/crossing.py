"""The split verdict: the benchmark's tests in a checker process, the model's code in a candidate
process, and only plain data between them (child side, stdlib only).

Inside the sandbox, before seccomp (which refuses fork), the bootstrap forks (with user namespaces,
into the new PID namespace: userns.py): the process that stays is the *checker*, the only holder of
the verdict socket; it runs the trusted text (the benchmark's helper code and tests) and writes the
verdict. The child is the *candidate*: it gets every layer the checker has, none of its
descriptors (not the verdict socket), runs the model's code (prompt + completion) and then serves
calls. The checker sees the
candidate's top-level names only as stand-ins:

* a callable (function, class) becomes a function that sends the call's arguments down a pipe and
  returns what comes back;
* plain data comes back as data: None, bool, int, float (nan and inf included), complex, str,
  bytes, and lists, tuples, sets, frozensets and dicts of them, rebuilt by the checker's decoder
  as exactly those built-in types; a built-in class (int, str) by name, as the checker's own; an
  iterator comes back as an iterator over its items;
* anything else (an instance of the candidate's class, say) stays in the candidate: the checker
  gets an opaque handle it can pass back as an argument, equal only to itself.

So the candidate can choose its return values and the exceptions it raises (rebuilt as built-in
exception types, or CandidateError), and nothing else: no object whose __eq__ lies crosses, its
rebound builtins and its frames are in another process, and the verdict socket and the nonce are
in no memory or descriptor of its own. If the candidate dies, exits or garbles its answer, the
checker's stand-in raises CandidateGone and the program fails, however the tests catch exceptions.

Arguments cross the same way. Where the *tests* pass something that is not plain data (a lambda,
an object of their own), the checker cannot split the program: it says "in-process" on the verdict
socket and the parent runs the whole program in one process instead, marked as such in the result.
Only trusted code can cause that: everything the checker holds from the candidate is plain data,
a handle or a stand-in, all of which cross (and a module the checker imported because the
candidate bound that name to one fails the program when passed, rather than fall back).
"""

from __future__ import annotations

import _json  # json's C parser and encoder: `import json` would pull in re, enum and more on every program
import builtins
import os
import struct
import sys

_HEADER = struct.Struct(">I")
_MAX_MESSAGE = 1 << 30
_BIG = 1 << 4096
IN_PROCESS = b"in-process\n"


class CandidateGone(BaseException):
    """The candidate process died, exited or broke the protocol: the program cannot pass."""


class CandidateError(Exception):
    """An exception of a type that is not built in, raised in the candidate: 'Type: message'."""


class NeedsInProcess(BaseException):
    """The tests passed the candidate something that is not plain data."""


# ------------------------------------------------------------------ framing

def _cannot_encode(value):
    raise TypeError(f"{type(value).__name__} is not JSON")


# What json.dumps(message, ensure_ascii=False, check_circular=False) uses; messages are built by
# encode() below, so they hold no cycles.
_encoder = _json.make_encoder(None, _cannot_encode, _json.encode_basestring, None, ":", ",", False, False, True)
_CONSTANTS = {"NaN": float("nan"), "Infinity": float("inf"), "-Infinity": float("-inf")}


class _ScannerContext:
    """The attributes json's C scanner reads from a JSONDecoder."""

    def __init__(self, object_hook):
        self.strict, self.object_hook, self.object_pairs_hook = True, object_hook, None
        self.parse_float, self.parse_int, self.parse_constant = float, int, _CONSTANTS.__getitem__


def _loader(object_hook):
    scan = _json.make_scanner(_ScannerContext(object_hook))

    def load(raw: bytes):
        text = raw.decode("utf-8", "surrogatepass")
        try:
            value, end = scan(text, 0)
        except StopIteration:
            raise ValueError("not JSON") from None
        if end != len(text):
            raise ValueError("extra data after the JSON value")
        return value

    return load


def send(fd: int, message) -> None:
    payload = "".join(_encoder(message, 0)).encode("utf-8", "surrogatepass")
    data = _HEADER.pack(len(payload)) + payload
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _read_exactly(fd: int, size: int) -> bytes:
    chunks, left = [], size
    while left:
        chunk = os.read(fd, min(left, 1 << 20))
        if not chunk:
            raise EOFError
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def receive_raw(fd: int) -> bytes:
    (size,) = _HEADER.unpack(_read_exactly(fd, _HEADER.size))
    if size > _MAX_MESSAGE:
        raise ValueError(f"message of {size} bytes")
    return _read_exactly(fd, size)


# ------------------------------------------------------------------ encoding
# JSON arrays are lists and JSON objects are tags ({"t": [...]} a tuple, ...), so the checker's
# decoder (json's C parser plus _decode_tag) can only ever build exact built-in types.

def encode(value, refer):
    """Plain data as JSON-ready structures; `refer(value)` handles anything else (returns a tag or
    raises)."""
    kind = type(value)
    if kind is int and not -_BIG < value < _BIG:  # JSON's decimal digits are capped (int_max_str_digits)
        return {"I": format(value, "x")}
    if value is None or kind in (bool, int, float, str):
        return value
    if kind is list:
        return [encode(v, refer) for v in value]
    if kind is tuple:
        return {"t": [encode(v, refer) for v in value]}
    if kind is dict:
        return {"d": [[encode(k, refer), encode(v, refer)] for k, v in value.items()]}
    if kind is set:
        return {"s": [encode(v, refer) for v in value]}
    if kind is frozenset:
        return {"f": [encode(v, refer) for v in value]}
    if kind is bytes:
        return {"b": value.hex()}
    if kind is complex:
        return {"c": [value.real, value.imag]}
    return refer(value)


def _as_builtin(value):
    """The candidate's side: a subclass of a built-in data type as that type (a namedtuple as a
    tuple, a Counter as a dict, numpy's float64 as a float), an integer type's value as an int, an
    iterator as its items, else None.
    Runs in the candidate, so it need not be proof against it: the checker's decoder is."""
    for base in (int, float, str, bytes, complex, tuple, list, dict, set, frozenset):
        if isinstance(value, base):
            return base, base(value)
    if hasattr(type(value), "__index__"):  # an exact integer of another type (numpy's int64)
        return int, value.__index__()
    if hasattr(type(value), "__next__") and hasattr(type(value), "__iter__"):
        return "iterator", list(value)
    return None, None


def _decode_tag(obj: dict):
    if len(obj) == 1:
        ((tag, payload),) = obj.items()
        if tag == "t" and type(payload) is list:
            return tuple(payload)
        if tag == "d" and type(payload) is list and all(type(p) is list and len(p) == 2 for p in payload):
            return dict(payload)
        if tag == "s" and type(payload) is list:
            return set(payload)
        if tag == "f" and type(payload) is list:
            return frozenset(payload)
        if tag == "I" and type(payload) is str:
            return int(payload, 16)
        if tag == "b" and type(payload) is str:
            return bytes.fromhex(payload)
        if tag == "c" and type(payload) is list and len(payload) == 2 and all(type(p) in (int, float) for p in payload):
            return complex(*payload)
        if tag == "i" and type(payload) is list:
            return iter(payload)
    if set(obj) == {"bt"} and type(obj["bt"]) is str:
        found = getattr(builtins, obj["bt"], None)
        if isinstance(found, type):  # a built-in class (int, str, ValueError): the checker's own
            return found
    if set(obj) == {"h", "type"} and type(obj["h"]) is int and type(obj["type"]) is str:
        return Handle(obj["h"], obj["type"])
    raise ValueError(f"not plain data: {sorted(obj)[:3]}")


decode = _loader(_decode_tag)  # the checker's: only exact built-in types, handles and built-in classes
_load_request = _loader(None)  # the candidate's: what the checker sends is trusted


class Handle:
    """In the checker: an object that stayed in the candidate. Opaque: equal only to itself."""

    __slots__ = ("ref", "type_name")

    def __init__(self, ref: int, type_name: str):
        self.ref, self.type_name = ref, type_name

    def __repr__(self) -> str:
        return f"<candidate's {self.type_name} object #{self.ref}>"


# ------------------------------------------------------------------ the candidate's side

def serve(source: str, filename: str, module, requests: int, replies: int, report_failure) -> None:
    """Run the model's code in `module`, then answer the checker until it hangs up. Never returns."""
    try:
        exec(compile(source, filename, "exec"), module.__dict__)
    except BaseException as exc:  # noqa: BLE001 - SystemExit included: exiting early is not passing
        report_failure(exc)
        _reply(replies, ["unloaded"])
        os._exit(1)
    objects: dict[int, object] = {}
    _reply(replies, ["loaded"])
    while True:
        try:
            request = _load_request(receive_raw(requests))
        except (EOFError, OSError, ValueError):
            os._exit(0)  # the checker is done (or gone)
        _reply(replies, _answer(request, module.__dict__, objects))


def _reply(fd: int, message) -> None:
    try:
        try:
            send(fd, message)
        except (ValueError, TypeError, RecursionError, MemoryError) as exc:  # a result JSON cannot hold
            send(fd, ["raised", type(exc).__name__, str(exc)])
    except OSError:
        os._exit(0)


def _answer(request: list, names: dict, objects: dict) -> list:
    def refer(value):
        kind, plain = _as_builtin(value)
        if kind == "iterator":
            return {"i": [encode(v, refer) for v in plain]}
        if kind is not None:
            return encode(plain, refer)
        if isinstance(value, type) and getattr(builtins, value.__name__, None) is value:
            return {"bt": value.__name__}
        objects[id(value)] = value  # kept alive for as long as the checker may pass it back
        return {"h": id(value), "type": type(value).__name__}

    def resolve(obj):
        if isinstance(obj, list):
            return [resolve(v) for v in obj]
        if not isinstance(obj, dict):
            return obj
        if "h" in obj:
            return objects[obj["h"]]
        if "n" in obj:
            return names[obj["n"]]
        if "bt" in obj:
            return getattr(builtins, obj["bt"])
        tag, payload = next(iter(obj.items()))
        if tag == "d":
            return {resolve(k): resolve(v) for k, v in payload}
        return _decode_tag({tag: [resolve(v) for v in payload] if isinstance(payload, list) else payload})

    try:
        if request[0] == "describe":
            return ["described", [[name, _describe(names[name], refer)] for name in request[1] if name in names]]
        _, target, args, kwargs = request
        result = resolve(target)(*resolve(args), **{k: resolve(v) for k, v in kwargs.items()})
        return ["returned", encode(result, refer)]
    except BaseException as exc:  # noqa: BLE001 - the checker decides what an exception means
        try:
            return ["raised", type(exc).__name__, str(exc)]
        except BaseException:  # noqa: BLE001 - a __str__ that raises
            return ["raised", type(exc).__name__, ""]


def _describe(value, refer) -> list:
    if type(value).__name__ == "module":
        return ["module"]
    if callable(value):
        return ["callable"]
    return ["value", encode(value, refer)]


# ------------------------------------------------------------------ the checker's side

class Channel:
    """The checker's end of the pipes to the candidate."""

    def __init__(self, requests: int, replies: int):
        self.requests, self.replies = requests, replies
        self.broken: str | None = None
        self.needs_in_process: str | None = None

    def gone(self) -> CandidateGone:
        return CandidateGone(self.broken or "the candidate is gone")

    def _ask(self, message):
        if self.broken:
            raise CandidateGone(self.broken)
        try:
            send(self.requests, message)
            raw = receive_raw(self.replies)
        except (OSError, EOFError, ValueError, MemoryError) as exc:  # MemoryError: a reply too big to hold
            self.broken = f"the candidate's process is gone or its reply too long ({type(exc).__name__})"
            raise CandidateGone(self.broken) from None
        try:
            reply = decode(raw)
        except (ValueError, TypeError, RecursionError, MemoryError) as exc:
            self.broken = f"the candidate's reply is not plain data ({exc})"
            raise CandidateGone(self.broken) from None
        if type(reply) is not list or not reply or type(reply[0]) is not str:
            self.broken = "the candidate's reply is malformed"
            raise CandidateGone(self.broken)
        return reply

    def loaded(self) -> bool:
        try:
            reply = decode(receive_raw(self.replies))
        except (OSError, EOFError, ValueError, TypeError, RecursionError, MemoryError):
            self.broken = "the candidate's code did not load"
            return False
        if reply != ["loaded"]:
            self.broken = "the candidate's code did not load"
        return not self.broken

    def bind(self, namespace: dict, names: list[str]) -> None:
        """Put a stand-in into `namespace` for each of `names` the candidate defines."""
        if not names:
            return
        reply = self._ask(["describe", names])
        if reply[0] != "described" or len(reply) != 2 or type(reply[1]) is not list:
            self.broken = "the candidate's reply is malformed"
            raise CandidateGone(self.broken)
        for entry in reply[1]:
            if type(entry) is not list or len(entry) != 2:
                continue
            name, what = entry
            if name not in names or type(what) is not list or not what:
                continue
            if what[0] == "callable":
                namespace[name] = Remote(self, name)
            elif what[0] == "module":
                # The checker imports the module of that name itself: the candidate only said
                # that the name is a module, never which code stands behind it.
                try:
                    namespace[name] = __import__(name)
                except ImportError:
                    pass
            elif what[0] == "value" and len(what) == 2:
                namespace[name] = what[1]

    def call(self, target, args: tuple, kwargs: dict):
        try:
            message = ["call", target, [self._arg(a) for a in args], {k: self._arg(v) for k, v in kwargs.items()}]
        except NeedsInProcess as exc:
            self.needs_in_process = str(exc)
            raise
        reply = self._ask(message)
        if reply[0] == "returned" and len(reply) == 2:
            return reply[1]
        if reply[0] == "raised" and len(reply) == 3 and type(reply[1]) is str and type(reply[2]) is str:
            raise _exception(reply[1], reply[2])
        self.broken = "the candidate's reply is malformed"
        raise CandidateGone(self.broken)

    def _arg(self, value):
        def refer(obj):
            if type(obj) is Handle:
                return {"h": obj.ref}
            if type(obj) is Remote and obj._channel is self:
                return {"n": obj.__name__}
            name = getattr(obj, "__name__", None)
            if isinstance(name, str) and getattr(builtins, name, None) is obj:  # int, str, len: by name
                return {"bt": name}
            if type(obj) is type(sys):
                # A module may be here because the candidate said a name is one (bind): it must
                # not be able to choose the one-process fallback that way.
                raise TypeError(f"the module {name} cannot be passed to the candidate")
            raise NeedsInProcess(f"the tests pass a {type(obj).__name__}, which is not plain data")

        if type(value) in (type(iter([])), type(iter(()))):  # an iterator the candidate returned, passed back
            return {"t": [encode(v, refer) for v in value]}  # a tuple, as good as any iterable
        return encode(value, refer)


class Remote:
    """In the checker: one of the candidate's callables."""

    def __init__(self, channel: Channel, name: str):
        self._channel = channel
        self.__name__ = self.__qualname__ = name

    def __call__(self, *args, **kwargs):
        return self._channel.call({"n": self.__name__}, args, kwargs)

    def __repr__(self) -> str:
        return f"<candidate's {self.__name__}>"


def _exception(type_name: str, message: str) -> BaseException:
    found = getattr(builtins, type_name, None)
    if isinstance(found, type) and issubclass(found, BaseException) and found.__module__ == "builtins":
        try:
            return found(message)
        except Exception:  # noqa: BLE001 - a built-in type that wants other arguments (UnicodeDecodeError)
            pass
    return CandidateError(f"{type_name}: {message}")


def fork_candidate():
    """Fork the candidate; returns ("checker", Channel, pid) or ("candidate", requests, replies).

    The candidate keeps only stdin, stdout, stderr and its two pipe ends, so no descriptor of the
    checker's (the verdict socket above all) is open in it."""
    requests_r, requests_w = os.pipe()
    replies_r, replies_w = os.pipe()
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid:
        os.close(requests_r)
        os.close(replies_w)
        return "checker", Channel(requests_w, replies_r), pid
    low = 3
    for fd in sorted((requests_r, replies_w)):
        os.closerange(low, fd)
        low = fd + 1
    os.closerange(low, 65536)
    return "candidate", requests_r, replies_w
