"""Hostile and broken input, one case at a time, through the CLI: docs/bad-input.md is this table.

Each case builds its bad input in a fresh folder beside a results folder that already holds a
finished result and a journal, runs one command, and checks: the exit status (2 for an error, 0
where the input is reported and worked around), exactly the expected line on stderr and nothing
else, no traceback, and every file that was there before still there, byte for byte.

Most cases run in-process through Typer's CliRunner; the ones that need a process of their own (a
file-size limit standing in for a full disk, SIGINT, --debug's traceback) are forked from the warm
server of tests/cli_process.py.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

import pytest
from typer.testing import CliRunner

from evo_eval.cli import app
from evo_eval.journal import Journal
from evo_eval.paths import REPO_ROOT, cards_dir, tasks_dir
from evo_eval.store import KIND, SCHEMA_VERSION, atomic_write_text, to_json

DOC = REPO_ROOT / "docs" / "bad-input.md"
FIX_IMPORT = "re-run `evo-eval data import SRC`"
FIX_CARD = "fix the YAML in {cards}/llama3-8b.yaml"
FIX_CKPT = ("pass --checkpoint DIR with a complete save_pretrained folder (config.json, weights, tokenizer) of the "
            "card's architecture")
FIX_SOURCE = "restore the publisher's file (shared/benchdata/README.md lists them) and re-run `evo-eval data import SRC`"


@dataclass
class Ctx:
    """Paths a case may use; ``{name}`` in an expected message is replaced by ``str(getattr(ctx, name))``."""

    tmp: Path
    out: Path
    llama: Path
    mirror: Path
    benchdata: Path
    cards: Path | None = None
    tasks: Path | None = None
    ckpt: Path | None = None
    src: Path | None = None
    dest: Path | None = None
    env: dict[str, str] = field(default_factory=dict)
    held: list[int] = field(default_factory=list)  # descriptors a case keeps open (a lock) while it runs


def run_args(ctx: Ctx, *extra: str, tasks: str = "gsm8k", checkpoint: Path | None = None,
             model: str = "llama3-8b") -> list[str]:
    return ["run", "--model", model, "--checkpoint", str(checkpoint or ctx.llama), "--data-dir", str(ctx.mirror),
            "--tasks", tasks, "--limit", "1", "--device", "cpu", "--output", str(ctx.out), "--bootstrap-iters", "0",
            "--gen-kwargs", "max_gen_toks=4", "--dtype", "float32", *extra]


def replace_arg(args: list[str], option: str, value: str) -> list[str]:
    args = list(args)
    args[args.index(option) + 1] = value
    return args


# ---- building bad input ------------------------------------------------------------------------------


def card_copy(ctx: Ctx, edit: Callable[[str], str] | None = None, raw: bytes | None = None) -> None:
    ctx.cards = ctx.tmp / "cards"
    shutil.copytree(cards_dir(), ctx.cards)
    path = ctx.cards / "llama3-8b.yaml"
    if raw is not None:
        path.write_bytes(raw)
    else:
        path.write_text(edit(path.read_text(encoding="utf-8")), encoding="utf-8")
    ctx.env["EVO_EVAL_CARDS"] = str(ctx.cards)


def other_card_copy(ctx: Ctx, name: str, old: str, new: str) -> None:
    ctx.cards = ctx.tmp / "cards"
    shutil.copytree(cards_dir(), ctx.cards)
    path = ctx.cards / f"{name}.yaml"
    text = path.read_text(encoding="utf-8")
    assert old in text
    path.write_text(text.replace(old, new, 1), encoding="utf-8")
    ctx.env["EVO_EVAL_CARDS"] = str(ctx.cards)


def tasks_copy(ctx: Ctx, edit: Callable[[Path], None]) -> None:
    ctx.tasks = ctx.tmp / "tasks"
    shutil.copytree(tasks_dir(), ctx.tasks, ignore=shutil.ignore_patterns("__pycache__"))
    edit(ctx.tasks / "gsm8k" / "evo_gsm8k.yaml")
    ctx.env["EVO_EVAL_TASKS"] = str(ctx.tasks)


def mirror_copy(ctx: Ctx, edit: Callable[[Path], None]) -> None:
    copy = ctx.tmp / "mirror"
    shutil.copytree(ctx.mirror, copy)
    edit(copy)
    ctx.mirror = copy


def source_copy(ctx: Ctx, edit: Callable[[Path], None], sums: bool = False) -> None:
    """The publishers' GSM8K files (and SHA256SUMS) with one change, and a mirror to import them into."""
    ctx.src = ctx.tmp / "src"
    shutil.copytree(ctx.benchdata / "gsm8k", ctx.src / "gsm8k")
    if sums:
        shutil.copy(ctx.benchdata / "SHA256SUMS", ctx.src / "SHA256SUMS")
    edit(ctx.src / "gsm8k" / "test.jsonl")
    ctx.dest = ctx.tmp / "dest"
    shutil.copytree(ctx.mirror, ctx.dest)  # an existing mirror, which a failed import must leave alone


