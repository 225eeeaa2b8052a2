"""The paper's ablations (arXiv 2603.06617 §3.4, Figures 3 and 4): variants, suite, table.

Figure 3 compares progression-time variants, Figure 4 architecture and pretraining variants, by
perplexity ("on validation set"), task accuracy ("average task accuracy (MMLU and GSM8K)") and
refinement steps per token. The paper's variants are **separately trained models**; ``VARIANTS`` is
the one list of them, each with the training switches that produce it (``training.variant_config``,
``training.start_model``), its card (``resources/cards/ablation/evo-8b-<slug>.yaml``, run with
``--checkpoint``) and, for Figure 3, the inference-time setting that imitates it on the full model's
checkpoint: the fallback, labelled "same checkpoint, inference-time setting" wherever it is shown.

==========================  =========================================  ==============================
variant                     trained with                               decodes with (fallback)
==========================  =========================================  ==============================
w/o Time Conditioning       no time embedding (time_conditioning=False)  schedule ``none``
Fixed t=0 (AR-only)         the AR term alone (fixed_t=0)              ``fixed:0``: token by token
Fixed t=1 (Diff-only)       diffusion terms alone (fixed_t=1)          ``fixed:1``
Fixed t=0.5 (Uniform)       noise levels in (0, 0.5] (fixed_t=0.5)      ``fixed:0.5``
Heuristic t (entropy)       no time head (time_head=False)             ``entropy`` (AR pathway's)
Two-Module (AR + Diff)      a separate AR network (two_module shape)    learned (no fallback)
No Shared Embeddings        untied output head (shape)                 learned (no fallback)
No Pretrained Init          random weights, not init_from_llama         learned (no fallback)
Frozen AR Backbone          only the time modules train                learned (no fallback)
Evo (full)                  the full objective                         ``learned``
==========================  =========================================  ==============================

Results: a trained variant's under its own card (``results/<stage>/evo-8b-<slug>/``), the fallback's
beside the full card's (``results/<stage>/evo-8b@<slug>/``), for ``mmlu``, ``gsm8k``, ``ppl`` (the
lm-eval task ``evo_ppl``: rolling log-likelihood of HellaSwag validation passages, context plus gold
ending, under the card's likelihood, the ELBO) and ``ppl_ar`` (the same task under the exact AR
limit). The paper's validation set is not public, so its PPL and ours share only their ordering.
"""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import ResultsError
from .paths import paper_dir

FIGURE = "3"
FIGURES = ("3", "4")
PPL_BENCHMARK = "ppl"
PPL_AR_BENCHMARK = "ppl_ar"  # the same passages scored by the exact AR limit (estimator=ar)
PPL_TASK = "evo_ppl"
PPL_METRIC = "word_perplexity,none"
PPL_DATA = "hellaswag"  # the mirror benchmark whose passages the perplexity task reads
ACCURACY_BENCHMARKS = ("mmlu", "gsm8k")
FALLBACK_LABEL = "same checkpoint, inference-time setting"


@dataclass(frozen=True)
class Variant:
    """One row of Figure 3 or 4: how the paper's variant is trained, and how it decodes.

    ``training``: ``FinetuneConfig`` switches that train it (``training.finetune``); ``shape``: card
    shape keys that differ from the full model's (its architecture); ``schedule``: the progression
    times it decodes with; ``inference``: adapter settings that imitate it on the *full* model's
    checkpoint (the labelled fallback), or None where no inference-time setting can (Figure 4).
    """

    figure: str
    label: str  # the paper's row label
    slug: str  # results folder suffix and card name suffix
    schedule: str
    training: dict[str, Any] = field(default_factory=dict)
    shape: dict[str, Any] = field(default_factory=dict)
    inference: dict[str, Any] | None = None
    note: str = ""

    @property
    def card_name(self) -> str:
        return "evo-8b" if self.slug == "full" else f"evo-8b-{self.slug}"


