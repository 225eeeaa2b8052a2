"""Data parallelism under ``accelerate launch``, one mechanism for every backend we run.

lm-eval shards documents by ``lm.rank`` / ``lm.world_size`` and gathers through ``all_gather`` /
``gather_object`` / ``barrier``. Its HF backend takes the rank from accelerate's *node-local* index
(two nodes would both be rank 0) and only shards when there are several GPUs, so CPU processes all
evaluate everything. This mixin takes the *global* process index and gathers through
``torch.distributed`` (gloo on CPU, NCCL on GPU), whatever the device.
"""

from __future__ import annotations

from typing import Any

import torch


def process_state():
    """accelerate's PartialState when launched with several processes, else None."""
    import os

    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return None
    try:
        from accelerate import PartialState
    except ImportError:
        return None
    # accelerate only forms a CPU process group (gloo) when asked for cpu=True; without it two CPU
    # processes each believe they are alone and both evaluate everything.
    state = PartialState(cpu=not torch.cuda.is_available())
    return state if state.num_processes > 1 else None


class DistributedMixin:
    """Rank, world size and collectives from accelerate's global process state."""

    _dist_state: Any = None

    def setup_distributed(self) -> bool:
        state = process_state()
        if state is None:
            return False
        self._dist_state = state
        self._rank, self._world_size = state.process_index, state.num_processes
        return True

    @property
    def rank(self) -> int:
        return getattr(self, "_rank", 0)

    @property
    def world_size(self) -> int:
        return getattr(self, "_world_size", 1)

    def all_gather(self, tensor: torch.Tensor) -> torch.Tensor:
        if self._dist_state is None:
            return tensor
        import torch.distributed as dist

        tensor = tensor.reshape(1) if tensor.dim() == 0 else tensor
        # gloo cannot gather CUDA tensors and NCCL cannot gather CPU ones: follow the backend.
        device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")
        local = tensor.to(device)
        out = [torch.zeros_like(local) for _ in range(self.world_size)]
        dist.all_gather(out, local)
        return torch.cat(out).to(tensor.device)

    def gather_object(self, obj: Any, dst: int = 0) -> list[Any] | None:
        if self._dist_state is None:
            return [obj]
        import torch.distributed as dist

        out = [None] * self.world_size if self.rank == dst else None
        dist.gather_object(obj, out, dst=dst)
        return out

    def barrier(self) -> None:
        if self._dist_state is not None:
            self._dist_state.wait_for_everyone()
