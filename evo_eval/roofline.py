"""What the hardware can do, and what a decode must move and compute: the two floors of a timing.

* Datasheet HBM bandwidth by GPU name (NVIDIA datasheets: H100 SXM 3.35 TB/s, H100 PCIe 2.0,
  H100 NVL 3.9, H200 4.8, A100 80GB 2.0, A100 40GB 1.555); unknown GPUs and CPUs get none.
* Measured ceilings, once per process and device: a large matrix product in the model's dtype
  (FLOP/s) and a large device-to-device copy (bytes read + written per second).
* Work of a request: bytes = weights read once per forward (embedding tables are gathered, not
  read, unless tied to the output head) + the KV cache the sampler says it read; dense FLOPs =
  2 x non-embedding parameters x positions computed (attention scores not counted, so the compute
  floor is a lower bound).

A request's floor is ``max(bytes / bandwidth, FLOPs / matmul rate)``, a lower bound on the sum of
the per-forward floors; ``roofline_fraction`` = floor / measured time.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from .errors import UnknownNameError

if TYPE_CHECKING:
    from .cards import ModelCard

_DATASHEET_TBS = (
    # (substrings that must all appear in the name, TB/s); first match wins, most specific first.
    (("H200",), 4.8),
    (("H100", "NVL"), 3.9),
    (("H100", "PCIe"), 2.0),
    (("H100",), 3.35),
    (("A100", "80GB"), 2.0),
    (("A100",), 1.555),
)


def datasheet_bandwidth(gpu_name: str | None) -> float | None:
    """Peak HBM bandwidth in bytes/s from the GPU's name, or None when unknown."""
    if not gpu_name:
        return None
    for needles, tbs in _DATASHEET_TBS:
        if all(n.lower() in gpu_name.lower() for n in needles):
            return tbs * 1e12
    return None


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    import platform

    return f"CPU ({platform.processor() or platform.machine()})"


def _elapsed(fn, device: torch.device, repeats: int) -> float:
    """Median seconds of ``fn`` after one warm-up, synchronised at the boundaries."""
    fn()
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]


@lru_cache(maxsize=None)
def matmul_rate(device: torch.device, dtype: torch.dtype) -> float:
    """Measured FLOP/s of a large square matrix product (random data, never zeros)."""
    n = 8192 if device.type == "cuda" else 512
    gen = torch.Generator(device=device).manual_seed(0)
    a = torch.randn(n, n, device=device, dtype=dtype, generator=gen)
    b = torch.randn(n, n, device=device, dtype=dtype, generator=gen)
    seconds = _elapsed(lambda: torch.mm(a, b), device, 10 if device.type == "cuda" else 3)
    return 2 * n**3 / seconds


@lru_cache(maxsize=None)
def copy_bandwidth(device: torch.device) -> float:
    """Measured bytes/s of a large device-to-device copy, counting bytes read plus written."""
    nbytes = 2**30 if device.type == "cuda" else 2**27
    src = torch.empty(nbytes, dtype=torch.uint8, device=device).random_(0, 255)
    dst = torch.empty_like(src)
    seconds = _elapsed(lambda: dst.copy_(src), device, 10 if device.type == "cuda" else 3)
    return 2 * nbytes / seconds


@dataclass(frozen=True)
class ModelCost:
    params: int  # all parameters
    dense_params: int  # parameters multiplied per position (embedding gathers excluded)
    weight_bytes: int  # bytes read from memory per forward

    def as_dict(self) -> dict:
        return asdict(self)


def model_cost(model: nn.Module, tied: bool = False) -> ModelCost:
    """Parameter counts and bytes per forward; ``tied`` says the embedding table is the output head."""
    embeddings = {id(m.weight) for m in model.modules() if isinstance(m, nn.Embedding)}
    heads = {id(m.weight) for m in model.modules() if isinstance(m, nn.Linear)}
    params = dense = weight_bytes = 0
    for param in model.parameters():  # shared parameters are yielded once
        params += param.numel()
        gathered = id(param) in embeddings and not (tied or id(param) in heads)
        if not gathered:
            dense += param.numel()
            weight_bytes += param.numel() * param.element_size()
    return ModelCost(params, dense, weight_bytes)


