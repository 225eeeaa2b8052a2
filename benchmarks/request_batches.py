"""Network calls, NFE and wall time of a few benchmarks at batch 1 and batch N, per family (CPU, tiny checkpoints).

    PYTHONPATH=. python benchmarks/request_batches.py [--data-dir MIRROR] [--limit 4] [--batch-size 8]
        [--families llada,dream,evo,mdlm,bd3lm,ard] [--tasks arc_challenge,hellaswag,gsm8k,mmlu]

For each family a tiny random-weight checkpoint is built locally (evo_eval.tiny, with the registry's
cheap decoding and likelihood sizes) and each benchmark is run through lm-eval with the suite's own
requests (``run.evaluate_arguments``: documents, shots, limit), once at ``--batch-size 1`` and once at
``--batch-size N`` (adapters/request_batches.py). Printed per benchmark: requests, NFE summed over the
requests' records (the per-row work, the same at any batch size by design), the network's passes
(calls of its first block, counted with a forward hook: what batching cuts), the model's time (the
requests' recorded wall times summed) and the whole evaluation's wall time (lm-eval's task building
and metrics included), and whether
every response (log-likelihood floats, greedy flags, generated text) is identical. Each batch size
runs ``--repeat`` times, alternating, and the fastest time is kept (other work on a shared CPU only
ever slows a pass down). Without
``--data-dir`` the benchmark sample shipped in the package is imported into a temporary mirror.
Tiny models on a CPU: the pass counts are the point, the wall times only show the direction.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

FAMILIES = "llada,dream,evo,mdlm,bd3lm,ard"
TASKS = "arc_challenge,hellaswag,gsm8k"  # add mmlu for its 57 subjects (minutes per family per pass)


def pass_counter(model) -> list[int]:
    count = [0]
    first = next(m for name, m in model.named_modules() if name.endswith(("layers.0", "blocks.0")))
    first.register_forward_hook(lambda *args: count.__setitem__(0, count[0] + 1))
    return count


def one_pass(adapter, entry, card, limit, task_manager, counter, max_gen_toks: int) -> dict:
    import lm_eval

    from evo_eval.data.prompts import FEWSHOT_SEED
    from evo_eval.fewshot import per_document_shots
    from evo_eval.record import main_score
    from evo_eval.run import RunOptions, evaluate_arguments

    batch_size = adapter.batch_size
    adapter = adapter.with_settings(benchmark=entry.key)  # the card's settings for this benchmark
    adapter.batch_size = batch_size
    counter[0] = 0
    options = RunOptions(model=card.name, limit=limit, bootstrap_iters=0, gen_kwargs={"max_gen_toks": max_gen_toks})
    started = time.perf_counter()
    with per_document_shots(FEWSHOT_SEED):  # the shots run draws (evo_eval/fewshot.py)
        results = lm_eval.simple_evaluate(model=adapter, **evaluate_arguments(entry, card, options, task_manager))
    wall = time.perf_counter() - started
    responses = [s["resps"] for rows in results["samples"].values() for s in rows]
    return {"nfe": sum(r.nfe for r in adapter.records), "passes": counter[0], "wall_s": wall,
            "model_s": sum(r.wall_s for r in adapter.records),
            "requests": len(adapter.records), "score": main_score(results, entry.task, entry.benchmark.metric["base"]),
            "responses": responses}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-dir", type=Path, help="an evo-eval data mirror (default: the shipped sample, imported)")
    parser.add_argument("--limit", type=float, default=4)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--max-gen-toks", type=int, default=16)
    parser.add_argument("--repeat", type=int, default=2, help="passes per batch size; times are the fastest")
    parser.add_argument("--families", default=FAMILIES)
    parser.add_argument("--tasks", default=TASKS)
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch

    from evo_eval.adapters import adapter_class
    from evo_eval.checks import _task_manager
    from evo_eval.data.mirror import import_mirror
    from evo_eval.families import family as family_record
    from evo_eval.paths import sample_benchdata_dir
    from evo_eval.suites import resolve
    from evo_eval.tiny import build_tiny_checkpoint, build_tokenizer, tiny_card

    torch.set_num_threads(1)
    limit = int(args.limit) if args.limit >= 1 else args.limit
    entries = resolve("all", "base", args.tasks.split(","))
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = args.data_dir
        if data_dir is None:
            data_dir = Path(tmp) / "data"
            import_mirror(sample_benchdata_dir(), data_dir)
        task_manager = _task_manager(data_dir)
        tok = Path(tmp) / "tok"
        build_tokenizer(tok)
        for family in args.families.split(","):
            record = family_record(family)
            folder = build_tiny_checkpoint(family, Path(tmp) / family, tok, seed=0)
            adapter = adapter_class(family)(pretrained=str(folder), card=tiny_card(family), device="cpu",
                                            **record.tiny_decoding, **record.tiny_likelihood)
            counter = pass_counter(adapter.model)
            for entry in entries:
                runs: dict[int, dict] = {}
                for _ in range(args.repeat):  # alternating; the fastest of each (a shared CPU is noisy)
                    for size in (1, args.batch_size):
                        adapter.batch_size = size
                        got = one_pass(adapter, entry, adapter.card, limit, task_manager, counter, args.max_gen_toks)
                        if size in runs:
                            assert got["responses"] == runs[size]["responses"], "a repeat changed an answer"
                            got["model_s"] = min(got["model_s"], runs[size]["model_s"])
                            got["wall_s"] = min(got["wall_s"], runs[size]["wall_s"])
                        runs[size] = got
                before, after = runs[1], runs[args.batch_size]
                same = before["responses"] == after["responses"] and before["nfe"] == after["nfe"]
                rows.append((family, entry.key, before, after, same))
                print(f"{family:<6} {entry.key:<14} requests {before['requests']:>5}  NFE {before['nfe']:>6} -> "
                      f"{after['nfe']:>6}  passes {before['passes']:>6} -> {after['passes']:>6} "
                      f"({before['passes'] / max(after['passes'], 1):.2f}x)  model {before['model_s']:6.2f} s -> "
                      f"{after['model_s']:6.2f} s  wall {before['wall_s']:6.1f} s -> {after['wall_s']:6.1f} s  "
                      f"identical: {same}", flush=True)
    print(f"\n| family | benchmark | requests | NFE (batch 1 = batch {args.batch_size}) | passes batch 1 | "
          f"passes batch {args.batch_size} | cut | model s, batch 1 | model s, batch {args.batch_size} | "
          f"wall s, batch 1 | wall s, batch {args.batch_size} | "
          "score | every response identical |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    total = {"nfe": [0, 0], "passes": [0, 0], "model_s": [0.0, 0.0], "wall_s": [0.0, 0.0]}
    for f, b, before, after, same in rows:
        for key in total:
            total[key][0] += before[key]
            total[key][1] += after[key]
        print(f"| {f} | {b} | {before['requests']} | {before['nfe']} | {before['passes']} | {after['passes']} | "
              f"{before['passes'] / max(after['passes'], 1):.2f}x | {before['model_s']:.2f} | {after['model_s']:.2f} | "
              f"{before['wall_s']:.1f} | {after['wall_s']:.1f} | "
              f"{before['score']} | {same} |")
    print(f"| all | | | {total['nfe'][0]} -> {total['nfe'][1]} | {total['passes'][0]} | {total['passes'][1]} | "
          f"{total['passes'][0] / max(total['passes'][1], 1):.2f}x | {total['model_s'][0]:.2f} | {total['model_s'][1]:.2f} | "
          f"{total['wall_s'][0]:.1f} | {total['wall_s'][1]:.1f} | "
          f"| {all(r[-1] for r in rows)} |")
    return 0 if all(r[-1] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