# The one list of named Evo ablation variants (Figures 3 and 4, in the paper's order).
VARIANTS: tuple[Variant, ...] = (
    Variant("3", "w/o Time Conditioning", "no-time", "none", {"time_conditioning": False},
            inference={"schedule": "none", "time_conditioning": False},
            note="trained and decoded without the time embedding; times from its time head"),
    Variant("3", "Fixed t=0 (AR-only)", "fixed-0", "fixed:0", {"fixed_t": 0.0}, inference={"schedule": "fixed:0"},
            note="trained on the AR term alone; decodes token by token through the AR pathway"),
    Variant("3", "Fixed t=1 (Diff-only)", "fixed-1", "fixed:1", {"fixed_t": 1.0}, inference={"schedule": "fixed:1"},
            note="trained on the diffusion terms alone; every token refined K_max steps"),
    Variant("3", "Fixed t=0.5 (Uniform)", "fixed-0.5", "fixed:0.5", {"fixed_t": 0.5},
            inference={"schedule": "fixed:0.5"}, note="every token refined K_max/2 steps; no time head trained"),
    Variant("3", "Heuristic t (entropy)", "entropy", "entropy", {"time_head": False}, inference={"schedule": "entropy"},
            note="times from the AR pathway's next-token entropy; no time head trained"),
    Variant("3", "Evo (full)", "full", "learned", inference={"schedule": "learned"}),
    Variant("4", "Two-Module (AR + Diff)", "two-module", "learned", shape={"two_module": True},
            note="a separate AR Transformer (own embeddings, blocks, head) beside the latent-flow one"),
    Variant("4", "No Shared Embeddings", "no-shared-emb", "learned", shape={"tie_embeddings": False},
            note="input embeddings and output head untied"),
    Variant("4", "No Pretrained Init", "no-pretrained-init", "learned", {"pretrained_init": False},
            note="trained from random weights instead of init_from_llama"),
    Variant("4", "Frozen AR Backbone", "frozen-ar", "learned", {"freeze_backbone": True},
            note="pretrained backbone frozen; only the time modules train"),
    Variant("4", "Evo (full)", "full", "learned", inference={"schedule": "learned"}),
)


def variants(figure: str | None = None) -> list[Variant]:
    if figure is not None and str(figure) not in FIGURES:
        from .errors import UnknownNameError

        raise UnknownNameError("ablation figure", str(figure), list(FIGURES))
    return [v for v in VARIANTS if figure is None or v.figure == str(figure)]


def variant(slug: str) -> Variant:
    for v in VARIANTS:
        if v.slug == slug:
            return v
    from .errors import UnknownNameError

    raise UnknownNameError("ablation variant", slug, sorted({v.slug for v in VARIANTS}))


def decoding_variants() -> dict[str, dict[str, Any]]:
    """Inference-time settings by name, for `evo-eval speed --variant`: each Figure 3 schedule on one
    checkpoint, and ``block-32``, the BD3-LM-style block option against the paper's full canvas (the
    sampler keeps the keys it has: ``EvoSampler.variants``)."""
    out = {v.slug: dict(v.inference) for v in variants("3") if v.inference is not None and v.slug != "full"}
    out["block-32"] = {"block_length": 32}
    return out


def ablation_variants() -> list[dict[str, Any]]:
    """The Figure 3 variants as the ablation suite runs them on one checkpoint (the labelled
    fallback): name, results slug and the settings overrides that imitate each.

    ``overrides`` are adapter settings (``model_args``): ``schedule`` goes to the sampler,
    ``time_conditioning`` to the likelihood estimator.
    """
    return [{"variant": v.label, "slug": v.slug, "overrides": dict(v.inference), "schedule": v.schedule}
            for v in variants("3")]


def ablation_entries(stage: str = "base", shots: int | None = None) -> list:
    """What ``--suite ablation`` runs per variant: MMLU and GSM8K as the suite defines them for the
    stage (the paper's shots), and the perplexity task (0 shots, rolling log-likelihood) twice: under
    the card's likelihood (``ppl``: the ELBO) and under the exact AR limit (``ppl_ar``)."""
    from .suites import LIKELIHOOD, Benchmark, SuiteEntry, resolve

    entries = resolve("all", stage, list(ACCURACY_BENCHMARKS), shots)
    ppl = Benchmark(PPL_BENCHMARK, "PPL", "Ablation", {}, {stage: PPL_TASK}, {stage: None}, {stage: PPL_METRIC})
    ppl_ar = Benchmark(PPL_AR_BENCHMARK, "PPL (AR limit)", "Ablation", {}, {stage: PPL_TASK}, {stage: None},
                       {stage: PPL_METRIC})
    return [*entries, SuiteEntry(ppl, stage, PPL_TASK, 0, LIKELIHOOD), SuiteEntry(ppl_ar, stage, PPL_TASK, 0, LIKELIHOOD)]


def lm_for_entry(lm: Any, entry: Any) -> Any:
    """The adapter a suite entry runs on: ``ppl_ar`` scores with the exact AR limit (estimator=ar),
    everything else with the adapter as it is."""
    if getattr(entry, "key", None) == PPL_AR_BENCHMARK and hasattr(lm, "with_settings"):
        return lm.with_settings(estimator="ar")
    return lm


def trained_variant(card: Any) -> Variant | None:
    """The variant a card is the trained model of (its ``paper.ablation`` slug), or None."""
    slug = (getattr(card, "paper", None) or {}).get("ablation")
    return variant(slug) if slug else None