@dataclass
class Roofline:
    """One model's timings against the device's floors (None where a ceiling is unknown)."""

    bytes_moved: float
    dense_flops: float
    wall_s: float
    tokens: int
    datasheet_bandwidth: float | None
    measured_copy_bandwidth: float | None
    measured_matmul_rate: float | None
    kv_counted: bool

    @property
    def achieved_bandwidth(self) -> float:
        return self.bytes_moved / self.wall_s

    @property
    def achieved_flops(self) -> float:
        return self.dense_flops / self.wall_s

    @property
    def reference_bandwidth(self) -> float | None:
        return self.datasheet_bandwidth or self.measured_copy_bandwidth

    def floor_s(self) -> tuple[float | None, str | None]:
        if self.reference_bandwidth is None or not self.measured_matmul_rate:
            return None, None
        memory = self.bytes_moved / self.reference_bandwidth
        compute = self.dense_flops / self.measured_matmul_rate
        return (memory, "memory") if memory >= compute else (compute, "compute")

    def as_dict(self) -> dict:
        floor, bound = self.floor_s()
        ratio = lambda a, b: a / b if a is not None and b else None  # noqa: E731
        return {
            "bytes_moved": self.bytes_moved,
            "kv_counted": self.kv_counted,
            "dense_flops": self.dense_flops,
            "achieved_bandwidth_tbs": self.achieved_bandwidth / 1e12,
            "datasheet_bandwidth_tbs": ratio(self.datasheet_bandwidth, 1e12),
            "bandwidth_fraction": ratio(self.achieved_bandwidth, self.datasheet_bandwidth),
            "measured_copy_bandwidth_tbs": ratio(self.measured_copy_bandwidth, 1e12),
            "achieved_tflops": self.achieved_flops / 1e12,
            "measured_matmul_tflops": ratio(self.measured_matmul_rate, 1e12),
            "matmul_fraction": ratio(self.achieved_flops, self.measured_matmul_rate),
            "bound": bound,
            "floor_s": floor,
            "roofline_tokens_per_s": ratio(self.tokens, floor),
            "roofline_fraction": ratio(floor, self.wall_s),
        }


# ---- rates for estimates (evo-eval plan) ---------------------------------------------------------------


# Dense bf16 tensor-core peaks (NVIDIA datasheets, without sparsity), TFLOP/s; bandwidth from roofline.
_DATASHEET_TFLOPS = (
    (("H200",), 989.0),
    (("H100", "NVL"), 835.0),
    (("H100", "PCIe"), 756.0),
    (("H100",), 989.0),
    (("A100",), 312.0),
)

@dataclass
class Rates:
    label: str
    bandwidth: float  # bytes/s a forward reads its weights at
    flop_rate: float  # FLOP/s a forward computes at

    def as_dict(self) -> dict[str, Any]:
        return {"label": self.label, "bandwidth_tbs": self.bandwidth / 1e12, "tflops": self.flop_rate / 1e12}


def datasheet_rates(name: str) -> Rates:
    bandwidth = datasheet_bandwidth(name)
    tflops = next((v for needles, v in _DATASHEET_TFLOPS if all(n.lower() in name.lower() for n in needles)), None)
    if bandwidth is None or tflops is None:
        raise UnknownNameError("datasheet device", name, ["H200", "H100", "H100 PCIe", "H100 NVL", "A100 80GB", "A100"])
    return Rates(f"{name} datasheet peaks (HBM {bandwidth / 1e12:.2f} TB/s, dense bf16 {tflops:.0f} TFLOP/s): "
                 "a floor, not a measurement", bandwidth, tflops * 1e12)


def measured_rates(card: "ModelCard", speed_dir: Path) -> Rates | None:
    """The device ceilings ``evo-eval speed`` measured, and this card's achieved fraction if it was timed."""
    from .store import load_speed_results

    if not Path(speed_dir).is_dir():
        return None
    records = [r for r in load_speed_results(speed_dir).values() if r.get("comparable_to_paper")]
    if not records:
        return None
    own = next((r for r in records if r["model"] == card.name), None)
    base = own or records[0]
    roof = base["roofline"]
    if not roof.get("measured_matmul_tflops"):
        return None
    bandwidth = (roof.get("datasheet_bandwidth_tbs") or roof.get("measured_copy_bandwidth_tbs")) * 1e12
    flop_rate = roof["measured_matmul_tflops"] * 1e12
    label = f"measured on {base['device']} ({Path(speed_dir)}): matmul {flop_rate / 1e12:.0f} TFLOP/s, HBM {bandwidth / 1e12:.2f} TB/s"
    if own is not None and roof.get("bound") == "memory" and roof.get("bandwidth_fraction"):
        bandwidth *= roof["bandwidth_fraction"]
        label += f", at {card.name}'s measured {roof['bandwidth_fraction']:.0%} of the bandwidth"
    elif own is not None and roof.get("bound") == "compute" and roof.get("matmul_fraction"):
        flop_rate *= roof["matmul_fraction"]
        label += f", at {card.name}'s measured {roof['matmul_fraction']:.0%} of the matmul rate"
    else:
        label += f"; {card.name} not timed there, so its forwards are at the ceilings (a floor)"
    return Rates(label, bandwidth, flop_rate)
