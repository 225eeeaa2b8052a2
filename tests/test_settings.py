"""One settings merge (evo_eval/settings.py) and what the results record of it: the settings in force
after card default < card per-benchmark < --model-args < the request, for every family."""

from __future__ import annotations

import json
from dataclasses import replace

from typer.testing import CliRunner

from evo_eval.cli import app
from evo_eval.settings import changed, for_request, in_force, merge

runner = CliRunner()


def test_precedence_card_default_then_benchmark_then_model_args_then_request():
    from evo_eval.tiny import tiny_card

    card = tiny_card("evo")
    card = replace(card, decoding={"default": {**card.decoding["default"], "k_max": 20, "temperature": 0.7},
                                   "tasks": {"gsm8k": {"k_max": 8, "schedule": "fixed:1"}}})
    assert merge(card, None, {})["k_max"] == 20 and "sampler" not in merge(card, None, {})
    assert merge(card, "gsm8k", {})["k_max"] == 8
    merged = merge(card, "gsm8k", {"schedule": "fixed:0.5"})
    assert merged["schedule"] == "fixed:0.5" and merged["k_max"] == 8
    request = for_request({**merged, "max_new_tokens": 256}, {"max_gen_toks": 32, "temperature": 0.0, "until": ["\n"]}, 99)
    assert request["max_new_tokens"] == 32 and request["temperature"] == 0.0 and "until" not in request
    assert for_request({"max_new_tokens": 256}, {"top_p": 0.5}, 99) == {"max_new_tokens": 256}  # no top_p knob


def test_in_force_folds_the_requests_changes_only_when_they_agree():
    decoding = {"sampler": "evo", "sampler_config": {"max_new_tokens": 256, "temperature": 0.7}}
    same = [{"request_type": "generate_until", "settings": changed({"max_new_tokens": 256, "temperature": 0.7},
                                                                   {"max_new_tokens": 32, "temperature": 0.0})}] * 2
    folded = in_force(decoding, same + [{"request_type": "loglikelihood", "settings": {}}])
    assert folded["sampler_config"] == {"max_new_tokens": 32, "temperature": 0.0}
    differ = same + [{"request_type": "generate_until", "settings": {"max_new_tokens": 8}}]
    kept = in_force(decoding, differ)
    assert kept["sampler_config"] == decoding["sampler_config"] and "differ per request" in kept["request_settings"]
    assert in_force(decoding, []) == decoding


def _gsm8k(tmp_path, mirror, *model, gen_len: int):
    code = runner.invoke(app, ["run", *model, "--data-dir", str(mirror), "--output", str(tmp_path), "--tasks",
                               "gsm8k", "--limit", "1", "--device", "cpu", "--gen-kwargs", f"max_gen_toks={gen_len}"])
    assert code.exit_code == 0, code.stderr
    (path,) = tmp_path.glob("base/*/gsm8k.json")
    return json.loads(path.read_text())


def test_an_evo_run_records_the_settings_its_samples_were_produced_with(tmp_path, tokenizer_dir, mirror):
    from evo_eval.tiny import build_tiny_family

    card, checkpoint = build_tiny_family("evo", tmp_path / "models", tokenizer_dir)
    record = _gsm8k(tmp_path / "results", mirror, "--model", str(card), "--checkpoint", str(checkpoint), gen_len=32)
    config = record["decoding"]["sampler_config"]
    # The card says 256 tokens at temperature 0.7; --gen-kwargs and the task's do_sample: false win.
    assert config["max_new_tokens"] == 32 and config["temperature"] == 0.0 and config["k_max"] == 4
    (request,) = [r for r in record["requests"]["per_request"] if r["request_type"] == "generate_until"]
    assert request["settings"] == {"max_new_tokens": 32, "temperature": 0.0} and request["new_tokens"] <= 32


def test_an_hf_run_records_generation_settings_tokens_and_time(tmp_path, tiny_llama_dir, mirror):
    record = _gsm8k(tmp_path, mirror, "--model", "llama3-8b", "--checkpoint", str(tiny_llama_dir), gen_len=8)
    assert record["decoding"]["sampler"] == "hf-generate"
    config = record["decoding"]["sampler_config"]
    assert config["max_gen_toks"] == 8 and config["temperature"] == 0.0 and config["do_sample"] is False
    (request,) = record["requests"]["per_request"]
    assert request["prompt_tokens"] > 100 and 0 <= request["new_tokens"] <= 8 and request["wall_s"] > 0
    assert request["settings"]["max_gen_toks"] == 8
