"""The Appendix 7.1 objective's pieces: block layout, the flow term's closed form, the time terms."""

from __future__ import annotations

import pytest
import torch

from evo_eval.models.evo import TINY_SHAPE, random_model
from evo_eval.models.evo_schedule import ddim_step
from evo_eval.training import FinetuneConfig, ObjectiveWeights, evo_objective, freeze_backbone
from evo_eval.training.finetune import lr_at, pad_batch
from evo_eval.training.objective import _soft_histogram_entropy, block_layout, flow_step_weight

def test_block_layout_starts_blocks_at_the_offset():
    assert block_layout(10, 4, 0, "cpu").tolist() == [0, 0, 0, 0, 4, 4, 4, 4, 8, 8]
    assert block_layout(10, 4, 3, "cpu").tolist() == [0, 0, 0, 3, 3, 3, 3, 7, 7, 7]


def test_flow_term_equals_the_gap_between_the_model_step_and_the_true_step():
    gen = torch.Generator().manual_seed(0)
    z, z0, z0_hat = (torch.randn(6, 5, generator=gen) for _ in range(3))
    t = torch.tensor([0.05, 0.1, 0.3, 0.5, 0.8, 1.0])
    dt = torch.full_like(t, 0.05)
    direct = (ddim_step(z, t, dt, z0_hat) - ddim_step(z, t, dt, z0)).pow(2).sum(-1)
    closed = flow_step_weight(t, 20) * (z0_hat - z0).pow(2).sum(-1)
    assert torch.allclose(direct, closed, atol=1e-5)
    assert float(flow_step_weight(torch.tensor(0.01), 20)) == pytest.approx(1.0)


def test_histogram_entropy_rewards_spread_times():
    spread = torch.linspace(0, 1, 21)
    assert float(_soft_histogram_entropy(spread, 20)) > 0.95
    # One shared time still spreads a little over neighbouring bins (the kernel keeps it differentiable).
    assert float(_soft_histogram_entropy(torch.full((21,), 0.5), 20)) < 0.3


@pytest.fixture()
def model():
    return random_model(TINY_SHAPE, dtype=torch.float32, device="cpu", seed=1).requires_grad_(True)


def test_every_term_is_finite_and_the_time_head_learns_only_from_sketch_blocks(model):
    ids = torch.randint(3, 500, (2, 12), generator=torch.Generator().manual_seed(0))
    for fraction, expect_time in ((0.0, False), (1.0, True)):
        model.zero_grad()
        out = evo_objective(model, ids, block_length=4, sketch_fraction=fraction,
                            generator=torch.Generator().manual_seed(1))
        assert all(torch.isfinite(torch.tensor(v)) for v in out.parts.values())
        out.loss.backward()
        grad = model.time_head.fc2.weight.grad
        assert (grad is not None and bool(grad.abs().sum() > 0)) is expect_time
        assert (out.parts["time"] > 0) is expect_time
    assert out.parts["ar"] == pytest.approx(6.2, abs=0.4)  # near log(512) for random weights
    weights = ObjectiveWeights(ar=1, denoise=0, flow=0, time=0, entropy=0, label_smoothing=0.0)
    only_ar = evo_objective(model, ids, weights=weights, generator=torch.Generator().manual_seed(1))
    assert float(only_ar.loss.detach()) == pytest.approx(only_ar.parts["ar"])


def test_masked_tokens_do_not_count(model):
    ids = torch.randint(3, 500, (1, 8), generator=torch.Generator().manual_seed(0))
    mask = torch.tensor([[1, 1, 1, 1, 0, 0, 0, 0]])
    weights = ObjectiveWeights(ar=1, denoise=0, flow=0, time=0, entropy=0, label_smoothing=0.0)
    out = evo_objective(model, ids, loss_mask=mask, weights=weights, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        logits = model.ar_logits(ids)[0]
    expected = torch.nn.functional.cross_entropy(logits[:3], ids[0, 1:4])
    assert out.parts["ar"] == pytest.approx(float(expected), rel=1e-5)


def test_freeze_backbone_trains_only_the_time_modules(model):
    freeze_backbone(model)
    trainable = {name.split(".")[0] for name, p in model.named_parameters() if p.requires_grad}
    assert trainable == {"time_embed", "time_head"}


def test_learning_rate_warms_up_then_follows_the_cosine():
    config = FinetuneConfig(steps=110, lr=1.0, warmup=10)
    assert [lr_at(s, config) for s in (0, 4, 9)] == pytest.approx([0.1, 0.5, 1.0])
    assert lr_at(60, config) == pytest.approx(0.5)
    assert lr_at(109, config) == pytest.approx(0.0, abs=1e-3)
    ids, mask = pad_batch([[5, 6, 7], [8]], pad_id=2, device="cpu")
    assert ids.tolist() == [[5, 6, 7], [8, 2, 2]] and mask.tolist() == [[1, 1, 1], [1, 0, 0]]
