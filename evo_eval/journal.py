"""Request journal: every finished model response, appended as it completes, so a killed run resumes.

lm-eval's own response cache keys on the request text alone (it would hand one model's answers to
another) and commits from a background thread. Here a key hashes the run's *identity* (model card,
checkpoint, dtype, decoding settings, seed, versions) with the request itself (method, task, document,
arguments), and each response is one JSON line written and flushed before the next request starts, so a
SIGKILL loses at most the request in flight; ``fsync`` follows at most a second later and at close.

Each line carries a schema version and a checksum: a truncated or corrupt line (the tail of a killed
write, a disk error) is reported and skipped, never trusted. Every data-parallel rank appends to its own
file; reading merges all ranks' files, so a resume may use a different number of processes.
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

log = logging.getLogger(__name__)

JOURNAL_VERSION = 1
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
        self.skipped_lines = 0
        self._handle = None
        self._last_sync = 0.0
        self._load()

    # ---- reading ---------------------------------------------------------------------------------

    def _load(self) -> None:
        if not self.directory.is_dir():
            return
        for path in sorted(self.directory.glob(f"{self.benchmark}.rank*.jsonl")):
            with path.open("rb") as handle:
                for number, raw in enumerate(handle, 1):
                    entry = self._parse(raw)
                    if entry is None:
                        self.skipped_lines += 1
                        log.warning("journal %s line %d is truncated or corrupt; that request will be redone",
                                    path, number)
                        continue
                    if entry["i"] == self.identity:
                        self.entries[entry["k"]] = entry["r"]

    @staticmethod
    def _parse(raw: bytes) -> dict[str, Any] | None:
        try:
            entry = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError):
            return None
        if not isinstance(entry, dict) or entry.get("v") != JOURNAL_VERSION:
            return None
        if set(entry) != {"v", "i", "k", "m", "t", "d", "r", "c"}:
            return None
        if entry["c"] != _checksum(entry):
            return None
        return entry

    # ---- keys and lookups ------------------------------------------------------------------------

    def key(self, method: str, request: Any) -> str:
        return _digest(_canonical([self.identity, method, getattr(request, "task_name", None),
                                   getattr(request, "doc_id", None), list(request.args)]))

    def get(self, key: str) -> Any:
        return self.entries.get(key, _MISSING)

    # ---- writing ---------------------------------------------------------------------------------

    def put(self, key: str, method: str, request: Any, result: Any) -> None:
        if key in self.entries:
            return
        entry = {"v": JOURNAL_VERSION, "i": self.identity, "k": key, "m": method,
                 "t": getattr(request, "task_name", None), "d": getattr(request, "doc_id", None),
                 "r": _jsonable(result)}
        entry["c"] = _checksum(entry)
        if self._handle is None:
            self.directory.mkdir(parents=True, exist_ok=True)
            self._handle = self.path.open("a", encoding="utf-8")
        # One write per line, flushed at once: the OS has the line even if the process is killed next.
        self._handle.write(json.dumps(entry, ensure_ascii=False) + "\n")
        self._handle.flush()
        now = time.monotonic()
        if now - self._last_sync >= self.fsync_interval_s:
            os.fsync(self._handle.fileno())
            self._last_sync = now
        self.entries[key] = entry["r"]

    def close(self) -> None:
        if self._handle is not None:
            self._handle.flush()
            os.fsync(self._handle.fileno())
            self._handle.close()
            self._handle = None


_MISSING = object()


def _checksum(entry: dict[str, Any]) -> str:
    return _digest(_canonical([entry[k] for k in ("v", "i", "k", "m", "t", "d", "r")]))[:16]


def _jsonable(result: Any) -> Any:
    if isinstance(result, tuple):
        return [_jsonable(r) for r in result]
    if hasattr(result, "item") and callable(result.item):
        return result.item()
    return result


def _restore(method: str, value: Any) -> Any:
    """JSON gives lists back; lm-eval expects (logprob, is_greedy) tuples for loglikelihood."""
    if method == "loglikelihood" and isinstance(value, list):
        return (float(value[0]), bool(value[1]))
    return value


class _JournalHook(CacheHook):
    """Receives each response from the wrapped LM as soon as it is computed."""

    def __init__(self, journal: Journal, method: str, pending: dict[str, list[tuple[str, Any]]]):
        super().__init__(None)
        self.journal = journal
        self.method = method
        self.pending = pending

    def add_partial(self, attr: str, req, res) -> None:
        if attr != self.method:
            return
        for key, request in self.pending.get(args_key(attr, tuple(req)), ()):
            self.journal.put(key, attr, request, res)


class JournalLM(LM):
    """Wraps any lm-eval LM: answers journaled requests, journals the rest as they complete."""

    def __init__(self, lm: LM, journal: Journal, quiet: bool = False):
        super().__init__()
        self.lm = lm
        self.quiet = quiet  # the CLI draws its own progress; lm-eval's bars would interleave with it
        self.journal = journal
        self.reused = 0
        self.computed = 0

    def __getattr__(self, name: str) -> Any:
        # Only reached for attributes JournalLM lacks: tokenizer, model, records, ...
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
        keys = [self.journal.key(method, r) for r in requests]
        results: list[Any] = [self.journal.get(k) for k in keys]
        todo = [i for i, r in enumerate(results) if r is _MISSING]
        self.reused += len(requests) - len(todo)
        for i, value in enumerate(results):
            if value is not _MISSING:
                results[i] = _restore(method, value)
        if not todo:
            return results
        pending: dict[str, list[tuple[str, Any]]] = defaultdict(list)
        for i in todo:
            pending[args_key(method, tuple(requests[i].args))].append((keys[i], requests[i]))
        previous = self.lm.cache_hook
        self.lm.set_cache_hook(_JournalHook(self.journal, method, pending))
        try:
            fresh = getattr(self.lm, method)([requests[i] for i in todo], disable_tqdm=disable_tqdm or self.quiet)
        finally:
            self.lm.set_cache_hook(previous)
        for i, value in zip(todo, fresh, strict=True):
            # Backends that never call the hook (or call it per batch) are journaled here.
            self.journal.put(keys[i], method, requests[i], value)
            results[i] = value
        self.computed += len(todo)
        return results