def suite_variants(card: Any) -> list[tuple[str, dict[str, Any] | None]]:
    """(results model name, settings overrides) that ``--suite ablation`` runs for a card: a trained
    variant's card runs as itself; any other Evo card runs Figure 3's inference-time fallback, one
    ``card@slug`` per variant on its one checkpoint."""
    if trained_variant(card) is not None:
        return [(card.name, None)]
    return [(variant_model(card.name, v["slug"]), v["overrides"]) for v in ablation_variants()]


def variant_model(model: str, slug: str) -> str:
    """The model name a fallback variant's results are filed under."""
    return f"{model}@{slug}"


def variant_dir(results_dir: Path, stage: str, model: str, slug: str) -> Path:
    return Path(results_dir) / stage / variant_model(model, slug)


def trained_dir(results_dir: Path, stage: str, model: str, slug: str) -> Path:
    """Where the separately trained variant's own card files its results (``full``: the card itself)."""
    return Path(results_dir) / stage / (model if slug == "full" else f"{model}-{slug}")


def paper_ablation(figure: str = FIGURE) -> dict[str, dict[str, float]]:
    """{variant: {"ppl": x, "task_acc": y}} from the packaged paper table (resources/paper/ablations.csv)."""
    path = paper_dir() / "ablations.csv"
    if not path.is_file():
        raise ResultsError(f"the paper's ablation table {path} is missing", "reinstall evo-eval: the paper's tables ship inside the package (evo_eval/resources/paper)")
    with path.open(encoding="utf-8") as handle:
        rows = [r for r in csv.DictReader(handle) if r["figure"] == figure]
    return {r["variant"]: {"ppl": float(r["ppl"]), "task_acc": float(r["task_acc"])} for r in rows}


def _stored(directory: Path, benchmark: str):
    from .store import read_result

    path = directory / f"{benchmark}.json"
    return read_result(path) if path.is_file() else None


def _metric(stored, metric: str) -> float | None:
    """The results file's headline score, or a named metric from lm-eval's results block."""
    if stored is None:
        return None
    if stored.data.get("metric") == metric and stored.score is not None:
        return float(stored.score)
    for block in stored.data.get("lm_eval", {}).get("results", {}).values():
        value = block.get(metric)
        if isinstance(value, (int, float)):
            return float(value)
    return None


def steps_per_token(stored) -> float | None:
    """Refinement steps per token of a generation benchmark, from its recorded requests: the sum of
    every token's K_i over the tokens decoded (AR-realised tokens count 0)."""
    if stored is None:
        return None
    records = (stored.data.get("requests") or {}).get("per_request") or []
    updates = tokens = 0
    for record in records:
        extra = record.get("extra") or {}
        if "token_updates" in extra and extra.get("canvas_tokens"):
            updates += int(extra["token_updates"])
            tokens += int(extra["canvas_tokens"])
    return updates / tokens if tokens else None


_BENCHMARKS = (PPL_BENCHMARK, PPL_AR_BENCHMARK, *ACCURACY_BENCHMARKS)


def ablation_table(results_dir: Path, model: str = "evo-8b", stage: str = "base",
                   figure: str = FIGURE) -> list[dict[str, Any]]:
    """One row per variant of a figure: measured PPL (the card's ELBO and the exact AR limit), task
    accuracy and refinement steps per token, beside the paper's PPL and accuracy.

    A row reads the separately trained variant's results (``<model>-<slug>``, the paper's design)
    when there are any; else the inference-time fallback on the full model's checkpoint
    (``<model>@<slug>``), labelled ``FALLBACK_LABEL``. Task accuracy is the mean of MMLU and GSM8K in
    percent, as the figures report it; a variant missing either has none (never averaged over what
    exists). ``missing`` names the benchmarks without a results file.
    """
    paper = paper_ablation(str(figure))
    rows = []
    for spec in variants(str(figure)):
        reported = paper.get(spec.label, {})
        row = {"variant": spec.label, "figure": str(figure), "paper_ppl": reported.get("ppl"),
               "paper_task_acc": reported.get("task_acc")}
        trained = trained_dir(results_dir, stage, model, spec.slug)
        stored = {b: _stored(trained, b) for b in _BENCHMARKS}
        source, name = "trained variant", trained.name
        if all(s is None for s in stored.values()) and spec.inference is not None:
            fallback = variant_dir(results_dir, stage, model, spec.slug)
            stored = {b: _stored(fallback, b) for b in _BENCHMARKS}
            source, name = FALLBACK_LABEL, fallback.name
        accs = {b: (stored[b].score * 100 if stored[b] is not None and stored[b].score is not None else None)
                for b in ACCURACY_BENCHMARKS}
        task_acc = sum(accs.values()) / len(accs) if all(v is not None for v in accs.values()) else None
        rows.append({**row, "source": source, "model": name, "schedule": spec.schedule,
                     "ppl": _metric(stored[PPL_BENCHMARK], PPL_METRIC),
                     "ppl_ar": _metric(stored[PPL_AR_BENCHMARK], PPL_METRIC), "task_acc": task_acc,
                     "steps_per_token": steps_per_token(stored["gsm8k"]),
                     **{f"{b}_acc": accs[b] for b in ACCURACY_BENCHMARKS},
                     "missing": [b for b, s in stored.items() if s is None]})
    return rows


