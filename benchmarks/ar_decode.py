"""Micro-benchmark of the AR fast path at a card's shape (synthetic weights, batch 1, one GPU).

    python3 benchmarks/ar_decode.py --card llama3-8b --output DIR

Measures, in one process:
1. the device's ceilings: bf16 matmul FLOP/s and device-to-device copy bytes/s;
2. the matrix-vector ceilings of this shape: each weight kind (fused qkv, o, fused gate/up, down,
   head) multiplied by one token across all layers' copies (so L2 never holds the weight), as
   bytes/s, and the tokens/s a step would reach if it did only those products at those speeds;
3. the AR sampler in each decode mode (eager, graph, compile): prefill time, per-step time,
   tokens/s over prefill + ``--gen-len`` tokens, and whether its greedy tokens equal eager's;
4. transformers' own model (same weights, eager ``generate`` with its dynamic cache) as the
   baseline the fast path replaces, and its token agreement with ours.
Writes ``DIR/ar_decode_<card>.json`` and prints a table.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import torch  # noqa: E402

from evo_eval.cards import get_card  # noqa: E402
from evo_eval.decoding import get_sampler  # noqa: E402
from evo_eval.models.llama import LlamaShape, random_model  # noqa: E402
from evo_eval.roofline import copy_bandwidth, datasheet_bandwidth, device_name, matmul_rate, model_cost  # noqa: E402


def sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def timed(fn, repeats: int = 3) -> float:
    times = []
    for _ in range(repeats):
        sync()
        start = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def gemv_ceilings(model) -> dict:
    """Bytes/s of one-token products per weight kind, each over every layer's copy, graph-replayed."""
    kinds = {"wqkv": [b.wqkv for b in model.layers], "wo": [b.wo for b in model.layers],
             "w13": [b.w13 for b in model.layers], "w2": [b.w2 for b in model.layers]}
    out = {}
    for kind, linears in kinds.items():
        x = torch.randn(1, linears[0].in_features, device=model.device, dtype=model.dtype)

        def products(x=x, linears=linears):
            for lin in linears:
                torch.nn.functional.linear(x, lin.weight, lin.bias)

        run = products
        if model.device.type == "cuda":  # replay as one graph, so launch gaps do not count
            products()
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                products()
            run = graph.replay
        seconds = timed(run, 10)
        nbytes = sum(lin.weight.numel() * lin.weight.element_size() for lin in linears)
        out[kind] = {"bytes": nbytes, "seconds": seconds, "tbs": nbytes / seconds / 1e12}
    head = model.head_weight
    x = torch.randn(1, head.shape[1], device=model.device, dtype=model.dtype)
    seconds = timed(lambda: torch.nn.functional.linear(x, head), 10)
    out["head"] = {"bytes": head.numel() * head.element_size(), "seconds": seconds,
                   "tbs": head.numel() * head.element_size() / seconds / 1e12}
    out["tokens_per_s_if_only_gemv"] = 1.0 / sum(v["seconds"] for v in out.values() if isinstance(v, dict))
    return out


def run_mode(model, prompt, mode: str, gen_len: int) -> dict:
    sampler = get_sampler("ar")
    config = sampler.Config(max_new_tokens=gen_len, mode=mode)
    start = time.perf_counter()
    first = sampler.sample(model, prompt, config)  # compiles and captures
    setup_s = time.perf_counter() - start
    wall = timed(lambda: sampler.sample(model, prompt, config))
    prefill = timed(lambda: sampler.sample(model, prompt, sampler.Config(max_new_tokens=1, mode=mode)))
    return {"mode": mode, "first_call_s": setup_s, "wall_s": wall, "prefill_s": prefill,
            "step_ms": (wall - prefill) / (gen_len - 1) * 1e3, "tokens_per_s": gen_len / wall,
            "decode_tokens_per_s": (gen_len - 1) / (wall - prefill), "tokens": first.tokens.tolist()}


