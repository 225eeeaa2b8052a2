"""NFE and wall time of the likelihood benchmarks with and without shared forwards (CPU, tiny checkpoints).

    PYTHONPATH=. python benchmarks/shared_forwards.py --data-dir MIRROR --limit 2 [--families llada,mdlm,bd3lm]
        [--tasks mmlu,cmmlu,ceval]

For each family a tiny random-weight checkpoint is built locally (evo_eval.tiny) and each benchmark is
run twice through lm-eval with the suite's own requests (``run.evaluate_arguments``: documents, shots,
limit): once answering every request alone (``share_forwards=False``, the behaviour before
adapters/batching.py) and once with one forward per context for one-token options. Prints the NFE
summed over the requests' records, the wall time, the score, and whether every per-request
log-likelihood is identical between the two. Tiny models on a CPU: the NFE ratio is the point, the
wall times only show the direction.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def one_pass(adapter, entry, card, limit, task_manager) -> dict:
    import lm_eval

    from evo_eval.data.prompts import FEWSHOT_SEED
    from evo_eval.fewshot import per_document_shots
    from evo_eval.record import main_score
    from evo_eval.run import RunOptions, evaluate_arguments

    adapter = adapter.with_settings(benchmark=entry.key)  # the card's settings for this benchmark
    started = time.perf_counter()
    with per_document_shots(FEWSHOT_SEED):  # the shots run draws (evo_eval/fewshot.py)
        results = lm_eval.simple_evaluate(model=adapter, **evaluate_arguments(
            entry, card, RunOptions(model=card.name, limit=limit, bootstrap_iters=0), task_manager))
    wall = time.perf_counter() - started
    responses = [s["resps"] for rows in results["samples"].values() for s in rows]
    return {"nfe": sum(r.nfe for r in adapter.records), "wall_s": wall, "requests": len(adapter.records),
            "score": main_score(results, entry.task, entry.benchmark.metric["base"]), "responses": responses}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-dir", type=Path, required=True, help="an evo-eval data mirror (evo-eval data import)")
    parser.add_argument("--limit", type=float, default=2)
    parser.add_argument("--families", default="llada,mdlm,bd3lm")
    parser.add_argument("--tasks", default="mmlu,cmmlu,ceval")
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch

    from evo_eval.adapters import adapter_class
    from evo_eval.checks import _task_manager, resolve_data_dir
    from evo_eval.suites import resolve
    from evo_eval.tiny import build_tiny_checkpoint, build_tokenizer

    torch.set_num_threads(1)
    limit = int(args.limit) if args.limit >= 1 else args.limit
    data_dir = resolve_data_dir(args.data_dir)
    task_manager = _task_manager(data_dir)
    entries = resolve("all", "base", args.tasks.split(","))
    from evo_eval.tiny import tiny_card

    cards = {"llada": lambda: tiny_card("llada"), "mdlm": lambda: "mdlm-7b", "bd3lm": lambda: "bd3lm-7b",
             "evo": lambda: tiny_card("evo")}
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tok = Path(tmp) / "tok"
        build_tokenizer(tok)
        for family in args.families.split(","):
            folder = build_tiny_checkpoint(family, Path(tmp) / family, tok, seed=0)
            card = cards[family]()
            passes = {}
            for share in (False, True):
                adapter = adapter_class(family)(pretrained=str(folder), card=card, device="cpu", share_forwards=share)
                for entry in entries:
                    passes[share, entry.key] = one_pass(adapter, entry, adapter.card, limit, task_manager)
            for entry in entries:
                before, after = passes[False, entry.key], passes[True, entry.key]
                rows.append((family, entry.key, before["requests"], before["nfe"], after["nfe"], before["wall_s"],
                             after["wall_s"], before["score"], after["score"], before["responses"] == after["responses"]))
                print(f"{family:<6} {entry.key:<6} requests {before['requests']:>5}  NFE {before['nfe']:>6} -> "
                      f"{after['nfe']:>5} ({before['nfe'] / max(after['nfe'], 1):.2f}x)  wall {before['wall_s']:6.1f} s -> "
                      f"{after['wall_s']:6.1f} s  score {before['score']} -> {after['score']}  identical: {rows[-1][-1]}",
                      flush=True)
    print("\n| family | benchmark | requests | NFE alone | NFE shared | cut | wall alone (s) | wall shared (s) | "
          "score alone | score shared | every log-likelihood identical |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for f, b, n, a, s, wa, ws, sa, ss, same in rows:
        print(f"| {f} | {b} | {n} | {a} | {s} | {a / max(s, 1):.2f}x | {wa:.1f} | {ws:.1f} | {sa} | {ss} | {same} |")
    return 0 if all(r[-1] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
