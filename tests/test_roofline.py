"""Device ceilings by name, the bytes and FLOPs a forward costs, and the floor of a timing."""

from __future__ import annotations

import pytest
import torch

from evo_eval.models.llama import TINY_SHAPE, random_model
from evo_eval.roofline import Roofline, datasheet_bandwidth, model_cost


@pytest.mark.parametrize("name,tbs", [("NVIDIA H100 80GB HBM3", 3.35), ("NVIDIA H100 PCIe", 2.0), ("NVIDIA H200", 4.8),
                                      ("NVIDIA A100-SXM4-80GB", 2.0), ("NVIDIA A100-SXM4-40GB", 1.555),
                                      ("NVIDIA L4", None), (None, None)])
def test_datasheet_bandwidth(name, tbs):
    assert datasheet_bandwidth(name) == (tbs * 1e12 if tbs else None)


def test_model_cost_counts_weights_read_per_forward():
    untied = model_cost(random_model(TINY_SHAPE, dtype=torch.bfloat16, device="cpu"))
    d, v = TINY_SHAPE["d_model"], TINY_SHAPE["vocab_size"]
    assert untied.params - untied.dense_params == v * d  # the embedding table is gathered, not read
    assert untied.weight_bytes == 2 * untied.dense_params
    tied_model = random_model({**TINY_SHAPE, "tie_embeddings": True}, dtype=torch.bfloat16, device="cpu")
    tied = model_cost(tied_model, tied=True)
    assert tied.params == tied.dense_params == untied.params - v * d  # one table, read by the head


def test_floor_is_the_larger_of_memory_and_compute():
    memory_bound = Roofline(bytes_moved=3.35e12, dense_flops=1e12, wall_s=2.0, tokens=100,
                            datasheet_bandwidth=3.35e12, measured_copy_bandwidth=3.0e12,
                            measured_matmul_rate=800e12, kv_counted=True).as_dict()
    assert memory_bound["bound"] == "memory" and memory_bound["floor_s"] == pytest.approx(1.0)
    assert memory_bound["roofline_fraction"] == pytest.approx(0.5)
    assert memory_bound["bandwidth_fraction"] == pytest.approx(0.5)
    assert memory_bound["roofline_tokens_per_s"] == pytest.approx(100.0)
    compute_bound = Roofline(1e9, 1600e12, 4.0, 10, None, 1e9, 800e12, False).as_dict()
    assert compute_bound["bound"] == "compute" and compute_bound["roofline_fraction"] == pytest.approx(0.5)
    assert compute_bound["bandwidth_fraction"] is None and compute_bound["matmul_fraction"] == pytest.approx(0.5)