def hf_baseline(model, shape: LlamaShape, architecture: str, prompt, n: int, forced: list[int],
                reference: torch.Tensor) -> dict:
    """transformers' model with our weights split back into its names; eager generate, dynamic cache."""
    import transformers

    config_cls = transformers.Qwen2Config if architecture.startswith("Qwen2") else transformers.LlamaConfig
    config = config_cls(vocab_size=shape.vocab_size, hidden_size=shape.d_model, intermediate_size=shape.d_ff,
                        num_hidden_layers=shape.n_layers, num_attention_heads=shape.n_heads,
                        num_key_value_heads=shape.n_kv_heads, rms_norm_eps=shape.rms_norm_eps,
                        rope_theta=shape.rope_theta, max_position_embeddings=shape.max_seq_len,
                        tie_word_embeddings=shape.tie_embeddings, bos_token_id=None, eos_token_id=None,
                        pad_token_id=None)
    cls = transformers.Qwen2ForCausalLM if architecture.startswith("Qwen2") else transformers.LlamaForCausalLM
    with torch.device(model.device):
        hf = cls._from_config(config, dtype=model.dtype).eval()
    hd, q, kv, ff = shape.hd, shape.n_heads * shape.hd, shape.n_kv_heads * shape.hd, shape.d_ff
    state = {"model.embed_tokens.weight": model.embed.weight, "model.norm.weight": model.norm,
             "lm_head.weight": model.head_weight}
    for i, b in enumerate(model.layers):
        p = f"model.layers.{i}."
        qw, kw, vw = b.wqkv.weight.split([q, kv, kv])
        state.update({p + "input_layernorm.weight": b.attn_norm, p + "post_attention_layernorm.weight": b.ffn_norm,
                      p + "self_attn.q_proj.weight": qw, p + "self_attn.k_proj.weight": kw,
                      p + "self_attn.v_proj.weight": vw, p + "self_attn.o_proj.weight": b.wo.weight,
                      p + "mlp.gate_proj.weight": b.w13.weight[:ff], p + "mlp.up_proj.weight": b.w13.weight[ff:],
                      p + "mlp.down_proj.weight": b.w2.weight})
        if b.wqkv.bias is not None:
            qb, kb, vb = b.wqkv.bias.split([q, kv, kv])
            state.update({p + "self_attn.q_proj.bias": qb, p + "self_attn.k_proj.bias": kb, p + "self_attn.v_proj.bias": vb})
    missing, unexpected = hf.load_state_dict(state, strict=False)
    del hd
    ids = prompt[None]
    kwargs = dict(do_sample=False, eos_token_id=None, pad_token_id=0)
    with torch.inference_mode():
        hf.generate(ids, max_new_tokens=4, **kwargs)
        wall = timed(lambda: hf.generate(ids, max_new_tokens=n, **kwargs), 2)
        tokens = hf.generate(ids, max_new_tokens=n, **kwargs)[0, ids.shape[1]:].tolist()
        full = torch.cat([prompt, torch.tensor(forced, device=prompt.device)])[None]
        hf_logits = hf(full).logits[0, prompt.numel() - 1: prompt.numel() - 1 + len(forced)].float()
    error = relative_error(reference, hf_logits)
    del hf
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return {"tokens_per_s": n / wall, "wall_s": wall, "tokens": tokens, "ours_eager_logits_rel_error": error,
            "missing": list(missing),
            "unexpected": list(unexpected), "transformers": transformers.__version__}


def teacher_forced_logits(model, prompt, mode: str, forced: list[int]) -> torch.Tensor:
    """Next-token logits (len(forced), vocab) after the prompt and each forced token, decoded in ``mode``."""
    session = model.session(prompt.numel() + len(forced) + 1, mode)
    session.prepare(greedy=False)
    rows = [session.prefill(prompt).float()]
    for token in forced[:-1]:
        session.commit(torch.tensor([token], device=prompt.device))
        rows.append(session.step_logits().float().clone())
    return torch.stack(rows)


def relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


