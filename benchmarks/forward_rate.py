"""One full-sequence forward of each diffusion/hybrid family at paper size, against the device's matmul rate.

Issue 6's target: at >= 512 tokens, a bidirectional forward of the 8B shape should reach >= 60% of the
device's measured bf16 matmul rate. This times exactly that forward (synthetic weights, batch 1) for
every family whose model takes a whole sequence, measures the 8192^3 bf16 matmul rate in the same
process, and prints the fraction. FLOPs counted: 2 x dense parameters x tokens (embedding gathers
excluded) + 4 x layers x tokens^2 x width for the attention scores and weighted sums.

    python3 benchmarks/forward_rate.py --tokens 640 --output DIR
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from evo_eval.cards import get_card  # noqa: E402
from evo_eval.roofline import matmul_rate, model_cost  # noqa: E402

# card, how to call one full-sequence forward, attention pattern (for the label only)
FORWARDS = {
    "llada-8b": (lambda m, ids: m(ids).logits, "bidirectional"),
    "mdlm-7b": (lambda m, ids: m(ids, torch.zeros(1, device=ids.device)), "bidirectional"),
    "bd3lm-7b": (lambda m, ids: m(ids), "block-causal"),
    "evo-8b": (lambda m, ids: m.ar_logits(ids), "causal (AR limit)"),
}


def time_forward(fn, model, ids, warmup: int, repeats: int) -> float:
    with torch.inference_mode():
        for _ in range(warmup):
            fn(model, ids)
        torch.cuda.synchronize()
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(repeats):
            fn(model, ids)
        end.record()
        torch.cuda.synchronize()
    return start.elapsed_time(end) / 1000 / repeats


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tokens", type=int, default=640)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--output", type=Path, default=None)
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("forward_rate needs a GPU (it measures the device's matmul rate)")
        return 2
    device = torch.device("cuda")
    rate = matmul_rate(device, torch.bfloat16)
    print(f"device {torch.cuda.get_device_name()}  bf16 matmul {rate / 1e12:.0f} TFLOP/s (measured)")
    rows = []
    for name, (fn, pattern) in FORWARDS.items():
        card = get_card(name)
        module = __import__(f"evo_eval.models.{card.family}", fromlist=["random_model"])
        model = module.random_model(card.shape, dtype=torch.bfloat16, device=device)
        cost = model_cost(model)
        vocab = int(card.shape["vocab_size"])
        ids = torch.randint(0, vocab - 1000, (1, args.tokens), device=device)
        seconds = time_forward(fn, model, ids, args.warmup, args.repeats)
        flops = 2 * cost.dense_params * args.tokens + 4 * card.shape["n_layers"] * args.tokens**2 * card.shape["d_model"]
        achieved = flops / seconds
        row = {"card": name, "attention": pattern, "tokens": args.tokens, "seconds": seconds,
               "tflops": achieved / 1e12, "matmul_tflops": rate / 1e12, "fraction": achieved / rate,
               "dense_params": cost.dense_params, "synthetic_weights": True}
        rows.append(row)
        print(f"{name:<10} {pattern:<18} {seconds * 1e3:7.1f} ms  {achieved / 1e12:6.0f} TFLOP/s  "
              f"{100 * achieved / rate:5.1f}% of matmul (synthetic weights)", flush=True)
        del model
        torch.cuda.empty_cache()
    if args.output:
        args.output.mkdir(parents=True, exist_ok=True)
        (args.output / "forward_rate.json").write_text(json.dumps(
            {"device": torch.cuda.get_device_name(), "torch": torch.__version__, "rows": rows}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
