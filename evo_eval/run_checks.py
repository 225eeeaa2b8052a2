"""Checks on `evo-eval run`'s values and its results folder that run.py calls in a line each.

Values: every number the run hands to lm-eval or numpy must be one they accept, so a bad one is a
line before any model loads rather than a traceback (numpy's seed) or a silent change of meaning
(``--limit inf`` would run everything, ``--bootstrap-iters -5`` skip the standard errors).

The results folder: one process at a time writes a (stage, model) folder. A second `evo-eval run`
on the same output would redo the same requests and race on the same results files; it is refused
with one line while the first holds the folder's lock (an flock, released by the kernel however the
holder ends, so a killed run never leaves a stale lock; rank 0 holds it for a data-parallel
launch). Holding the lock also makes any temporary file of an atomic write in that folder
(``.NAME.*.tmp``, store.atomic_write_text) an orphan of a killed run, and it is removed.
"""

from __future__ import annotations

import contextlib
import fcntl
import math
import os
from pathlib import Path
from typing import Iterator

from .errors import ResultsError, UserError

SEED_MAX = 2**32 - 1  # numpy.random.seed's range
LOCK_NAME = ".lock"


def check_values(limit: float | None, seed: int, bootstrap_iters: int) -> None:
    if limit is not None and not math.isfinite(limit):
        raise UserError(f"--limit must be a finite number, got {limit}",
                        "pass a number of documents (or a fraction below 1), or leave --limit out to run them all")
    if not 0 <= seed <= SEED_MAX:
        raise UserError(f"--seed must be between 0 and {SEED_MAX} (numpy's seed range), got {seed}",
                        "pass a smaller non-negative seed")
    if bootstrap_iters < 0:
        raise UserError(f"--bootstrap-iters must be 0 or more, got {bootstrap_iters}",
                        "pass 0 to skip standard errors, or e.g. 1000")


def check_card_tokenizer(card) -> None:
    """A card's `tokenizer:` is loaded by every backend (run.build_lm); one that names a local
    folder must be one, found now rather than after the weights have loaded."""
    name = card.tokenizer
    if name and name.startswith(("/", "./", "../", "~")) and not Path(name).expanduser().is_dir():
        where = card.path or f"the card {card.name}"
        raise UserError(f"model card {card.name} names tokenizer {name}, which is not a folder",
                        f"fix the tokenizer field in {where}, or remove it to use the checkpoint's own tokenizer")


def check_card_values(card) -> None:
    """Every decoding and likelihood value of a card, in the range its sampler's or scorer's config
    accepts: the configs' own checks, run now on each benchmark's merged settings, so `k_max: -1`
    or `mc_num: 0` is one line before any model loads rather than an error (or a silent clamp)
    mid-run. Cards of lm-eval's HF backend hand their settings to lm-eval instead."""
    if card.is_hf:
        return
    from dataclasses import fields

    from .families import card_sampler, sampler_class, scorer_class

    sampler_config = sampler_class(card_sampler(card)).Config
    scorer_config = scorer_class(card.family).Config
    sampler_keys = {f.name for f in fields(sampler_config)}
    scorer_keys = {f.name for f in fields(scorer_config)}
    where = card.path or card.name
    for benchmark in [None, *card.decoding.get("tasks", {})]:
        settings = {**card.likelihood, **card.decoding_for(benchmark)}
        for label, config, keys in (("decoding", sampler_config, sampler_keys),
                                    ("likelihood", scorer_config, scorer_keys)):
            try:
                config.from_dict({k: v for k, v in settings.items() if k in keys})
            except (ValueError, TypeError) as exc:
                label += f" for {benchmark}" if benchmark else ""
                raise UserError(f"model card {card.name} is invalid: {label}: {exc}",
                                f"fix the YAML in {where}") from None


def check_task_list(raw: str | None, tasks: list[str] | None) -> None:
    """`--tasks ""` or `--tasks ,` name nothing; running the whole suite instead would be a guess."""
    if raw is not None and not tasks:
        raise UserError(f"--tasks {raw!r} names no task",
                        "give task names separated by commas, or leave --tasks out to run the whole suite")


def folder_problem(path: Path, what: str) -> str:
    """'… does not exist' only when nothing is there: a file where a folder should be says so."""
    if path.exists() or path.is_symlink():
        return f"{what} {path} is a file, not a folder" if not path.is_dir() else f"{what} {path} is not usable"
    return f"{what} {path} does not exist"


@contextlib.contextmanager
def output_locks(folders: list[Path]) -> Iterator[None]:
    """The folders' locks, held by rank 0 for all ranks of a data-parallel launch (accelerate and
    torchrun set RANK): its ranks write one folder together, each its own journal."""
    if int(os.environ.get("RANK", "0") or 0) != 0:
        yield
        return
    held: list[int] = []
    try:
        for folder in sorted(set(folders)):
            held.append(_lock(folder))
            _remove_orphaned_temporaries(folder)
        yield
    finally:
        for fd in held:
            os.close(fd)  # closing releases the flock


def _lock(folder: Path) -> int:
    folder.mkdir(parents=True, exist_ok=True)
    fd = os.open(folder / LOCK_NAME, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.read(fd, 32).decode("ascii", "replace").strip() or "unknown"
        os.close(fd)
        raise ResultsError(f"another evo-eval run (pid {holder}) is writing {folder}",
                           "wait for it to finish, or give this run another --output") from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd


def _remove_orphaned_temporaries(folder: Path) -> None:
    for path in folder.glob(".*.tmp"):
        with contextlib.suppress(OSError):
            path.unlink()
