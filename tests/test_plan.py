"""``evo-eval plan``: the suite's real requests counted into forwards, tokens, FLOPs and time, checked
against numbers computed by hand from the same documents."""

from __future__ import annotations

import json

import pytest

from evo_eval.cards import get_card
from evo_eval.plan import Cost, PlanOptions, datasheet_rates, family_settings, likelihood_cost, model_shape, plan_card
from evo_eval.data.speed_prompts import gsm8k_prompts
from evo_eval.suites import paper_shots

H100 = datasheet_rates("H100")


@pytest.fixture(scope="module")
def llada_plan(small_mirror):
    return plan_card(PlanOptions(model="llada-8b", tasks=["arc_challenge", "gsm8k"], limit=2, data_dir=small_mirror,
                                 variant="cached", device="H100"))


def test_generation_counts_equal_the_hand_computed_canvas(llada_plan, small_mirror):
    card, model = llada_plan.card, llada_plan.model
    assert model.dense_params == 7497584640 and model.layers == 32 and model.width == 4096
    gsm8k = next(b for b in llada_plan.benchmarks if b.benchmark == "gsm8k")
    assert (gsm8k.documents, gsm8k.requests) == (2, 2)
    # The card's reference decoding: one 1024-token canvas, 1024 steps, every step a full forward
    # over prompt + canvas. Prompts rendered independently (speed_prompts equals lm-eval's gsm8k),
    # counted with the same proxy, plus the BOS the adapter adds.
    from evo_eval.plan import ProxyText

    proxy = ProxyText(card.shape)
    prompts = [len(proxy.encode(p.text)) + 1 for p in gsm8k_prompts(2, paper_shots("gsm8k", "base"), small_mirror)]
    assert gsm8k.prompt_tokens == sum(prompts)
    ref = gsm8k.reference
    assert ref.calls == ref.nfe == 2 * 1024
    assert ref.positions == sum((p + 1024) * 1024 for p in prompts)
    flops = sum(1024 * (2 * model.dense_params * (p + 1024) + 4 * 32 * 4096 * (p + 1024) ** 2) for p in prompts)
    assert ref.flops == pytest.approx(flops, rel=1e-12)
    # H100 datasheet: every forward is compute-bound at 2·7.5e9·1.7k FLOPs against 989 TFLOP/s.
    assert ref.seconds == pytest.approx(flops / 989e12, rel=1e-9)
    assert not ref.exact  # generation is counted to the full canvas: an upper bound
    # Fast-dLLM cached (block 32, dual cache, threshold 0.9): per block one full refresh forward, then
    # at most 31 more forwards over the block's 32 positions against the whole cache.
    var = gsm8k.variant
    assert var.calls == 2 * 32 * 32
    assert var.positions == sum(32 * (p + 1024) + 32 * 31 * 32 for p in prompts)


def test_likelihood_counts_monte_carlo_rows(llada_plan, small_mirror):
    arc = next(b for b in llada_plan.benchmarks if b.benchmark == "arc_challenge")
    lines = (small_mirror / "arc_challenge").rglob("*.jsonl")
    assert arc.documents == 2 and arc.requests >= 6
    # Every ARC option is several tokens: 128 draws in 16 forwards of 8 rows, none shared.
    assert arc.reference.nfe == 128 * arc.requests and arc.reference.calls == 16 * arc.requests
    assert arc.variant.calls == arc.reference.calls  # the cached variant changes decoding only
    assert next(lines, None) is not None


