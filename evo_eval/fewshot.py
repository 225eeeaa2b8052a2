"""Few-shot examples drawn per document, so a prompt does not depend on how many processes run.

lm-eval seeds one random stream per task (``set_fewshot_seed``) and draws each document's shots
from it in the order the process builds its documents. Under data parallelism each rank builds
only its own documents (doc 0, 2, 4, ... on rank 0), so with two processes document 2 gets the
shots document 1 would have had with one: the same run renders other prompts on another number
of processes (GSM8K, ARC-Challenge, WinoGrande draw at random; MMLU and BBH take the first N).

Here the task's sampler is reseeded before each document's prompt is rendered, from the few-shot
seed and the document's id (lm-eval's global index, the same on every rank), so a document gets the
same shots whichever process renders it and whatever was rendered before it. The draw itself is
lm-eval's own (``ContextSampler.sample``, including dropping the document from its own shots); only
the generator it draws from changes. ``speed_prompts`` draws GSM8K's shots the same way.
"""

from __future__ import annotations

import hashlib
import random
from contextlib import contextmanager
from typing import Any, Iterator

_active = 0


def document_seed(seed: int, doc_id: Any) -> int:
    """The few-shot generator's seed for one document: a function of the run's seed and the doc id."""
    return int(hashlib.sha256(f"{seed}:{doc_id}".encode()).hexdigest()[:16], 16)


def document_rng(seed: int, doc_id: Any) -> random.Random:
    return random.Random(document_seed(seed, doc_id))


@contextmanager
def per_document_shots(seed: int) -> Iterator[None]:
    """While active, every lm-eval ConfigurableTask draws each document's shots from its own generator."""
    global _active
    from lm_eval.api.task import ConfigurableTask

    if _active:  # nested (a run inside a run's hook): the outer installation already holds
        _active += 1
        try:
            yield
        finally:
            _active -= 1
        return

    original_iterator = ConfigurableTask.doc_iterator
    original_context = ConfigurableTask.fewshot_context
    own = {name: name in vars(ConfigurableTask) for name in ("doc_iterator", "fewshot_context")}

    def doc_iterator(self, *args: Any, **kwargs: Any):
        pairs = list(original_iterator(self, *args, **kwargs))
        # build_all_requests keeps these documents alive while it renders them, so id() is stable;
        # each call replaces the map, so ids of freed documents are never looked up.
        self._evo_doc_ids = {id(doc): doc_id for doc_id, doc in pairs}
        return iter(pairs)

    def fewshot_context(self, doc: Any, *args: Any, **kwargs: Any):
        doc_id = getattr(self, "_evo_doc_ids", {}).get(id(doc))
        sampler = getattr(self, "sampler", None)
        if sampler is not None and doc_id is not None:
            sampler.rnd = document_rng(seed, doc_id)
        return original_context(self, doc, *args, **kwargs)

    ConfigurableTask.doc_iterator = doc_iterator
    ConfigurableTask.fewshot_context = fewshot_context
    _active = 1
    try:
        yield
    finally:
        _active = 0
        for name, original in (("doc_iterator", original_iterator), ("fewshot_context", original_context)):
            if own[name]:
                setattr(ConfigurableTask, name, original)
            else:  # inherited from Task: remove ours, so lookup finds the base class's again
                delattr(ConfigurableTask, name)
