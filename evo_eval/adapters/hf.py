"""lm-eval's own HF backend, with the rank fixed for data parallelism (see distributed.py) and a record
per request.

Autoregressive cards (family "hf") run through lm-eval's ``HFLM`` unchanged — same batching, same
generation — so the AR columns are what any lm-eval user would measure. Two additions: under
``accelerate launch`` the rank is accelerate's global process index, on CPU as well as GPU; and each
answered request leaves a record (its generation settings, token counts, time) like our adapters'.
"""

from __future__ import annotations

import time
from typing import Any

from lm_eval.api.model import CacheHook
from lm_eval.models.huggingface import HFLM
from lm_eval.models.utils import normalize_gen_kwargs

from .distributed import DistributedMixin


class RankedHFLM(DistributedMixin, HFLM):
    def __init__(self, *args, **kwargs):
        # The process group must exist before HFLM builds its Accelerator, which would otherwise
        # initialise accelerate's shared state as a single process on CPU machines.
        self.setup_distributed()
        super().__init__(*args, **kwargs)
        self.setup_distributed()  # HFLM resets rank/world size in its __init__
        self.records: list[dict[str, Any]] = []
        self._generated: list[int] = []  # per row of the last batch: ids generated before EOS / padding

    def _model_generate(self, context, max_length: int, stop: list[str], **generation_kwargs):
        out = super()._model_generate(context, max_length, stop, **generation_kwargs)
        ends = {self.tokenizer.eos_token_id, self.tokenizer.pad_token_id} - {None}
        for row in out[:, context.shape[1]:].tolist():
            self._generated.append(next((i for i, tok in enumerate(row) if tok in ends), len(row)))
        return out

    def set_cache_hook(self, cache_hook) -> None:
        # HFLM hands every answer to the cache hook as it is computed: the one place to see each request.
        if cache_hook is not None and not isinstance(cache_hook, _RecordingHook):
            cache_hook = _RecordingHook(cache_hook, self)
        super().set_cache_hook(cache_hook)

    def decoding_settings(self) -> dict[str, Any]:
        """What is in force before a request's own kwargs (settings.in_force folds those in)."""
        return {"sampler": "hf-generate", "sampler_config": {"max_gen_toks": self.max_gen_toks},
                "likelihood": "ar_exact"}


class _RecordingHook(CacheHook):
    """Passes each answer on to the wrapped hook after appending its record to ``lm.records``.

    HFLM answers a batch at once, so ``wall_s`` is the time since the previous answer: a batch's time
    falls on its first answer and the sum over requests is the time spent (with batch size 1, each
    request's own).
    """

    def __init__(self, inner: CacheHook, lm: RankedHFLM):
        super().__init__(None)
        self.inner, self.lm = inner, lm
        self.last = time.perf_counter()

    def add_partial(self, attr: str, req, res) -> None:
        now = time.perf_counter()
        record: dict[str, Any] = {"request_type": attr, "task": None, "doc_id": None, "nfe": 0, "new_tokens": 0,
                                  "prompt_tokens": 0, "wall_s": now - self.last, "method": "hf-generate",
                                  "extra": {"wall_s": "time since the previous answer"}, "settings": {}}
        if attr == "generate_until":
            context, gen_kwargs = req
            settings = dict(normalize_gen_kwargs(dict(gen_kwargs), self.lm.max_gen_toks))
            generated = self.lm._generated.pop(0) if self.lm._generated else 0
            record.update(prompt_tokens=len(self.lm.tok_encode(context)), settings=settings, new_tokens=generated)
            record["extra"]["new_tokens"] = "ids generated up to end-of-sequence (before the stop-string cut)"
        elif attr == "loglikelihood" and isinstance(req, tuple) and len(req) == 2:
            record.update(method="ar_exact", prompt_tokens=len(self.lm.tok_encode(req[0])))
        else:
            record["method"] = "ar_exact"
        self.lm.records.append(record)
        self.last = time.perf_counter()
        self.inner.add_partial(attr, req, res)
