"""The shared DiT: its forward equals the authors' equations written out, its shapes and loader
reject what does not fit in one line, and the 7B card shape builds on the target device."""

from __future__ import annotations

import json
import math
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from evo_eval.cards import get_card
from evo_eval.errors import CheckpointError, UserError
from evo_eval.adapters import mdlm as dit_adapter  # the DiT families' tokenizer and [MASK] rules
from evo_eval.models import bd3lm, mdlm


def reference_logits(state: dict[str, torch.Tensor], n_heads: int, ids: torch.Tensor) -> torch.Tensor:
    """kuleshov-group/mdlm models/dit.py's DIT.forward, transcribed equation by equation in float64
    from the weight names alone (sigma = 0: the published models are not time-conditioned)."""
    w = {k: v.double() for k, v in state.items()}
    x = w["backbone.vocab_embed.embedding"][ids]
    b, length, d = x.shape
    hd = d // n_heads
    half = 128
    freqs = torch.exp(-math.log(10000) * torch.arange(half, dtype=torch.float64) / half)
    t_emb = torch.cat([torch.cos(torch.zeros(b, 1) * freqs), torch.sin(torch.zeros(b, 1) * freqs)], -1)
    mlp = lambda h, name: h @ w[f"{name}.weight"].T + w[f"{name}.bias"]  # noqa: E731
    c = F.silu(mlp(F.silu(mlp(t_emb, "backbone.sigma_map.mlp.0")), "backbone.sigma_map.mlp.2"))
    inv = 1.0 / (10000 ** (torch.arange(0, hd, 2, dtype=torch.float64) / hd))
    angles = torch.outer(torch.arange(length, dtype=torch.float64), inv)
    cos, sin = torch.cat([angles, angles], -1).cos(), torch.cat([angles, angles], -1).sin()
    rot = lambda u: u * cos + torch.cat([-u[..., hd // 2:], u[..., :hd // 2]], -1) * sin  # noqa: E731
    norm = lambda h, name: F.layer_norm(h, (d,)) * w[name]  # noqa: E731
    i = 0
    while f"backbone.blocks.{i}.attn_qkv.weight" in w:
        p = f"backbone.blocks.{i}."
        sh1, sc1, g1, sh2, sc2, g2 = mlp(c, p + "adaLN_modulation")[:, None].chunk(6, -1)
        h = norm(x, p + "norm1.weight") * (1 + sc1) + sh1
        qkv = (h @ w[p + "attn_qkv.weight"].T).view(b, length, 3, n_heads, hd)  # 'b s (three h d)'
        q, k, v = (qkv[:, :, j].transpose(1, 2) for j in range(3))
        att = torch.softmax(rot(q) @ rot(k).transpose(-1, -2) / math.sqrt(hd), -1) @ v
        x = x + g1 * (att.transpose(1, 2).reshape(b, length, d) @ w[p + "attn_out.weight"].T)
        h = norm(x, p + "norm2.weight") * (1 + sc2) + sh2
        x = x + g2 * mlp(F.gelu(mlp(h, p + "mlp.0"), approximate="tanh"), p + "mlp.2")
        i += 1
    shift, scale = mlp(c, "backbone.output_layer.adaLN_modulation")[:, None].chunk(2, -1)
    h = norm(x, "backbone.output_layer.norm_final.weight") * (1 + scale) + shift
    return mlp(h, "backbone.output_layer.linear")


def test_forward_equals_the_authors_equations():
    model = mdlm.random_model(mdlm.TINY_SHAPE, dtype=torch.float32, device="cpu", seed=4)
    ids = torch.randint(0, 512, (2, 19), generator=torch.Generator().manual_seed(0))
    expected = reference_logits(model.state_dict(), 4, ids)
    got = model(ids)
    assert got.dtype == torch.float32 and got.shape == (2, 19, 512)
    assert torch.allclose(got.double(), expected, atol=2e-4), (got.double() - expected).abs().max()


def test_bfloat16_keeps_a_float32_residual_close_to_the_reference():
    model = mdlm.random_model(mdlm.TINY_SHAPE, dtype=torch.bfloat16, device="cpu", seed=4)
    ids = torch.randint(0, 512, (1, 16), generator=torch.Generator().manual_seed(1))
    expected = reference_logits({k: v.float() for k, v in model.state_dict().items()}, 4, ids)
    got = model(ids)
    assert got.dtype == torch.float32
    assert (got.double() - expected).abs().max() < 0.1 * expected.abs().max()


def test_seven_billion_card_shape_builds_on_the_target_device_in_the_target_dtype():
    # The meta device stands in for the GPU: nothing is allocated, so a float32 CPU copy cannot happen.
    for family, name in ((mdlm, "mdlm-7b"), (bd3lm, "bd3lm-7b")):
        model = family.random_model(get_card(name).shape, dtype=torch.bfloat16, device="meta")
        params = list(model.parameters())
        assert {p.device.type for p in params} == {"meta"} and {p.dtype for p in params} == {torch.bfloat16}
        assert sum(p.numel() for p in params) == 7_070_280_448
        assert model.shape.as_dict()["d_model"] == 4096


@pytest.mark.parametrize("change,message", [
    ({"d_ff": 1000}, "d_ff 1000 is not 4 x d_model"),
    ({"n_heads": 5}, "does not split into 5 heads"),
    ({"rope_theta": 1.0}, "rope_theta are not MDLM shape fields"),
    ({"architecture": "BD3LM"}, "describes a 'BD3LM', not a MDLM"),
    ({"block_size": 4}, "a MDLM has no block_size"),
])
def test_card_shape_errors_are_one_line(change, message):
    with pytest.raises(UserError, match=message) as err:
        mdlm.random_model(dict(mdlm.TINY_SHAPE, **change), dtype=torch.float32, device="meta")
    assert "\n" not in str(err.value)


def test_block_shape_needs_a_block_size_that_divides_the_context():
    with pytest.raises(UserError, match="lacks block_size"):
        bd3lm.random_model({k: v for k, v in bd3lm.TINY_SHAPE.items() if k != "block_size"},
                           dtype=torch.float32, device="meta")
    with pytest.raises(UserError, match="block_size 5 does not divide max_seq_len 4096"):
        bd3lm.random_model(dict(bd3lm.TINY_SHAPE, block_size=5), dtype=torch.float32, device="meta")


@pytest.fixture(scope="module")
def tiny_mdlm(tiny_checkpoint):
    return tiny_checkpoint("mdlm", seed=1)


def _copy(src, dst):
    dst.mkdir()
    for f in src.iterdir():
        (dst / f.name).write_bytes(f.read_bytes())
    return dst


def test_loader_rejects_what_is_not_this_checkpoint(tiny_mdlm, tmp_path):
    cases = []
    with pytest.raises(CheckpointError, match="does not exist") as err:
        mdlm.load_pretrained(str(tmp_path / "nowhere"))
    cases.append(err)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(CheckpointError, match="has no config.json") as err:
        mdlm.load_pretrained(str(empty))
    cases.append(err)
    with pytest.raises(CheckpointError, match="holds a 'mdlm' checkpoint, not BD3-LM") as err:
        bd3lm.load_pretrained(str(tiny_mdlm))
    cases.append(err)

    resized = _copy(tiny_mdlm, tmp_path / "resized")  # config says 32 wide, weights are 64 wide
    config = json.loads((resized / "config.json").read_text())
    (resized / "config.json").write_text(json.dumps(dict(config, hidden_dim=32)))
    with pytest.raises(CheckpointError, match=r"has the wrong shape \(") as err:
        mdlm.load_pretrained(str(resized))
    cases.append(err)

    for edit, message in ((lambda sd: sd.pop("backbone.blocks.1.attn_out.weight"), "lacks 1 weight"),
                          (lambda sd: sd.update({"backbone.extra.weight": torch.ones(2)}), "has weight\\(s\\) this architecture lacks")):
        broken = _copy(tiny_mdlm, tmp_path / f"broken{len(cases)}")
        state = load_file(str(broken / "model.safetensors"))
        edit(state)
        save_file(state, str(broken / "model.safetensors"), metadata={"format": "pt"})
        with pytest.raises(CheckpointError, match=message) as err:
            mdlm.load_pretrained(str(broken))
        cases.append(err)
    assert all("\n" not in str(e.value) for e in cases)


def test_published_buffers_are_ignored_and_weights_load_exactly(tiny_mdlm, tmp_path):
    """The published modeling files store rotary frequencies (and BD3-LM its noise clip) as buffers."""
    folder = _copy(tiny_mdlm, tmp_path / "published")
    state = load_file(str(folder / "model.safetensors"))
    state["backbone.rotary_emb.inv_freq"] = torch.ones(8)
    save_file(state, str(folder / "model.safetensors"), metadata={"format": "pt"})
    model = mdlm.load_pretrained(str(folder))
    ids = torch.randint(0, 512, (1, 12), generator=torch.Generator().manual_seed(3))
    reference = mdlm.random_model(mdlm.TINY_SHAPE, dtype=torch.float32, device="cpu", seed=1)
    loaded, built = model.state_dict(), reference.state_dict()
    assert loaded.keys() == built.keys() and all(torch.equal(loaded[k], built[k]) for k in built)
    assert torch.allclose(model(ids), reference(ids), atol=1e-6)
    assert not any(p.requires_grad for p in model.parameters()) and not model.training


def test_tokenizer_comes_from_the_folder_or_the_named_source(tiny_mdlm, tokenizer_dir, tmp_path):
    tok = dit_adapter.load_tokenizer(str(tiny_mdlm), None, None, 512)
    assert tok.mask_token == "<|mask|>"
    assert dit_adapter.load_tokenizer("/nowhere/at/all", None, str(tokenizer_dir), 512).mask_token_id == tok.mask_token_id
    weights_only = tmp_path / "weights-only"
    weights_only.mkdir()
    (weights_only / "config.json").write_bytes((tiny_mdlm / "config.json").read_bytes())
    with pytest.raises(CheckpointError, match="cannot load a tokenizer from .*weights-only") as err:
        dit_adapter.load_tokenizer(str(weights_only), None, None, 512)
    assert "\n" not in str(err.value)
    with pytest.raises(CheckpointError, match="has .* ids but the checkpoint's vocabulary holds 100"):
        dit_adapter.load_tokenizer(str(tiny_mdlm), None, None, 100)


def test_mask_token_follows_config_then_tokenizer_then_the_last_id():
    config = SimpleNamespace(vocab_size=50258)
    gpt2_like = type("Tok", (), {"mask_token_id": None, "__len__": lambda self: 50257})()
    assert dit_adapter.resolve_mask_token_id(config, gpt2_like) == 50257  # diffusion.py: mask_index = vocab_size
    with_mask = type("Tok", (), {"mask_token_id": 7, "__len__": lambda self: 100})()
    assert dit_adapter.resolve_mask_token_id(config, with_mask) == 7
    assert dit_adapter.resolve_mask_token_id(SimpleNamespace(vocab_size=50258, mask_token_id=3), gpt2_like) == 3
    full = type("Tok", (), {"mask_token_id": None, "__len__": lambda self: 50258})()
    with pytest.raises(CheckpointError, match="has no mask token and fills the whole vocabulary"):
        dit_adapter.resolve_mask_token_id(config, full)