def checkpoint_copy(ctx: Ctx, edit: Callable[[Path], None]) -> None:
    ctx.ckpt = ctx.tmp / "ckpt"
    shutil.copytree(ctx.llama, ctx.ckpt)
    edit(ctx.ckpt)


def edit_json(path: Path, **changes: Any) -> None:
    path.write_text(json.dumps(json.loads(path.read_text()) | changes))


def results_file(ctx: Ctx, benchmark: str = "gsm8k", **overrides: Any) -> Path:
    record = {"schema_version": SCHEMA_VERSION, "kind": KIND, "model": "llama3-8b", "stage": "base",
              "benchmark": benchmark, "task": f"evo_{benchmark}", "metric": "acc,none", "score": 0.25, "shots": 1,
              "lm_eval": {}, "provenance": {}} | overrides
    path = ctx.out / "base" / "llama3-8b" / f"{benchmark}.json"
    atomic_write_text(path, to_json(record))
    return path


def first_line_lacks(field_name: str):
    def edit(path: Path) -> None:
        lines = path.read_text(encoding="utf-8").splitlines()
        row = json.loads(lines[0])
        del row[field_name]
        path.write_text("\n".join([json.dumps(row), *lines[1:]]) + "\n", encoding="utf-8")
    return edit


def in_latin1(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    path.write_bytes(text.replace("Janet", "Ja\u00f1et", 1).encode("latin-1", errors="replace"))


def reworded(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    path.write_text(text.replace("Janet", "Janice", 1), encoding="utf-8")


def no_chat_template(folder: Path) -> None:
    (folder / "chat_template.jinja").unlink(missing_ok=True)
    config = json.loads((folder / "tokenizer_config.json").read_text())
    config.pop("chat_template", None)
    (folder / "tokenizer_config.json").write_text(json.dumps(config))


def small_vocab_model(ctx: Ctx) -> None:
    """A 300-token model saved with the 512-token tokenizer: the pair cannot belong together."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    ctx.ckpt = ctx.tmp / "narrow"
    config = LlamaConfig.from_pretrained(ctx.llama)
    config.vocab_size = 300
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(ctx.ckpt)
    AutoTokenizer.from_pretrained(ctx.llama).save_pretrained(ctx.ckpt)


def tiny_evo(ctx: Ctx) -> None:
    from evo_eval.tiny import build_tiny_checkpoint

    ctx.ckpt = build_tiny_checkpoint("evo", ctx.tmp / "evo", tokenizer_dir=ctx.llama)


def journal_line_from_the_future(ctx: Ctx) -> None:
    path = ctx.out / "base" / "llama3-8b" / ".journal" / "gsm8k.rank0.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    line = {"v": 99, "i": "0" * 64, "k": "0" * 64, "m": "generate_until", "t": "evo_gsm8k", "d": 0, "r": "42",
            "s": [], "c": "0" * 16, "z": "a field this evo-eval does not know"}
    path.write_text(json.dumps(line) + "\n")


def hold_output_lock(ctx: Ctx) -> None:
    """Another process's `evo-eval run` on the same folder: its lock (an flock) is held."""
    import fcntl

    folder = ctx.out / "base" / "llama3-8b"
    fd = os.open(folder / ".lock", os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX)
    os.write(fd, b"4242\n")
    ctx.held.append(fd)


def without_data_dir(ctx: Ctx) -> list[str]:
    args = run_args(ctx)
    at = args.index("--data-dir")
    return args[:at] + args[at + 2:]


def own_task_with_bad_mode(ctx: Ctx) -> None:
    folder = ctx.tmp / "own"
    folder.mkdir()
    (folder / "my_task.yaml").write_text(
        "task: my_task\ndataset_path: json\noutput_type: multiple_choice\nmetadata:\n  evo_eval:\n"
        "    benchmark: mine\n    label: Mine\n    section: General Tasks\n"
        "    stages: {base: {shots: 0, mode: guess, metric: 'acc,none'}}\n", encoding="utf-8")


def unwritable(path: Path):
    """Make ``path`` unwritable for this process: permissions, or (as root) a read-only bind mount."""
    if os.geteuid() != 0:
        path.chmod(0o555)
        return lambda: path.chmod(0o755)
    mounted = subprocess.run(["mount", "--bind", str(path), str(path)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"running as root without mount(8) privileges ({mounted.stderr.decode().strip()}): "
                    "root ignores permissions, so nothing can be made unwritable")
    remounted = subprocess.run(["mount", "-o", "remount,ro,bind", str(path)], capture_output=True)
    if remounted.returncode != 0:
        subprocess.run(["umount", str(path)], check=True)
        pytest.skip(f"cannot remount read-only: {remounted.stderr.decode().strip()}")
    return lambda: subprocess.run(["umount", str(path)], check=True)


# ---- the table -----------------------------------------------------------------------------------------


@dataclass
class Case:
    id: str
    what: str  # the bad input, as docs/bad-input.md names it
    make: Callable[[Ctx], list[str]]  # builds the input, returns the command line
    message: str  # the one line on stderr; {name} -> Ctx attribute, "…" -> any text
    code: int = 2
    process: bool = False  # run in a process of its own (cli_processes)


def _case(id, what, make, message, **kw) -> Case:
    return Case(id, what, make, message, **kw)


def _with(setup: Callable[[Ctx], None], command: Callable[[Ctx], list[str]]) -> Callable[[Ctx], list[str]]:
    def make(ctx: Ctx) -> list[str]:
        setup(ctx)
        return command(ctx)
    return make


CASES = [
    # -- command line --------------------------------------------------------------------------------
    _case("unknown-model", "`--model` names no card", lambda c: replace_arg(run_args(c), "--model", "gpt-5"),
          "error: unknown model 'gpt-5' — choose one of: … (`evo-eval models` lists them)"),
    _case("unknown-task", "`--tasks` with a typo", lambda c: replace_arg(run_args(c), "--tasks", "gsm9k"),
          "error: unknown task 'gsm9k' — did you mean gsm8k? (`evo-eval suites` lists them; your own need --include-path DIR)"),
    _case("unknown-suite", "`--suite` that does not exist", lambda c: run_args(c, "--suite", "everything"),
          "error: unknown suite 'everything' — choose one of: …"),
    _case("wrong-stage", "`--stage instruct` with a base card", lambda c: run_args(c, "--stage", "instruct"),
          "error: model 'llama3-8b' is the base card but --stage instruct was given — use --model "
          "llama3-8b-instruct for the instruct stage"),
    _case("task-of-other-stage", "a task the stage does not have", lambda c: replace_arg(run_args(c), "--tasks", "mmlu_pro"),
          "error: task 'mmlu_pro' is not in suite 'all' for stage 'base' — it belongs to stage(s) instruct; pass "
          "--stage accordingly"),
    _case("limit-zero", "`--limit 0`", lambda c: replace_arg(run_args(c), "--limit", "0"),
          "error: --limit must be positive, got 0.0 — pass a positive number of documents"),
    _case("limit-not-a-number", "`--limit ten`", lambda c: replace_arg(run_args(c), "--limit", "ten"),
          "error: Invalid value for '--limit': … — see 'evo-eval run --help'"),
    _case("shots-negative", "`--shots -1`", lambda c: run_args(c, "--shots", "-1"),
          "error: --shots must be 0 or more, got -1 — pass a non-negative shot count"),
    _case("batch-size-zero", "`--batch-size 0`", lambda c: run_args(c, "--batch-size", "0"),
          "error: --batch-size must be a positive integer or auto, got '0' — pass e.g. --batch-size 8"),
    _case("seed-not-int", "`--seed abc`", lambda c: run_args(c, "--seed", "abc"),
          "error: Invalid value for '--seed': Input should be a valid integer, unable to parse string as an integer "
          "— see 'evo-eval run --help'"),
    _case("unknown-option", "a misspelt option (`--limt`)", lambda c: run_args(c, "--limt", "3"),
          "error: No such option: --limt … — see 'evo-eval run --help'"),
    _case("missing-model", "no `--model` at all", lambda c: ["run", "--tasks", "gsm8k"],
          "error: Missing option '--model' / '-m'. — see 'evo-eval run --help'"),
    _case("gen-kwargs-no-value", "`--gen-kwargs max_gen_toks` (no value)",
          lambda c: replace_arg(run_args(c), "--gen-kwargs", "max_gen_toks"),
          "error: --gen-kwargs max_gen_toks must be a positive integer, got no value — write key=value pairs, e.g. "
          "--gen-kwargs max_gen_toks=256,temperature=0"),
    _case("gen-kwargs-unknown", "`--gen-kwargs temprature=0.7` (typo)",
          lambda c: replace_arg(run_args(c), "--gen-kwargs", "temprature=0.7"),
          "error: unknown generation setting 'temprature' — did you mean temperature? (in --gen-kwargs)"),
    _case("gen-kwargs-negative", "`--gen-kwargs temperature=-1`",
          lambda c: replace_arg(run_args(c), "--gen-kwargs", "temperature=-1"),
          "error: --gen-kwargs temperature must be a number >= 0, got -1 — write key=value pairs, e.g. "
          "--gen-kwargs max_gen_toks=256,temperature=0"),
    _case("dtype-unknown", "`--dtype fp8`", lambda c: replace_arg(run_args(c), "--dtype", "fp8"),
          "error: unknown dtype 'fp8' — choose one of: float32, bfloat16, float16 (in --dtype)"),
    _case("device-unknown", "`--device tpu`", lambda c: replace_arg(run_args(c), "--device", "tpu"),
          "error: --device 'tpu' is not a device name torch knows — use cpu, cuda or cuda:N"),
    _case("device-absent", "`--device cuda:7` with no such GPU", lambda c: replace_arg(run_args(c), "--device", "cuda:7"),
          "error: --device cuda:7 … — …"),
    _case("model-args-unknown", "`--model-args bogus=1` for an HF card", lambda c: run_args(c, "--model-args", "bogus=1"),
          "error: --model-args: LlamaForCausalLM.__init__() got an unexpected keyword argument 'bogus' — remove the "
          "setting; HF cards take HFLM's arguments, e.g. max_length=2048"),
    _case("limit-nan", "`--limit nan`", lambda c: replace_arg(run_args(c), "--limit", "nan"),
          "error: --limit must be a finite number, got nan — pass a number of documents (or a fraction below 1), or "
          "leave --limit out to run them all"),
    _case("limit-inf", "`--limit inf`", lambda c: replace_arg(run_args(c), "--limit", "inf"),
          "error: --limit must be a finite number, got inf — pass a number of documents (or a fraction below 1), or "
          "leave --limit out to run them all"),
    _case("seed-too-large", "`--seed 4294967296` (beyond 2³²−1)", lambda c: run_args(c, "--seed", "4294967296"),
          "error: --seed must be between 0 and 4294967295 (numpy's seed range), got 4294967296 — pass a smaller "
          "non-negative seed"),
    _case("shots-beyond-pool", "`--shots 100000` (more than the few-shot split holds; was: a failure after the model loaded)",
          lambda c: run_args(c, "--shots", "100000"),
          "error: --shots 100000 is more than the few-shot pool of gsm8k (evo_gsm8k has 7473 examples to draw "
          "from) — pass --shots 7473 or fewer, or leave --shots out for the paper's shots"),
    _case("tasks-empty", "`--tasks \"\"`", lambda c: replace_arg(run_args(c), "--tasks", ""),
          "error: --tasks '' names no task — give task names separated by commas, or leave --tasks out to run the "
          "whole suite"),
    _case("tasks-only-commas", "`--tasks ,`", lambda c: replace_arg(run_args(c), "--tasks", ","),
          "error: --tasks ',' names no task — give task names separated by commas, or leave --tasks out to run the "
          "whole suite"),
    _case("bootstrap-iters-negative", "`--bootstrap-iters -5`",
          lambda c: replace_arg(run_args(c), "--bootstrap-iters", "-5"),
          "error: --bootstrap-iters must be 0 or more, got -5 — pass 0 to skip standard errors, or e.g. 1000"),
    _case("checkpoint-is-a-file", "`--checkpoint` names a file",
          _with(lambda c: (c.tmp / "weights.bin").write_bytes(b"\0"),
                lambda c: run_args(c, checkpoint=c.tmp / "weights.bin")),
          "error: checkpoint folder {tmp}/weights.bin is a file, not a folder — pass --checkpoint DIR with a "
          "save_pretrained folder"),
    _case("data-dir-is-a-file", "`--data-dir` names a file",
          _with(lambda c: (c.tmp / "mirror.tar").write_bytes(b"\0"),
                lambda c: replace_arg(run_args(c), "--data-dir", str(c.tmp / "mirror.tar"))),
          "error: data folder {tmp}/mirror.tar is a file, not a folder — create it with `evo-eval data import SRC "
          "--dest DIR`, or drop --data-dir to use the hub"),
    _case("output-in-use", "another `evo-eval run` writing the same `--output` folder",
          _with(hold_output_lock, run_args),
          "error: another evo-eval run (pid 4242) is writing {out}/base/llama3-8b — wait for it to finish, or give "
          "this run another --output"),
    _case("output-is-a-file", "`--output` names a file",
          _with(lambda c: (c.out / "notes.txt").write_text("my notes\n"),
                lambda c: replace_arg(run_args(c), "--output", str(c.out / "notes.txt"))),
          "error: {out}/notes.txt is a file, so results cannot go under it — choose another --output"),
    # -- model cards -----------------------------------------------------------------------------------
    _case("card-yaml-syntax", "card YAML that does not parse",
          _with(lambda c: card_copy(c, lambda t: t.replace("dtype: bfloat16", "dtype: [bfloat16")), run_args),
          "error: model card llama3-8b.yaml is invalid: not valid YAML at line … — " + FIX_CARD),
    _case("card-missing-field", "card without `dtype`",
          _with(lambda c: card_copy(c, lambda t: t.replace("dtype: bfloat16\n", "")), run_args),
          "error: model card llama3-8b.yaml is invalid: missing field(s) dtype — " + FIX_CARD),
    _case("card-unknown-family", "card with `family: gpt`",
          _with(lambda c: card_copy(c, lambda t: t.replace("family: hf", "family: gpt")), run_args),
          "error: model card llama3-8b.yaml is invalid: family 'gpt' is not one of hf, evo, llada, mdlm, bd3lm, ard, dream, fast_dllm_v2 — "
          + FIX_CARD),
    _case("card-wrong-type", "card whose `decoding` is a list",
          _with(lambda c: card_copy(c, lambda t: t.replace("  default: {sampler: ar", "  - {sampler: ar")), run_args),
          "error: model card llama3-8b.yaml is invalid: decoding must be a mapping — " + FIX_CARD),
    _case("card-not-utf8", "card file in Latin-1",
          _with(lambda c: card_copy(c, raw=(cards_dir() / "llama3-8b.yaml").read_text().replace(
              "LLaMA3 8B", "LLaMA3 8B \u00e9").encode("latin-1")), run_args),
          "error: model card llama3-8b.yaml is invalid: not UTF-8 text — " + FIX_CARD),
    _case("card-tokenizer-missing", "card whose `tokenizer:` names a folder that is not there (was: ignored)",
          _with(lambda c: card_copy(c, lambda t: t.replace("dtype: bfloat16\n",
                                                           "dtype: bfloat16\ntokenizer: /nonexistent/tokenizer\n")),
                run_args),
          "error: model card llama3-8b names tokenizer /nonexistent/tokenizer, which is not a folder — fix the "
          "tokenizer field in {cards}/llama3-8b.yaml, or remove it to use the checkpoint's own tokenizer"),
    _case("card-k-max-negative", "Evo card with `k_max: -1`",
          _with(lambda c: other_card_copy(c, "evo-8b", "k_max: 20", "k_max: -1"), lambda c: run_args(c, model="evo-8b")),
          "error: model card evo-8b is invalid: decoding: k_max must be a whole number >= 0, got -1 — fix the YAML "
          "in {cards}/evo-8b.yaml"),
    _case("card-top-p-out-of-range", "Evo card with `top_p: 7`",
          _with(lambda c: other_card_copy(c, "evo-8b", "top_p: 0.9", "top_p: 7"), lambda c: run_args(c, model="evo-8b")),
          "error: model card evo-8b is invalid: decoding: top_p must lie in (0, 1], got 7.0 — fix the YAML in "
          "{cards}/evo-8b.yaml"),
    _case("card-mc-num-zero", "LLaDA card with `mc_num: 0` (was: clamped to 1)",
          _with(lambda c: other_card_copy(c, "llada-8b", "mc_num: 128", "mc_num: 0"),
                lambda c: run_args(c, model="llada-8b")),
          "error: model card llada-8b is invalid: likelihood: mc_num and batch must be at least 1 — fix the YAML in "
          "{cards}/llada-8b.yaml"),
    # -- task YAML -------------------------------------------------------------------------------------
    _case("task-yaml-syntax", "task YAML that does not parse",
          _with(lambda c: tasks_copy(c, lambda p: p.write_text(p.read_text().replace(
              "output_type: generate_until", "output_type: [generate_until"))), run_args),
          "error: task YAML {tasks}/gsm8k/evo_gsm8k.yaml (task evo_gsm8k) cannot be read: not valid YAML at line … "
          "(…) — fix {tasks}/gsm8k/evo_gsm8k.yaml"),
    _case("task-yaml-bad-function", "task YAML whose `!function` names a missing module",
          _with(lambda c: tasks_copy(c, lambda p: p.write_text(p.read_text().replace(
              "!function evo_eval.data.source.load", "!function evo_eval.no_such_module.load"))), run_args),
          "error: task YAML {tasks}/gsm8k/evo_gsm8k.yaml (task evo_gsm8k) cannot be loaded: … — fix "
          "{tasks}/gsm8k/evo_gsm8k.yaml"),
    _case("task-yaml-missing", "the task's YAML deleted", _with(lambda c: tasks_copy(c, Path.unlink), run_args),
          "error: no task YAML under {tasks} defines task 'evo_gsm8k' — reinstall evo-eval (its tasks ship in "
          "evo_eval/resources/tasks), or point EVO_EVAL_TASKS at a folder that has it"),
    # -- data ------------------------------------------------------------------------------------------
    _case("source-missing-column", "publisher's file without the `answer` column",
          _with(lambda c: source_copy(c, first_line_lacks("answer")),
                lambda c: ["data", "import", str(c.src), "--dest", str(c.dest), "--only", "gsm8k"]),
          "error: {src}/gsm8k/test.jsonl: line 1 lacks field(s) answer — " + FIX_SOURCE),
    _case("source-not-utf8", "publisher's file in Latin-1",
          _with(lambda c: source_copy(c, in_latin1),
                lambda c: ["data", "import", str(c.src), "--dest", str(c.dest), "--only", "gsm8k"]),
          "error: {src}/gsm8k/test.jsonl: is not UTF-8 text (byte …) — " + FIX_SOURCE),
    _case("source-checksum", "publisher's file changed since SHA256SUMS",
          _with(lambda c: source_copy(c, reworded, sums=True),
                lambda c: ["data", "import", str(c.src), "--dest", str(c.dest), "--only", "gsm8k"]),
          "error: {src}/gsm8k/test.jsonl does not match its sha256 in {src}/SHA256SUMS — restore the publisher's "
          "file; it was changed or truncated"),
    _case("mirror-hash-mismatch", "mirror file changed after import",
          _with(lambda c: mirror_copy(c, lambda m: reworded(m / "gsm8k" / "main" / "test.jsonl")), run_args),
          "error: {mirror}/gsm8k/main/test.jsonl does not match its sha256 in manifest.json (changed or truncated) — "
          + FIX_IMPORT),
    _case("mirror-file-missing", "mirror file deleted",
          _with(lambda c: mirror_copy(c, lambda m: (m / "gsm8k" / "main" / "train.jsonl").unlink()), run_args),
          "error: {mirror}/gsm8k/main/train.jsonl is missing from the mirror — " + FIX_IMPORT),
    _case("mirror-no-manifest", "mirror without manifest.json",
          _with(lambda c: mirror_copy(c, lambda m: (m / "manifest.json").unlink()), run_args),
          "error: {mirror} holds no manifest.json, so it is not a complete mirror — " + FIX_IMPORT),
    _case("mirror-lacks-benchmark", "benchmark the mirror does not hold",
          lambda c: replace_arg(run_args(c), "--tasks", "hellaswag"),
          "error: hellaswag is not in the data mirror {mirror}; " + FIX_IMPORT),
    _case("data-env-missing", "`EVO_EVAL_DATA` names a folder that does not exist (no `--data-dir`)",
          _with(lambda c: c.env.update(EVO_EVAL_DATA=str(c.tmp / "nowhere")), without_data_dir),
          "error: EVO_EVAL_DATA names {tmp}/nowhere, which does not exist — create it with `evo-eval data import SRC "
          "--dest {tmp}/nowhere`, or unset EVO_EVAL_DATA to use the hub"),
    _case("own-benchmark-bad-block", "`--include-path` task whose evo_eval block has an unknown mode",
          _with(own_task_with_bad_mode, lambda c: run_args(c, "--include-path", str(c.tmp / "own"))),
          "error: {tmp}/own/my_task.yaml: stages.base.mode must be likelihood or generation, got 'guess' — write the "
          "block as metadata: {evo_eval: {benchmark: KEY, label: LABEL, section: SECTION, stages: {base: {shots: N, "
          "mode: likelihood, metric: 'acc,none'}}}}"),
    # -- checkpoints -----------------------------------------------------------------------------------
    _case("tokenizer-larger-than-embedding", "tokenizer with more tokens than the model embeds",
          _with(small_vocab_model, lambda c: run_args(c, checkpoint=c.ckpt)),
          "error: the tokenizer of {ckpt} has 512 tokens but the model embeds only 300 — pass the tokenizer the "
          "checkpoint was trained with"),
    _case("checkpoint-card-shape", "Evo checkpoint of another shape than its card",
          _with(tiny_evo, lambda c: run_args(c, checkpoint=c.ckpt, model="evo-8b")),
          "error: checkpoint {ckpt} has n_layers=2 but card evo-8b has n_layers=40 — pass a checkpoint of the evo-8b "
          "architecture, or a card whose shape matches it"),
    _case("checkpoint-card-architecture", "Qwen2 checkpoint under a Llama card",
          _with(lambda c: checkpoint_copy(c, lambda d: edit_json(d / "config.json", architectures=["Qwen2ForCausalLM"])),
                lambda c: run_args(c, checkpoint=c.ckpt)),
          "error: {ckpt} holds a Qwen2ForCausalLM checkpoint but model card llama3-8b is LlamaForCausalLM — pass a "
          "checkpoint of the card's architecture, or the card that matches it"),
    _case("instruct-without-chat-template", "instruct card with a checkpoint whose tokenizer has no chat template",
          _with(lambda c: checkpoint_copy(c, no_chat_template),
                lambda c: run_args(c, checkpoint=c.ckpt, model="llama3-8b-instruct")),
          "error: the tokenizer in {ckpt} has no chat template, and llama3-8b-instruct renders every prompt through "
          "one (the instruct stage) — pass the post-trained checkpoint, whose tokenizer_config.json or "
          "chat_template.jinja has it, or run the base stage with --model llama3-8b"),
    _case("weights-wrong-shape", "weights whose shapes differ from config.json",
          _with(lambda c: checkpoint_copy(c, lambda d: edit_json(d / "config.json", hidden_size=32,
                                                                intermediate_size=64, num_attention_heads=2,
                                                                num_key_value_heads=1)),
                lambda c: run_args(c, checkpoint=c.ckpt)),
          "error: cannot load {ckpt}: its weights do not have the shapes its config.json gives — " + FIX_CKPT),
    _case("weights-missing", "checkpoint folder without weights",
          _with(lambda c: checkpoint_copy(c, lambda d: (d / "model.safetensors").unlink()),
                lambda c: run_args(c, checkpoint=c.ckpt)),
          "error: cannot load {ckpt}: Error no file named model.safetensors, or pytorch_model.bin, found in directory "
          "{ckpt}. — " + FIX_CKPT),
    _case("weights-truncated", "truncated safetensors file",
          _with(lambda c: checkpoint_copy(c, lambda d: (d / "model.safetensors").write_bytes(
              (d / "model.safetensors").read_bytes()[:5000])), lambda c: run_args(c, checkpoint=c.ckpt)),
          "error: cannot load {ckpt}: the weights file is corrupt (…) — restore the checkpoint's *.safetensors files"),
    # -- results and journals --------------------------------------------------------------------------
    _case("results-other-schema", "results file written by schema version 99",
          _with(lambda c: results_file(c, schema_version=99), run_args),
          "error: results file {out}/base/llama3-8b/gsm8k.json has schema version 99, this evo-eval reads version 1 — "
          "re-run that benchmark with this version (--force), or read it with the evo-eval that wrote it"),
    _case("results-truncated", "truncated results file",
          _with(lambda c: results_file(c).write_text(results_file(c).read_text()[:200]), run_args),
          "error: results file {out}/base/llama3-8b/gsm8k.json is truncated JSON (line …) — delete "
          "{out}/base/llama3-8b/gsm8k.json (or re-run the benchmark with --force) to redo it"),
    _case("table-other-schema", "`table` over a results file of schema version 99",
          _with(lambda c: results_file(c, schema_version=99), lambda c: ["table", "--results", str(c.out)]),
          "error: results file {out}/base/llama3-8b/gsm8k.json has schema version 99, this evo-eval reads version 1 — "
          "re-run that benchmark with this version (--force), or read it with the evo-eval that wrote it"),
    _case("journal-future-line", "journal line written by a future journal format",
          _with(journal_line_from_the_future, run_args),
          "  gsm8k           warning: 1 journal line(s) skipped and their requests redone: gsm8k.rank0.jsonl line 1 "
          "was written in journal format 99, this evo-eval reads 2", code=0),
]


# ---- running a case ------------------------------------------------------------------------------------


@pytest.fixture
def ctx(tmp_path, tiny_llama_dir, small_mirror, benchdata) -> Ctx:
    out = tmp_path / "results"
    c = Ctx(tmp=tmp_path, out=out, llama=tiny_llama_dir, mirror=small_mirror, benchdata=benchdata)
    results_file(c, "arc_challenge")  # finished work that no failure may touch
    journal = Journal(out / "base" / "llama3-8b" / ".journal", "arc_challenge", {"earlier": "run"})
    request = type("R", (), {"args": ("Question: ?\nAnswer:", " yes"), "task_name": "evo_arc_challenge", "doc_id": 0})
    journal.put(journal.key("loglikelihood", request), "loglikelihood", request, [-1.5, False])
    journal.close()
    yield c
    for fd in c.held:
        os.close(fd)


def snapshot(*folders: Path) -> dict[Path, bytes]:
    return {p: p.read_bytes() for folder in folders if folder.exists() for p in sorted(folder.rglob("*")) if p.is_file()}


def matches(template: str, line: str, ctx: Ctx) -> bool:
    text = re.sub(r"\{(\w+)\}", lambda m: str(getattr(ctx, m.group(1))), template)
    pattern = ".*".join(re.escape(part) for part in text.split("…"))
    return re.fullmatch(pattern, line) is not None


def stderr_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip()]


def check(case: Case, ctx: Ctx, code: int, stderr: str, before: dict[Path, bytes]) -> None:
    lines = stderr_lines(stderr)
    assert code == case.code, stderr
    assert "Traceback" not in stderr
    expected = [line for line in lines if matches(case.message, line, ctx)]
    assert len(expected) == 1, f"expected one line like\n  {case.message}\ngot\n" + "\n".join(lines)
    if case.code != 0:
        assert lines == expected, "an error is one line and nothing else"
    for path, content in before.items():
        assert path.is_file(), f"{path} was lost"
        if path.suffix == ".jsonl":  # a journal only ever grows
            assert path.read_bytes().startswith(content), f"{path} was rewritten"
        else:
            assert path.read_bytes() == content, f"{path} was changed"


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_is_one_line_and_loses_nothing(case: Case, ctx: Ctx):
    args = case.make(ctx)
    before = snapshot(ctx.out, *(p for p in (ctx.dest, ctx.mirror) if p))
    result = CliRunner().invoke(app, args, env=ctx.env)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    check(case, ctx, result.exit_code, result.stderr, before)


UNWRITABLE = Case("unwritable-output", "results folder not writable", run_args,
                  "error: results folder {out}/base/llama3-8b is not writable (…) — choose another --output, or fix "
                  "its permissions")


def test_an_unwritable_results_folder_is_refused_before_any_work(ctx: Ctx):
    folder = ctx.out / "base" / "llama3-8b"
    before = snapshot(ctx.out)
    restore = unwritable(folder)
    try:
        result = CliRunner().invoke(app, run_args(ctx))
    finally:
        restore()
    check(UNWRITABLE, ctx, result.exit_code, result.stderr, before)


# ---- cases that need a process of their own -------------------------------------------------------------

# RLIMIT_FSIZE makes any write that would grow a file past the limit fail with EFBIG, as a full disk
# would (the command's own stderr, a few hundred bytes, stays under it). Results of one GSM8K document
# are several kB (samples, configs, environment). For the journal, the journal already holds lines of
# an earlier run up to just under the limit, so the first new line crosses it.
DISK_CASES = [
    Case("disk-full-results", "disk full while writing the results file", run_args,
         "error: cannot write {out}/base/llama3-8b/gsm8k.json (File too large); the previous file, if any, is "
         "unchanged — free space or fix permissions, then run the same command again", process=True),
    Case("disk-full-journal", "disk full while appending to the journal", run_args,
         "error: cannot append to the request journal {out}/base/llama3-8b/.journal/gsm8k.rank0.jsonl (File too "
         "large) — free space or fix permissions, then run the same command again: finished requests are kept",
         process=True),
]


def nearly_full_journal(ctx: Ctx) -> int:
    """The GSM8K journal holding an earlier run's lines; returns a size limit 40 bytes above it."""
    journal = Journal(ctx.out / "base" / "llama3-8b" / ".journal", "gsm8k", {"an": "earlier run"})
    for doc in range(12):
        request = type("R", (), {"args": (f"Question {doc}?", {"until": ["\n"]}), "task_name": "evo_gsm8k",
                                 "doc_id": doc})
        journal.put(journal.key("generate_until", request), "generate_until", request, f"answer {doc}")
    journal.close()
    return journal.path.stat().st_size + 40


@pytest.mark.parametrize("case", DISK_CASES, ids=[c.id for c in DISK_CASES])
def test_a_full_disk_is_one_line_and_keeps_finished_work(case: Case, ctx: Ctx, cli_processes):
    limit = 3000 if case.id == "disk-full-results" else nearly_full_journal(ctx)
    before = snapshot(ctx.out)
    code, command = cli_processes.run(*run_args(ctx), fsize=limit, cwd=REPO_ROOT)
    check(case, ctx, code, command.stderr, before)
    journal = ctx.out / "base" / "llama3-8b" / ".journal" / "gsm8k.rank0.jsonl"
    if case.id == "disk-full-results":  # the finished request stays in the journal for the next run
        reloaded = Journal(journal.parent, "gsm8k", {})
        assert reloaded.skipped_lines == 0 and journal.read_bytes().count(b"\n") == 1
    assert not list((ctx.out / "base" / "llama3-8b").glob(".*.tmp")), "no half-written results left behind"


def test_a_killed_runs_temporary_file_is_removed_by_the_next_run(ctx: Ctx):
    # What a kill inside store.atomic_write_text leaves: the temporary file, never renamed.
    folder = ctx.out / "base" / "llama3-8b"
    orphan = folder / ".gsm8k.json.k1ll3d.tmp"
    orphan.write_text('{"half": ')
    result = CliRunner().invoke(app, run_args(ctx))
    assert result.exit_code == 0, result.stderr
    assert (folder / "gsm8k.json").is_file()
    assert not list(folder.glob(".*.tmp")), "a killed run's temporary file outlived the next run"


def test_a_cards_tokenizer_is_what_every_backend_loads():
    from evo_eval.cards import get_card
    from evo_eval.run import _card_tokenizer

    card = get_card("llama3-8b")
    assert _card_tokenizer(card) == {}
    assert _card_tokenizer(replace(card, tokenizer="/models/tok")) == {"tokenizer": "/models/tok"}


def test_the_output_lock_is_released_when_the_run_ends(ctx: Ctx):
    import fcntl

    result = CliRunner().invoke(app, replace_arg(run_args(ctx), "--limit", "nan"))  # refused after planning
    assert result.exit_code == 2
    assert CliRunner().invoke(app, run_args(ctx)).exit_code == 0
    fd = os.open(ctx.out / "base" / "llama3-8b" / ".lock", os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # free again: the finished run let go of it
    finally:
        os.close(fd)


SIGINT = Case("sigint", "Ctrl-C (SIGINT) mid-run", run_args,
              "interrupted — finished requests are kept in the journal; run the same command again to resume",
              code=130, process=True)


def test_sigint_mid_run_stops_with_one_line_and_keeps_the_journal(ctx: Ctx, cli_processes):
    before = snapshot(ctx.out)
    journal = ctx.out / "base" / "llama3-8b" / ".journal" / "gsm8k.rank0.jsonl"
    args = replace_arg(replace_arg(run_args(ctx), "--limit", "6"), "--gen-kwargs", "max_gen_toks=48")
    command = cli_processes.start(*args, cwd=REPO_ROOT)
    assert command.wait_until(lambda: journal.is_file() and journal.read_bytes().count(b"\n") >= 1), command.stderr
    command.interrupt()
    code = command.wait()
    check(SIGINT, ctx, code, command.stderr, before)
    reloaded = Journal(journal.parent, "gsm8k", {})
    assert reloaded.skipped_lines == 0 and journal.read_bytes().count(b"\n") >= 1
    assert not (ctx.out / "base" / "llama3-8b" / "gsm8k.json").exists()


@pytest.mark.parametrize("args, exception", [
    (["--debug", "run", "--model", "gpt-5"], "evo_eval.errors.UnknownNameError: unknown model 'gpt-5'"),
    (["--debug", "run", "--model", "llama3-8b", "--seed", "abc"], "BadParameter: Input should be a valid integer"),
])
def test_debug_shows_the_traceback(args, exception, cli_processes):
    code, command = cli_processes.run(*args, cwd=REPO_ROOT)
    assert code == 1
    assert "Traceback (most recent call last)" in command.stderr and exception in command.stderr


# ---- the table in docs/ is this table --------------------------------------------------------------------


def test_docs_table_lists_every_case_with_its_message():
    text = DOC.read_text(encoding="utf-8")
    every = CASES + DISK_CASES + [UNWRITABLE, SIGINT]
    for case in every:
        assert f"`{case.id}`" in text, f"docs/bad-input.md lacks {case.id}"
        assert case.message in text, f"docs/bad-input.md shows another message for {case.id}:\n{case.message}"
    assert len(every) >= 25
