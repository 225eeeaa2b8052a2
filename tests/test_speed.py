"""The timing protocol on the CPU at tiny shapes: what is timed, what is counted, what is written."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import torch
import typer
from typer.testing import CliRunner

from evo_eval.cli import handle_errors
from evo_eval.cli.speed import format_result, speed_command
from evo_eval.decoding.ar import ARSampler
from evo_eval.errors import ResultsError, UserError
from evo_eval.speed import measure as speed
from evo_eval.speed.measure import percentile, run_speed, summarise
from evo_eval.speed.options import SpeedOptions
from evo_eval.store import SYNTHETIC_LABEL, SpeedResult, load_speed_results

GEN = 8


def _options(tmp_path: Path, small_mirror: Path, **kw) -> SpeedOptions:
    base = dict(models=["llama3-8b"], gen_len=GEN, repeats=3, warmup=1, output=tmp_path / "speed", device="cpu",
                data_dir=small_mirror)
    base.update(kw)
    return SpeedOptions(**base)


@pytest.fixture(scope="module")
def ar_results(tmp_path_factory, small_mirror):
    out = tmp_path_factory.mktemp("speed")
    return run_speed(_options(out, small_mirror, models=["llama3-8b", "qwen2.5-7b"])), out / "speed"


def test_counts_generated_tokens_never_the_prompt(ar_results):
    results, _ = ar_results
    for result in results:
        assert result.synthetic and result.weights_label == SYNTHETIC_LABEL
        assert len(result.requests) == 3 and len(result.warmup_requests) == 1
        for request in result.requests:
            assert request["new_tokens"] == GEN  # fixed length with synthetic weights
            assert request["prompt_tokens"] > 300  # 4-shot GSM8K prompts, far longer than what is counted
            assert request["nfe"] == GEN  # prefill + GEN - 1 steps
        total_wall = sum(r["wall_s"] for r in result.requests)
        assert result.tokens_per_s == pytest.approx(3 * GEN / total_wall)
        assert result.nfe == GEN and result.tokens_per_forward == 1.0
        assert result.protocol["shots"] == 4 and result.protocol["documents"] == [0, 1, 2]
        assert not result.comparable_to_paper and any("not comparable" in n for n in result.notes)


def test_warmups_are_excluded(tmp_path, small_mirror, monkeypatch):
    calls = {"n": 0}
    original = ARSampler.sample

    # A warm-up pause far above a tiny model's request time, so a loaded CI machine cannot blur the two.
    pause = 1.5

    def slow_first_calls(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] <= 2:
            time.sleep(pause)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(ARSampler, "sample", slow_first_calls)
    (result,) = run_speed(_options(tmp_path, small_mirror, warmup=2, repeats=3))
    assert [r["phase"] for r in result.warmup_requests] == ["warmup", "warmup"]
    assert all(r["wall_s"] >= pause for r in result.warmup_requests)
    assert all(r["phase"] == "timed" and r["wall_s"] < pause for r in result.requests)
    assert result.e2e_latency_p90_s < pause
    # The longest prompt warms up first, so size-keyed compilation never lands in a timed request.
    longest = max(result.requests, key=lambda r: r["prompt_tokens"])
    assert result.warmup_requests[0]["doc_id"] == longest["doc_id"]


def test_eos_truncation_counts_tokens_up_to_eos(tmp_path, small_mirror, tiny_llama_dir, monkeypatch):
    # Real weights: find which token the model emits 4th for the first prompt, declare it EOS.
    probe = run_speed(_options(tmp_path / "probe", small_mirror, weights="checkpoint", checkpoint=str(tiny_llama_dir),
                               repeats=1, warmup=0, gen_len=40))[0]
    assert not probe.synthetic and probe.protocol["tokenizer"].startswith("checkpoint")
    from transformers import AutoTokenizer

    from evo_eval.decoding import get_sampler
    from evo_eval.models.llama_checkpoint import load_pretrained
    from evo_eval.data.speed_prompts import gsm8k_prompts

    model = load_pretrained(str(tiny_llama_dir), dtype=torch.float32, device="cpu")
    tok = AutoTokenizer.from_pretrained(tiny_llama_dir)
    ids = torch.tensor(tok.encode(gsm8k_prompts(1, 4, small_mirror)[0].text))
    free = get_sampler("ar").sample(model, ids, get_sampler("ar").Config(max_new_tokens=40)).tokens.tolist()
    k = next(i for i in range(3, 40) if free[i] not in free[:i])

    built_checkpoint = speed.build_checkpoint

    def with_eos(*args, **kwargs):
        built = built_checkpoint(*args, **kwargs)
        built.eos_token_id, built.until = free[k], ()
        return built

    monkeypatch.setattr(speed, "build_checkpoint", with_eos)
    (result,) = run_speed(_options(tmp_path, small_mirror, weights="checkpoint", checkpoint=str(tiny_llama_dir),
                                   repeats=1, warmup=0, gen_len=40))
    (request,) = result.requests
    assert request["new_tokens"] == k and request["nfe"] == k + 1
    assert result.tokens_per_s == pytest.approx(k / request["wall_s"])
    assert any("no warm-up" in n for n in result.notes)


def test_results_round_trip_and_label(ar_results):
    results, folder = ar_results
    records = load_speed_results(folder)
    assert set(records) == {"llama3-8b", "qwen2.5-7b"}
    for result in results:
        record = json.loads((folder / f"{result.model}.json").read_text())
        assert record["synthetic"] is True and record["weights_label"] == SYNTHETIC_LABEL
        assert SpeedResult.from_record(records[result.model]) == result
        assert "synthetic weights" in format_result(result)
        assert record["provenance"]["git"]["commit"] and "torch" in record["provenance"]["packages"]
        assert record["paper"]["tokens_per_s"] in (58.0, 46.0)
        assert record["roofline"]["kv_counted"] is True and record["roofline"]["achieved_bandwidth_tbs"] > 0


def test_table_speed_rows_are_filled(ar_results, tmp_path):
    from evo_eval.report.render import render
    from evo_eval.report.tables import build_table

    results, folder = ar_results
    (tmp_path / "results").mkdir()
    table = build_table("base", tmp_path / "results", speed_dir=folder)
    rows = {row.label: row for row in table.rows}
    by_card = {r.model: r for r in results}
    for label, key in (("Inference Speed (tokens/s)", "tokens_per_s"), ("E2E Latency (s)", "e2e_latency_s")):
        cells = dict(zip(table.cards, rows[label].cells))
        assert cells["llama3-8b"].value == pytest.approx(getattr(by_card["llama3-8b"], key))
        assert cells["qwen2.5-7b"].value == pytest.approx(getattr(by_card["qwen2.5-7b"], key))
        assert cells["evo-8b"].value is None
    assert "synthetic" in render(table, "markdown")


def test_variant_files_and_bad_files(ar_results, tmp_path, small_mirror):
    _, folder = ar_results
    (result,) = run_speed(_options(tmp_path, small_mirror, decoding={"mode": "eager"}, repeats=1, warmup=0))
    assert result.label == "mode-eager" and (tmp_path / "speed" / "llama3-8b--mode-eager.json").is_file()
    assert set(load_speed_results(tmp_path / "speed")) == set()
    assert set(load_speed_results(tmp_path / "speed", variants=True)) == {"llama3-8b--mode-eager"}

    (tmp_path / "speed" / "summary.json").write_text(json.dumps({"kind": "evo-eval/speed-summary"}))
    assert load_speed_results(tmp_path / "speed") == {}  # other kinds are not speed results
    record = json.loads((folder / "llama3-8b.json").read_text())
    (tmp_path / "speed" / "old.json").write_text(json.dumps({**record, "schema_version": 0}))
    with pytest.raises(ResultsError, match="schema version 0"):
        load_speed_results(tmp_path / "speed")
    (tmp_path / "speed" / "old.json").write_text(json.dumps(record)[:200])
    with pytest.raises(ResultsError, match="not valid JSON"):
        load_speed_results(tmp_path / "speed")


def test_bad_options_fail_before_building(tmp_path, small_mirror):
    for kw, message in ((dict(models=["llama9"]), "unknown model 'llama9'"), (dict(weights="real"), "unknown weights"),
                        (dict(gen_len=0), "--gen-len must be at least 1"),
                        (dict(stage="instruct"), "llama3-8b is not a instruct card"),
                        (dict(checkpoint="x"), "--weights is synthetic")):
        with pytest.raises(UserError, match=message):
            run_speed(_options(tmp_path, small_mirror, **kw))
    with pytest.raises(UserError, match="sampler_x"):
        run_speed(_options(tmp_path, small_mirror, decoding={"sampler_x": "1"}))


def test_unavailable_variant_is_a_skip(tmp_path, small_mirror):
    events = []
    results = run_speed(_options(tmp_path, small_mirror, variant="cached"), on_event=lambda kind, **kw: events.append((kind, kw)))
    assert results == []
    (skip,) = [kw for kind, kw in events if kind == "skip"]
    assert "no 'cached' variant" in skip["reason"]


def test_statistics():
    assert percentile([5.0, 1.0, 3.0, 2.0, 4.0], 90) == pytest.approx(4.6)
    assert percentile([2.0], 90) == 2.0
    timed = [speed.RequestTiming("timed", i, 100, 10, w, 10, 109, w, {}) for i, w in enumerate((1.0, 2.0, 4.0))]
    figures = summarise(timed)
    assert figures["e2e_latency_s"] == 2.0 and figures["tokens_per_s"] == pytest.approx(30 / 7)
    assert figures["tokens_per_s_median"] == 5.0 and figures["tokens_per_forward"] == 1.0


def test_command_prints_labels_and_one_line_errors(tmp_path, small_mirror):
    app = typer.Typer()
    app.command("speed")(handle_errors(speed_command))
    app.command("other")(lambda: None)  # two commands, so typer keeps the subcommand name
    runner = CliRunner()
    ok = runner.invoke(app, ["speed", "--models", "llama3-8b", "--gen-len", "4", "--repeats", "1", "--warmup", "0",
                             "--device", "cpu", "--output", str(tmp_path), "--data-dir", str(small_mirror)])
    assert ok.exit_code == 0, ok.output
    assert "synthetic weights" in ok.output and "not comparable" in ok.output
    assert (tmp_path / "llama3-8b.json").is_file()
    bad = runner.invoke(app, ["speed", "--models", "llama9", "--device", "cpu"])
    assert bad.exit_code == 2
    assert bad.output.strip().count("\n") == 0 and "unknown model 'llama9'" in bad.output


def test_fixed_canvas_is_sized_to_the_protocol_length():
    from evo_eval.speed.options import fit_canvas

    llada_base = {"gen_length": 1024, "steps": 1024, "block_length": 1024}
    fit_canvas(llada_base, 256, user={})
    assert llada_base == {"gen_length": 256, "steps": 256, "block_length": 256}
    cached = {"gen_length": 1024, "steps": 32, "block_length": 32}  # few steps per token, small blocks
    fit_canvas(cached, 256, user={})
    assert cached == {"gen_length": 256, "steps": 8, "block_length": 32}
    pinned = {"gen_length": 512, "steps": 512, "block_length": 512}
    fit_canvas(pinned, 256, user={"gen_length": 512})
    assert pinned["gen_length"] == 512
    no_canvas = {"k_max": 20}
    fit_canvas(no_canvas, 256, user={})
    assert no_canvas == {"k_max": 20}


def test_stand_ins_are_timed_only_when_named_and_fast_dllm_v2_at_the_fixed_length():
    from evo_eval.cards import get_card
    from evo_eval.speed.options import SpeedOptions, plan_cards, sampler_config, sampler_for

    everything = [c.name for c in plan_cards(SpeedOptions(models=["all"]))]
    assert "fast-dllm-v2-7b" not in everything and "dream-v0-7b" not in everything
    assert [c.name for c in plan_cards(SpeedOptions(models=["fast-dllm-v2-7b"]))] == ["fast-dllm-v2-7b"]
    card = get_card("fast-dllm-v2-7b")
    config = sampler_config(card, sampler_for(card), SpeedOptions(gen_len=100), None)
    # the protocol's length, exactly (the authors' block count would give 100 - p % 32 + 1 tokens)
    assert config.fixed_length and config.gen_length == 100 and config.eos_token_id is None
    assert config.threshold == 1.0  # the card's GSM8K setting: the timed prompts are GSM8K's