def figure3_table(results_dir: Path, model: str, stage: str = "base") -> list[dict[str, Any]]:
    return ablation_table(results_dir, model, stage, "3")


def render_markdown(rows: list[dict[str, Any]]) -> str:
    """A figure's table, measured | paper per column; em dash where nothing was run; the rows that
    are inference-time settings on one checkpoint, not trained variants, are marked and footnoted."""
    def fmt(value: float | None, digits: int = 1) -> str:
        return "—" if value is None else f"{value:.{digits}f}"

    figure = rows[0]["figure"] if rows else FIGURE
    lines = [f"Figure {figure}", "",
             "| Ablation Variant | PPL (ELBO) ↓ | PPL (AR limit) ↓ | paper PPL | Task Acc ↑ | paper | "
             "refinement steps / token |", "|---|---|---|---|---|---|---|"]
    notes = []
    for r in rows:
        mark = " †" if r["source"] == FALLBACK_LABEL else ""
        lines.append(f"| {r['variant']}{mark} | {fmt(r['ppl'])} | {fmt(r['ppl_ar'])} | {fmt(r['paper_ppl'])} | "
                     f"{fmt(r['task_acc'])} | {fmt(r['paper_task_acc'])} | {fmt(r['steps_per_token'], 2)} |")
    if any(r["source"] == FALLBACK_LABEL for r in rows):
        notes.append(f"† {FALLBACK_LABEL}: the full model's checkpoint decoded with the variant's schedule, "
                     "not a separately trained model as in the paper")
    notes.append("PPL (ELBO) is the card's likelihood (the paper's bound); PPL (AR limit) scores the same passages "
                 "token by token at t = 0; word perplexity of HellaSwag validation passages, not the paper's "
                 "validation set: compare orderings, not values")
    return "\n".join(lines) + "\n\n" + "\n".join(f"- {n}" for n in notes) + "\n"


def render_ablation(results_dir: Path, model: str, stage: str, fmt: str) -> str:
    """``evo-eval table --ablation``: Figures 3 and 4, as markdown or JSON."""
    import json

    tables = {figure: ablation_table(results_dir, model, stage, figure) for figure in FIGURES}
    if fmt == "json":
        return json.dumps(tables, indent=1) + "\n"
    return "\n".join(render_markdown(rows) for rows in tables.values())


# ---- the perplexity task's document (tasks/evo_ppl/evo_ppl.yaml) -------------------------------------


def ppl_document(doc: dict[str, Any]) -> str:
    """A HellaSwag validation item as running text: the cleaned context and its gold ending."""
    from lm_eval.tasks.hellaswag.utils import preprocess

    context = doc["ctx_a"] + " " + doc["ctx_b"].capitalize()
    return preprocess(context.strip()) + " " + preprocess(doc["endings"][int(doc["label"])])


def ppl_results(doc: dict[str, Any], results: list[float]) -> dict[str, tuple[float, int]]:
    """lm-eval's perplexity bookkeeping (as its wikitext task): words and bytes of the scored text."""
    (loglikelihood,) = results
    text = ppl_document(doc)
    words = len(re.split(r"\s+", text.strip()))
    size = len(text.encode("utf-8"))
    return {"word_perplexity": (loglikelihood, words), "byte_perplexity": (loglikelihood, size),
            "bits_per_byte": (loglikelihood, size)}


def ppl_perplexity(items: list[tuple[float, int]]) -> float:
    """exp(-total log-likelihood / total units), as lm-eval's weighted perplexity, but +inf where that
    overflows: a model scoring below about -709 nats per word (random weights, an untrained ELBO)
    gets an infinite perplexity instead of crashing the aggregation and losing the run's results."""
    import math

    total = sum(ll for ll, _ in items)
    units = sum(n for _, n in items)
    exponent = -total / units
    return math.inf if exponent > 709.0 else math.exp(exponent)


def ppl_bits_per_byte(items: list[tuple[float, int]]) -> float:
    import math

    return -sum(ll for ll, _ in items) / sum(n for _, n in items) / math.log(2)