def test_one_token_options_share_a_forward_where_the_family_does():
    """MMLU-shaped requests (4 one-token options after one context): one forward for LLaDA, MDLM,
    BD3-LM and AR cards; four ELBO estimates for Evo, whose latents carry the option itself."""
    items = [([1] * 100 + [d], [7 + o]) for d in range(3) for o in range(4)]
    forwards = {}
    for name in ("llada-8b", "mdlm-7b", "bd3lm-7b", "llama3-8b", "evo-8b", "ard-7b"):
        card = get_card(name)
        settings = family_settings(card, eos_token_id=0, model_args={})
        forwards[name] = likelihood_cost(settings, items, card, model_shape(card), H100).calls
    assert {k: forwards[k] for k in ("llada-8b", "mdlm-7b", "bd3lm-7b", "llama3-8b")} == dict.fromkeys(
        ("llada-8b", "mdlm-7b", "bd3lm-7b", "llama3-8b"), 3)
    evo = get_card("evo-8b").likelihood  # context pass + ceil((32 draws + 1 readout) / 8 rows) per option
    assert forwards["evo-8b"] == 12 * (1 + -(-(evo["mc_num"] + 1) // evo["batch"]))
    ard = get_card("ard-7b").likelihood or {}
    mc, batch = ard.get("mc_num", 40), ard.get("batch", 20)
    assert forwards["ard-7b"] == 12 * (1 + mc // batch)
    # Sharing off (as --model-args share_forwards=false does for the adapters): one forward per option.
    alone = Cost()
    card = get_card("llada-8b")
    settings = family_settings(card, 0, {})
    for ctx, cont in items:
        alone.add(settings.scorer.work(settings.scorer_config, len(ctx), len(cont), card.shape), model_shape(card), H100)
    assert alone.calls == 12


def test_model_args_reach_the_counts(small_mirror):
    plan = plan_card(PlanOptions(model="llada-8b", tasks=["gsm8k"], limit=1, data_dir=small_mirror, device="A100",
                                 model_args={"gen_length": 256, "steps": 128, "block_length": 32}))
    gen = plan.benchmarks[0].reference
    assert gen.calls == 128 and "A100" in plan.rates.label


def test_bad_input_is_one_line(small_mirror):
    from evo_eval.errors import UnknownNameError, UserError

    with pytest.raises(UnknownNameError):
        plan_card(PlanOptions(model="llada-8b", tasks=["gsm8k"], limit=1, data_dir=small_mirror, device="TPU"))
    with pytest.raises(UserError, match="no setting"):
        plan_card(PlanOptions(model="llada-8b", tasks=["gsm8k"], limit=1, data_dir=small_mirror, device="H100",
                              model_args={"stepz": 3}))


def test_measured_rates_come_from_speed_results(tmp_path):
    from evo_eval.plan import measured_rates

    record = {"kind": "evo-eval/speed-result", "model": "llama3-8b", "comparable_to_paper": True, "device": "GPU X",
              "roofline": {"measured_matmul_tflops": 700.0, "datasheet_bandwidth_tbs": 3.0, "bound": "memory",
                           "bandwidth_fraction": 0.5}}
    from evo_eval.store import SCHEMA_VERSION, SpeedResult

    full = {name: None for name in SpeedResult.__dataclass_fields__} | record | {"schema_version": SCHEMA_VERSION, "label": None}
    (tmp_path / "llama3-8b.json").write_text(json.dumps(full))
    own = measured_rates(get_card("llama3-8b"), tmp_path)
    assert own.bandwidth == pytest.approx(1.5e12) and own.flop_rate == pytest.approx(700e12)
    other = measured_rates(get_card("llada-8b"), tmp_path)
    assert other.bandwidth == pytest.approx(3e12) and "not timed" in other.label


def test_cli_prints_one_table_per_card_and_writes_json(small_mirror, tmp_path):
    from typer.testing import CliRunner

    from evo_eval.cli import app

    out = tmp_path / "plan.json"
    result = CliRunner().invoke(app, ["plan", "--model", "llada-8b,mdlm-7b", "--tasks", "gsm8k", "--limit", "1",
                                      "--data-dir", str(small_mirror), "--device", "H200", "--json", str(out)])
    assert result.exit_code == 0, result.output
    assert "llada-8b (llada, base)" in result.output and "mdlm-7b (mdlm, base)" in result.output
    plans = json.loads(out.read_text())
    assert [p["card"] for p in plans] == ["llada-8b", "mdlm-7b"]
    assert plans[0]["benchmarks"][0]["reference"]["calls"] == 1024  # LLaDA base: 1024 steps, one document
    assert plans[0]["total"]["calls"] == 1024 and "H200" in plans[0]["rates"]["label"]
    bad = CliRunner().invoke(app, ["plan", "--model", "llada-8b", "--tasks", "gsm8k", "--device", "TPU"])
    assert bad.exit_code == 2 and "datasheet device" in bad.output


@pytest.mark.parametrize("name, max_length", [("dream-v0-7b", 131072), ("fast-dllm-v2-7b", 32768)])
def test_qwen_layout_stand_ins_are_sized_from_their_config_names(name, max_length):
    shape = model_shape(get_card(name))  # num_hidden_layers / hidden_size / max_position_embeddings
    assert (shape.layers, shape.width, shape.max_length) == (28, 3584, max_length)
    assert 7.6e9 < shape.params < 7.7e9  # Qwen2.5-7B's 7.62 G
