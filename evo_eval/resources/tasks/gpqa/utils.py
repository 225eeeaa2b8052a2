"""GPQA's choice order: the correct answer shuffled among the three distractors, the same way every run.

lm-eval's gpqa tasks shuffle with a module-level RNG (n_shot) or the global one (generative), so a
question's letters depend on how many questions were processed before it in the same process — two
models evaluated one after the other in one process see different letters. We seed the shuffle with
the question itself, so every model, rank and run sees the same order.
"""

from __future__ import annotations

import hashlib
import random

from lm_eval.tasks.gpqa.n_shot.utils import preprocess  # lm-eval's own text clean-up


def _shuffled(doc: dict) -> dict:
    choices = [preprocess(doc[key]) for key in
               ("Incorrect Answer 1", "Incorrect Answer 2", "Incorrect Answer 3", "Correct Answer")]
    seed = int.from_bytes(hashlib.sha256(doc["Question"].encode("utf-8")).digest()[:8], "big")
    random.Random(seed).shuffle(choices)
    correct = choices.index(preprocess(doc["Correct Answer"]))
    return {"choice1": choices[0], "choice2": choices[1], "choice3": choices[2], "choice4": choices[3],
            "choices": choices, "answer": f"({'ABCD'[correct]})"}


def process_docs(dataset):
    return dataset.map(_shuffled)