def agreement(a: list[int], b: list[int]) -> int:
    """How many leading tokens two greedy decodes share."""
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--card", default="llama3-8b")
    parser.add_argument("--prompt-len", type=int, default=800)
    parser.add_argument("--gen-len", type=int, default=256)
    parser.add_argument("--modes", default="graph,compile,compile-reduce")
    parser.add_argument("--eager-len", type=int, default=32, help="tokens for the slow eager mode")
    parser.add_argument("--hf-tokens", type=int, default=32)
    parser.add_argument("--output", type=Path, default=Path("."))
    parser.add_argument("--tiny", action="store_true", help="the family's tiny shape (a CPU dry run of this script)")
    args = parser.parse_args()

    card = get_card(args.card)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    report = {"card": card.name, "device": device_name(device), "torch": torch.__version__,
              "matmul_tflops": matmul_rate(device, dtype) / 1e12,
              "copy_tbs": copy_bandwidth(device) / 1e12, "datasheet_tbs": (datasheet_bandwidth(device_name(device)) or 0) / 1e12}
    print(json.dumps(report), flush=True)
    from evo_eval.models.llama import TINY_SHAPE

    model = random_model(TINY_SHAPE if args.tiny else card.shape, dtype=dtype, device=device, seed=0)
    shape = model.shape
    cost = model_cost(model)
    kv_bytes = model.kv_bytes_per_position() * (args.prompt_len + args.gen_len / 2)
    report["bytes_per_token"] = cost.weight_bytes + kv_bytes
    report["roofline_tokens_per_s"] = report["datasheet_tbs"] * 1e12 / report["bytes_per_token"]
    try:
        report["gemv"] = gemv_ceilings(model)
    except Exception as exc:  # noqa: BLE001 - the decode timings below matter more
        report["gemv"] = {"error": f"{type(exc).__name__}: {exc}", "tokens_per_s_if_only_gemv": float("nan")}
    print(json.dumps({k: v for k, v in report.items()}, default=str), flush=True)
    prompt = torch.randint(0, shape.vocab_size - 16, (args.prompt_len,), device=device,
                           generator=torch.Generator(device=device).manual_seed(0))
    report["modes"] = {}
    eager = None
    modes = [m for m in args.modes.split(",") if device.type == "cuda" or m != "graph"]
    for mode in ["eager", *modes]:
        n = args.eager_len if mode == "eager" else args.gen_len
        try:
            result = run_mode(model, prompt, mode, n)
        except Exception as exc:  # noqa: BLE001 - report and go on to the next mode
            result = {"mode": mode, "error": f"{type(exc).__name__}: {exc}"}
        if mode == "eager":
            eager = result.get("tokens")
        elif eager and "tokens" in result:
            result["agree_with_eager"] = agreement(result["tokens"], eager)
        report["modes"][mode] = result
        print(json.dumps({k: v for k, v in result.items() if k != "tokens"}), flush=True)
    # Numerics: the same forced continuation through every mode; greedy tokens of random weights
    # diverge at the first near-tie, so logits are compared instead.
    forced = torch.randint(0, shape.vocab_size - 16, (16,), generator=torch.Generator().manual_seed(1)).tolist()
    with torch.inference_mode():
        reference = teacher_forced_logits(model, prompt, "eager", forced)
        for mode in modes:
            try:
                got = teacher_forced_logits(model, prompt, mode, forced)
                report["modes"][mode]["logits_rel_error_vs_eager"] = relative_error(got, reference)
            except Exception as exc:  # noqa: BLE001
                report["modes"][mode]["logits_rel_error_vs_eager"] = f"{type(exc).__name__}: {exc}"
            print(mode, "logits rel. error vs eager:", report["modes"][mode]["logits_rel_error_vs_eager"], flush=True)
    try:
        with torch.inference_mode():
            report["hf"] = hf_baseline(model, shape, card.shape.get("architecture", ""), prompt, args.hf_tokens,
                                       forced, reference)
        report["hf"]["agree_with_eager"] = agreement(report["hf"]["tokens"], eager or [])
    except Exception as exc:  # noqa: BLE001
        report["hf"] = {"error": f"{type(exc).__name__}: {exc}"}
    print(json.dumps({k: v for k, v in report["hf"].items() if k != "tokens"}), flush=True)
    args.output.mkdir(parents=True, exist_ok=True)
    (args.output / f"ar_decode_{card.name}.json").write_text(json.dumps(report, indent=1))
    roof = report["roofline_tokens_per_s"]
    print(f"\n{card.name} on {report['device']}: roofline {roof:.0f} tokens/s "
          f"({report['bytes_per_token'] / 1e9:.2f} GB/token at {report['datasheet_tbs']:.2f} TB/s); "
          f"GEMV-only ceiling {report['gemv']['tokens_per_s_if_only_gemv']:.0f} tokens/s")
    for mode, r in report["modes"].items():
        if "error" in r:
            print(f"  {mode:8s} ERROR {r['error']}")
        else:
            print(f"  {mode:14s} {r['tokens_per_s']:7.1f} tok/s overall, decode {r['decode_tokens_per_s']:7.1f} tok/s "
                  f"({r['decode_tokens_per_s'] / roof if roof else float('nan'):.0%} of roofline), step {r['step_ms']:.2f} ms, prefill "
                  f"{r['prefill_s'] * 1e3:.0f} ms, first call {r['first_call_s']:.1f} s, agree {r.get('agree_with_eager', '-')}")
    hf = report["hf"]
    print(f"  hf-eager       {hf.get('tokens_per_s', float('nan')):7.1f} tok/s, greedy agree {hf.get('agree_with_eager', '-')}, "
          f"our eager logits rel. err vs hf {hf.get('ours_eager_logits_rel_error', '-')} {hf.get('error', '')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
