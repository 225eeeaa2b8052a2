"""Request journal: every finished model response, appended as it completes, so a killed run resumes.

lm-eval's own response cache keys on the request text alone (it would hand one model's answers to
another) and commits from a background thread. Here a key hashes the run's *identity* (model card,
checkpoint, dtype, decoding settings, seed, versions) with the request itself (method, task, document,
arguments), and each response is one JSON line handed to the OS in a single ``write`` on an
``O_APPEND`` descriptor before the next request starts, so a SIGKILL loses at most the request in
flight; ``fsync`` follows at most a second later and at close.

Each line carries the journal format version and a checksum: a truncated or corrupt line (the tail
of a write cut by a full disk or a crash), or one written by another format, is reported and
skipped, never trusted; a torn tail is closed with a newline before anything is appended after it.
Every data-parallel rank appends to its own file; reading merges all ranks' files, so a resume may
use a different number of processes.

Resumed results are identical to an uninterrupted run's. Backends that answer each request on its
own, seeded from the request (our adapters), get exactly the missing requests. A backend that
batches (lm-eval's HF backend, with ``chunk_size``) is always called with the same groups of
requests ("chunks"), whatever the journal already holds: a chunk is a function of the request list
and the chunk size only, and a chunk with any request missing is recomputed whole. Batched kernels
are not batch-invariant (padding to the longest member and the batch's shape change the last bits
of a result, and with them a greedy choice at a near-tie), so answering the missing half of a batch
in another batch would not reproduce the uninterrupted run. Before each chunk torch's global
generator is reseeded from the chunk's keys, so a backend that samples from it (HF ``generate``)
draws the same numbers for the same chunk, whatever ran before it in this process.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

from lm_eval.api.model import LM, CacheHook

from .errors import ResultsError
from .store import _fsync_dir

log = logging.getLogger(__name__)

# 2: lines carry the per-request records ("s": NFE, tokens, time) next to the response.
JOURNAL_VERSION = 2
_FIELDS = ("v", "i", "k", "m", "t", "d", "r", "s")
# A chunk holds this many batches: enough for lm-eval to sort by length and fill every batch (MMLU's
# four choices share one forward), few enough that a kill costs at most this many batches again.
BATCHES_PER_CHUNK = 8
_METHODS = ("loglikelihood", "loglikelihood_rolling", "generate_until")


def _canonical(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, ensure_ascii=False, default=str, separators=(",", ":"))


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def args_key(method: str, args: tuple) -> str:
    return _digest(_canonical([method, list(args)]))


class Journal:
    """Append-only record of responses for one (run identity, benchmark), per rank."""

    def __init__(self, directory: Path, benchmark: str, identity: dict[str, Any], rank: int = 0,
                 fsync_interval_s: float = 1.0):
        self.directory = Path(directory)
        self.benchmark = benchmark
        self.identity = _digest(_canonical(identity))
        self.path = self.directory / f"{benchmark}.rank{rank}.jsonl"
        self.fsync_interval_s = fsync_interval_s
        self.entries: dict[str, Any] = {}
        self.records: dict[str, list[dict[str, Any]]] = {}
        self.skipped_lines = 0
        self.problems: list[str] = []  # one phrase per skipped line: which file, which line, why
        self._fd: int | None = None
        self._last_sync = 0.0
        self._load()

    # ---- reading ---------------------------------------------------------------------------------

    def _load(self) -> None:
        if not self.directory.is_dir():
            return
        for path in sorted(self.directory.glob(f"{self.benchmark}.rank*.jsonl")):
            with path.open("rb") as handle:
                for number, raw in enumerate(handle, 1):
                    entry, problem = self._parse(raw)
                    if entry is None:
                        self.skipped_lines += 1
                        self.problems.append(f"{path.name} line {number} {problem}")
                        log.warning("journal %s line %d %s; that request will be redone", path, number, problem)
                        continue
                    if entry["i"] == self.identity:
                        self.entries[entry["k"]] = entry["r"]
                        self.records[entry["k"]] = entry["s"]

    @staticmethod
    def _parse(raw: bytes) -> tuple[dict[str, Any] | None, str]:
        """The entry, or None and why it cannot be trusted."""
        if not raw.endswith(b"\n"):
            return None, "is truncated (no end of line)"
        try:
            entry = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError):
            return None, "is not valid JSON"
        if not isinstance(entry, dict):
            return None, "is not a journal entry"
        version = entry.get("v")
        if version != JOURNAL_VERSION:
            return None, f"was written in journal format {version!r}, this evo-eval reads {JOURNAL_VERSION}"
        if set(entry) != {*_FIELDS, "c"}:
            return None, "has the wrong fields"
        if entry["c"] != _checksum(entry):
            return None, "fails its checksum"
        return entry, ""

    def report(self) -> str | None:
        """One line on what was skipped, or None when every line was sound."""
        if not self.skipped_lines:
            return None
        shown = "; ".join(self.problems[:2]) + ("; ..." if len(self.problems) > 2 else "")
        return f"{self.skipped_lines} journal line(s) skipped and their requests redone: {shown}"

    # ---- keys and lookups ------------------------------------------------------------------------

    def key(self, method: str, request: Any) -> str:
        return _digest(_canonical([self.identity, method, getattr(request, "task_name", None),
                                   getattr(request, "doc_id", None), list(request.args)]))

    def get(self, key: str) -> Any:
        return self.entries.get(key, _MISSING)

    def get_records(self, key: str) -> list[dict[str, Any]]:
        return self.records.get(key, [])

    # ---- writing ---------------------------------------------------------------------------------

    def put(self, key: str, method: str, request: Any, result: Any,
            records: list[dict[str, Any]] | None = None) -> None:
        if key in self.entries:
            return
        entry = {"v": JOURNAL_VERSION, "i": self.identity, "k": key, "m": method,
                 "t": getattr(request, "task_name", None), "d": getattr(request, "doc_id", None),
                 "r": result, "s": records or []}
        # Through JSON once, so the checksum covers exactly what a reader will parse back.
        entry = json.loads(json.dumps(entry, default=_json_default))
        entry["c"] = _checksum(entry)
        line = (json.dumps(entry, ensure_ascii=False) + "\n").encode("utf-8")
        try:
            self._append(line)
        except OSError as exc:
            raise ResultsError(
                f"cannot append to the request journal {self.path} ({exc.strerror or exc})",
                "free space or fix permissions, then run the same command again: finished requests are kept",
            ) from exc
        self.entries[key] = entry["r"]
        self.records[key] = entry["s"]

    def _append(self, line: bytes) -> None:
        if self._fd is None:
            self.directory.mkdir(parents=True, exist_ok=True)
            created = not self.path.exists()
            self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
            if created:  # the new file's name must survive a crash too, not only its lines
                _fsync_dir(self.directory)
            # A line cut by a crash or a full disk has no newline; end it, or the next line would be
            # glued to it and lost too.
            if os.fstat(self._fd).st_size and not _ends_with_newline(self.path):
                _write_all(self._fd, b"\n")
        # One write() per line on an O_APPEND descriptor: the OS holds the whole line as soon as this
        # returns, even if the process is killed next, and ranks or runs never interleave within a line.
        _write_all(self._fd, line)
        now = time.monotonic()
        if now - self._last_sync >= self.fsync_interval_s:
            os.fsync(self._fd)
            self._last_sync = now

    def close(self) -> None:
        if self._fd is not None:
            try:
                os.fsync(self._fd)
            finally:
                os.close(self._fd)
                self._fd = None


_MISSING = object()


def _checksum(entry: dict[str, Any]) -> str:
    return _digest(_canonical([entry[k] for k in _FIELDS]))[:16]


def _json_default(obj: Any) -> Any:
    # Responses and records may carry numpy or torch scalars, tuples inside dicts, ...
    if hasattr(obj, "item") and callable(obj.item):
        return obj.item()
    if hasattr(obj, "tolist") and callable(obj.tolist):
        return obj.tolist()
    if isinstance(obj, (set, frozenset)):
        return sorted(obj, key=str)
    return str(obj)


def _ends_with_newline(path: Path) -> bool:
    with path.open("rb") as handle:
        handle.seek(-1, os.SEEK_END)
        return handle.read(1) == b"\n"


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def _restore(method: str, value: Any) -> Any:
    """JSON gives lists back; lm-eval expects (logprob, is_greedy) tuples for loglikelihood."""
    if method == "loglikelihood" and isinstance(value, list):
        return (float(value[0]), bool(value[1]))
    return value


def chunks(method: str, requests: list, size: int) -> list[list[int]]:
    """Indices of ``requests`` in the groups (of about ``size``) the wrapped model is called with.

    A function of the requests and ``size`` only (never of what is already journaled), so an
    interrupted and a resumed run call the model with the same groups. Requests sharing a context
    stay together (lm-eval's HF backend answers one-token continuations of a context from one
    forward); generation requests are grouped by their settings (it batches per gen_kwargs); within
    that, longest first, as lm-eval orders batches, so each batch pads little.
    """
    if not requests:
        return []
    units: dict[str, list[int]] = {}
    for i, request in enumerate(requests):
        args = tuple(request.args)
        unit = _canonical(args[0]) if method == "loglikelihood" else str(i)
        units.setdefault(unit, []).append(i)

    def order(members: list[int]) -> tuple:
        args = tuple(requests[members[0]].args)
        group = _canonical(args[1]) if method == "generate_until" and len(args) > 1 else ""
        length = max(sum(len(a) for a in requests[i].args if isinstance(a, str)) for i in members)
        return group, -length, members[0]

    out: list[list[int]] = []
    current: list[int] = []
    for members in sorted(units.values(), key=order):
        if current and len(current) + len(members) > size:
            out.append(current)
            current = []
        current.extend(members)
    if current:
        out.append(current)
    return out


class _JournalHook(CacheHook):
    """Receives each response from the wrapped LM as soon as it is computed and journals it."""

    def __init__(self, journal: Journal, method: str, pending: dict[str, list[tuple[str, Any]]], lm: Any,
                 progress: Any = None):
        super().__init__(None)
        self.progress = progress
        self.advanced = 0  # requests counted as answered, as each response arrived
        self.journal = journal
        self.method = method
        self.pending = pending
        self.lm = lm
        self.mark = len(getattr(lm, "records", None) or [])
        self.computed: list[tuple[str, list[dict[str, Any]]]] = []  # (args key, records) in call order

    def new_records(self) -> list[dict[str, Any]]:
        """Stats the backend recorded since the previous response (our adapters: one per request)."""
        records = getattr(self.lm, "records", None)
        if records is None:
            return []
        fresh = [dict(vars(r)) if not isinstance(r, dict) else dict(r) for r in records[self.mark:]]
        self.mark = len(records)
        return fresh

    def add_partial(self, attr: str, req, res) -> None:
        if attr != self.method:
            return
        akey = args_key(attr, tuple(req))
        records = self.new_records()
        self.computed.append((akey, records))
        fresh = 0
        for key, request in self.pending.get(akey, ()):
            fresh += self.journal.get(key) is _MISSING
            self.journal.put(key, attr, request, res, records)
        if self.progress is not None and fresh:
            self.advanced += fresh
            self.progress.advance(fresh)


class JournalLM(LM):
    """Wraps any lm-eval LM: answers journaled requests, journals the rest as they complete.

    ``chunk_size`` None hands the model exactly the missing requests (for backends whose answers do
    not depend on what else is in the call); an int calls it with fixed chunks (see the module's
    docstring). ``records`` holds the per-request stats of every request answered, in request order,
    whether computed now or read from the journal.
    """

    def __init__(self, lm: LM, journal: Journal, quiet: bool = False, chunk_size: int | None = None,
                 progress: Any = None):
        super().__init__()
        self.lm = lm
        self.progress = progress  # progress.RequestProgress: requests answered, as they are answered
        self.quiet = quiet  # the CLI draws its own progress; lm-eval's bars would interleave with it
        self.journal = journal
        self.chunk_size = chunk_size
        self.reused = 0
        self.computed = 0
        self.records: list[dict[str, Any]] = []

    def __getattr__(self, name: str) -> Any:
        # Only reached for attributes JournalLM lacks: tokenizer, model, ...
        if name == "lm":
            raise AttributeError(name)
        return getattr(self.lm, name)

    # lm-eval's LM base defines these, so __getattr__ would not forward them.
    @property
    def rank(self) -> int:
        return self.lm.rank

    @property
    def world_size(self) -> int:
        return self.lm.world_size

    @property
    def tokenizer_name(self) -> str:
        return self.lm.tokenizer_name

    def apply_chat_template(self, chat_history, add_generation_prompt: bool = True) -> str:
        return self.lm.apply_chat_template(chat_history, add_generation_prompt=add_generation_prompt)

    def chat_template(self, chat_template=False):
        return self.lm.chat_template(chat_template)

    def all_gather(self, tensor):
        return self.lm.all_gather(tensor)

    def gather_object(self, obj, dst: int = 0):
        return self.lm.gather_object(obj, dst=dst)

    def barrier(self) -> None:
        return self.lm.barrier()

    def get_model_info(self) -> dict:
        return self.lm.get_model_info() if hasattr(self.lm, "get_model_info") else {}

    def loglikelihood(self, requests, disable_tqdm: bool = False):
        return self._answer("loglikelihood", requests, disable_tqdm)

    def loglikelihood_rolling(self, requests, disable_tqdm: bool = False):
        return self._answer("loglikelihood_rolling", requests, disable_tqdm)

    def generate_until(self, requests, disable_tqdm: bool = False):
        return self._answer("generate_until", requests, disable_tqdm)

    def _answer(self, method: str, requests: list, disable_tqdm: bool) -> list:
        if self.progress is not None:
            self.progress.begin(len(requests))
        keys = [self.journal.key(method, r) for r in requests]
        stored = [self.journal.get(k) for k in keys]
        results: list[Any] = [None] * len(requests)
        records: list[list[dict[str, Any]]] = [[] for _ in requests]
        if self.chunk_size is None:
            missing = [i for i, value in enumerate(stored) if value is _MISSING]
            done = [i for i, value in enumerate(stored) if value is not _MISSING]
            groups = ([done] if done else []) + ([missing] if missing else [])
        else:
            groups = chunks(method, requests, self.chunk_size)
        # Per-chunk progress bars would scroll by the hundred; the whole call gets lm-eval's bar.
        quiet = disable_tqdm or self.quiet or len(groups) > 1
        for group in groups:
            if all(stored[i] is not _MISSING for i in group):
                for i in group:
                    results[i] = _restore(method, stored[i])
                    records[i] = self.journal.get_records(keys[i])
                self.reused += len(group)
                if self.progress is not None:
                    self.progress.advance(len(group), computed=False)
                continue
            self._compute(method, requests, keys, group, results, records, quiet)
        for per_request in records:
            self.records.extend(per_request)
        return results

    def _compute(self, method: str, requests: list, keys: list[str], group: list[int], results: list,
                 records: list, quiet: bool) -> None:
        import torch

        pending: dict[str, list[tuple[str, Any]]] = defaultdict(list)
        for i in group:
            pending[args_key(method, tuple(requests[i].args))].append((keys[i], requests[i]))
        hook = _JournalHook(self.journal, method, pending, self.lm, self.progress)
        previous = self.lm.cache_hook
        self.lm.set_cache_hook(hook)
        torch.manual_seed(int(_digest(_canonical([keys[i] for i in group]))[:15], 16))
        try:
            fresh = getattr(self.lm, method)([requests[i] for i in group], disable_tqdm=quiet)
        finally:
            self.lm.set_cache_hook(previous)
        # Stats go to the request they belong to; a backend that never calls the hook records none.
        by_args: dict[str, list[list[dict[str, Any]]]] = defaultdict(list)
        for akey, recs in hook.computed:
            by_args[akey].append(recs)
        leftover = hook.new_records()
        for i, value in zip(group, fresh, strict=True):
            queue = by_args.get(args_key(method, tuple(requests[i].args)))
            mine = queue.pop(0) if queue else []
            if not mine and len(group) == 1:
                mine = leftover
            # Backends that never call the hook (or call it per batch) are journaled here.
            self.journal.put(keys[i], method, requests[i], value, mine)
            results[i] = value
            records[i] = [dict(r) for r in json.loads(json.dumps(mine, default=_json_default))]
        self.computed += len(group)
        if self.progress is not None:  # what the hook did not count as it came (backends without the hook)
            self.progress.advance(len(group) - hook.advanced)
