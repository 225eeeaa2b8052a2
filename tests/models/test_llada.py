"""LLaDA's network and loader: the published layout round-trips without remote code, the math is LLaDA's."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F

from evo_eval.cards import get_card
from evo_eval.errors import CheckpointError
from evo_eval.models.llada import (TINY_SHAPE, LLaDAModelLM, load_llada, parameter_count,
                                   random_model)
from evo_eval.tiny import tiny_card

PUBLISHED_BLOCK_WEIGHTS = ("attn_norm", "q_proj", "k_proj", "v_proj", "attn_out", "ff_norm", "ff_proj", "up_proj",
                           "ff_out")


def test_checkpoint_has_the_published_layout(tiny_llada_dir):
    from safetensors import safe_open

    config = json.loads((tiny_llada_dir / "config.json").read_text())
    assert config["model_type"] == "llada" and config["architectures"] == ["LLaDAModelLM"]
    assert config["auto_map"]["AutoModel"] == "modeling_llada.LLaDAModelLM"
    assert config["block_type"] == "llama" and config["activation_type"] == "silu" and config["rope"] is True
    assert config["weight_tying"] is False and config["mask_token_id"] == 3  # the tiny tokenizer's <|mask|>
    with safe_open(str(tiny_llada_dir / "model.safetensors"), "pt") as f:
        names = set(f.keys())
    expected = {f"model.transformer.blocks.{i}.{w}.weight" for i in range(2) for w in PUBLISHED_BLOCK_WEIGHTS}
    expected |= {"model.transformer.wte.weight", "model.transformer.ln_f.weight", "model.transformer.ff_out.weight"}
    assert names == expected


def test_auto_classes_load_it_without_remote_code(tiny_llada_dir):
    from transformers import AutoConfig, AutoModel

    assert type(AutoConfig.from_pretrained(tiny_llada_dir)).__name__ == "LLaDAConfig"
    model = AutoModel.from_pretrained(tiny_llada_dir)
    assert isinstance(model, LLaDAModelLM)
    ours = load_llada(tiny_llada_dir, card=tiny_card("llada"))
    ids = torch.randint(0, 500, (2, 9))
    assert torch.equal(model(ids).logits, ours(ids).logits)


def _reference_logits(state: dict, ids: torch.Tensor, heads: int, theta: float, eps: float) -> torch.Tensor:
    """LLaDA's forward written out from the paper's "llama" block, independently of the module."""
    def rms(x, w):
        return w * (x / torch.sqrt(x.pow(2).mean(-1, keepdim=True) + eps))

    x = state["model.transformer.wte.weight"][ids[0]]
    n, d = x.shape
    hd = d // heads
    pair = torch.arange(hd // 2, dtype=torch.float64)
    angle = torch.arange(n, dtype=torch.float64)[:, None] * theta ** (-2 * pair / hd)
    cos, sin = torch.cos(angle).float(), torch.sin(angle).float()

    def rope(t):  # t: (heads, n, hd); the first half of each head pairs with the second half
        a, b = t[..., : hd // 2], t[..., hd // 2:]
        return torch.cat([a * cos - b * sin, b * cos + a * sin], dim=-1)

    for i in range(sum(1 for k in state if k.endswith("attn_norm.weight"))):
        w = {name: state[f"model.transformer.blocks.{i}.{name}.weight"] for name in PUBLISHED_BLOCK_WEIGHTS}
        h = rms(x, w["attn_norm"])
        q, k, v = ((h @ w[name].T).view(n, heads, hd).transpose(0, 1) for name in ("q_proj", "k_proj", "v_proj"))
        scores = rope(q) @ rope(k).transpose(1, 2) / math.sqrt(hd)  # no causal mask: bidirectional
        x = x + (scores.softmax(-1) @ v).transpose(0, 1).reshape(n, d) @ w["attn_out"].T
        h = rms(x, w["ff_norm"])
        x = x + (F.silu(h @ w["ff_proj"].T) * (h @ w["up_proj"].T)) @ w["ff_out"].T
    return rms(x, state["model.transformer.ln_f.weight"]) @ state["model.transformer.ff_out.weight"].T


def test_forward_is_llada_math(tiny_llada_dir):
    from safetensors.torch import load_file

    model = load_llada(tiny_llada_dir)
    ids = torch.randint(0, 500, (1, 13))
    expected = _reference_logits(load_file(str(tiny_llada_dir / "model.safetensors")), ids, heads=4, theta=500000.0,
                                 eps=1e-5)
    torch.testing.assert_close(model(ids).logits[0], expected, rtol=1e-4, atol=1e-4)


def test_attention_is_bidirectional_and_respects_padding():
    model = random_model(TINY_SHAPE, dtype=torch.float32, device="cpu", seed=3)
    ids = torch.randint(0, 500, (1, 10))
    changed = ids.clone()
    changed[0, -1] = (ids[0, -1] + 1) % 500
    assert not torch.allclose(model(ids).logits[0, 0], model(changed).logits[0, 0])  # position 0 sees the end
    padded = torch.cat([ids, torch.full((1, 4), 7)], dim=1)
    keep = torch.cat([torch.ones(1, 10), torch.zeros(1, 4)], dim=1)
    torch.testing.assert_close(model(padded, attention_mask=keep).logits[:, :10], model(ids).logits)


def test_rows_and_cached_windows_equal_the_full_pass():
    model = random_model(TINY_SHAPE, dtype=torch.float32, device="cpu", seed=4)
    ids = torch.randint(0, 500, (2, 20))
    full = model.denoise(ids)
    torch.testing.assert_close(model.denoise(ids, slice(5, 9)), full[:, 5:9])
    torch.testing.assert_close(model.denoise(ids, torch.tensor([0, 19])), full[:, [0, 19]])
    cache = model.new_cache(20, batch=2)
    torch.testing.assert_close(model.denoise(ids, slice(0, 20), cache=cache, start=0), full)
    # Dual-cache window (a block) and prefix-cache window (block to the end) over unchanged tokens.
    torch.testing.assert_close(model.denoise(ids[:, 8:12], cache=cache, start=8), full[:, 8:12])
    torch.testing.assert_close(model.denoise(ids[:, 8:], slice(0, 4), cache=cache, start=8), full[:, 8:12])


def test_random_model_builds_the_card_shape_on_the_device_asked_for():
    shape = dict(get_card("llada-8b").shape)
    assert parameter_count(shape) == 8_015_581_184  # 8.02B as published
    meta = random_model(shape, dtype=torch.bfloat16, device="meta")
    assert next(meta.parameters()).device.type == "meta" and next(meta.parameters()).dtype == torch.bfloat16
    tiny = random_model(TINY_SHAPE, dtype=torch.bfloat16, device="cpu", seed=1)
    assert {p.dtype for p in tiny.parameters()} == {torch.bfloat16}
    again = random_model(TINY_SHAPE, dtype=torch.bfloat16, device="cpu", seed=1)
    assert all(torch.equal(a, b) for a, b in zip(tiny.parameters(), again.parameters()))
    assert float(tiny.model.transformer.ln_f.weight.float().mean()) == 1.0


def test_wrong_shape_missing_path_and_foreign_checkpoint_are_one_line_errors(tiny_llada_dir, tiny_llama_dir, tmp_path):
    with pytest.raises(CheckpointError) as err:
        load_llada(tiny_llada_dir, card=get_card("llada-8b"))
    assert "n_layers=2 but card llada-8b has n_layers=32" in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(CheckpointError, match="does not exist"):
        load_llada(tmp_path / "nowhere")
    with pytest.raises(CheckpointError, match="is a 'llama' checkpoint, not LLaDA"):
        load_llada(tiny_llama_dir)
    odd = tmp_path / "odd"
    odd.mkdir()
    config = json.loads((tiny_llada_dir / "config.json").read_text())
    (odd / "config.json").write_text(json.dumps(dict(config, block_type="sequential")))
    with pytest.raises(CheckpointError, match="option block_type=sequential"):
        load_llada(odd)
    (odd / "config.json").write_text(json.dumps(dict(config, n_layers=3)))
    (odd / "model.safetensors").write_bytes((tiny_llada_dir / "model.safetensors").read_bytes())
    with pytest.raises(CheckpointError, match="does not fit its config: .*missing keys"):
        load_llada(odd)
