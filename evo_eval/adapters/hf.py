"""lm-eval's own HF backend, with the rank fixed for data parallelism (see distributed.py).

Autoregressive cards (family "hf") run through lm-eval's ``HFLM`` unchanged — same batching, same
generation — so the AR columns are what any lm-eval user would measure. The only change: under
``accelerate launch`` the rank is accelerate's global process index, on CPU as well as GPU.
"""

from __future__ import annotations

from lm_eval.models.huggingface import HFLM

from .distributed import DistributedMixin


class RankedHFLM(DistributedMixin, HFLM):
    def __init__(self, *args, **kwargs):
        # The process group must exist before HFLM builds its Accelerator, which would otherwise
        # initialise accelerate's shared state as a single process on CPU machines.
        self.setup_distributed()
        super().__init__(*args, **kwargs)
        self.setup_distributed()  # HFLM resets rank/world size in its __init__
