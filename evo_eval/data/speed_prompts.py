"""Benchmark prompts for the timing protocol, rendered without lm-eval or datasets.

GPU machines that time models often lack lm-eval and datasets, so the speed protocol renders the
suite's GSM8K prompts itself from the data mirror ``run`` reads (``evo-eval data import``:
``<mirror>/gsm8k/main/{train,test}.jsonl``). The rendering is lm-eval 0.4.13's ``gsm8k`` task, which the matched
protocol requires our prompts to equal (tests/data/test_speed_prompts.py checks it against lm-eval):
``"Question: {q}\\nAnswer: {a}"`` per shot, shots joined by a blank line, the target question last
with ``"Answer:"``; shots drawn from the train split by lm-eval's default sampler's
``sample(train, k)``, from each document's own generator seeded by 1234 and its id, as every
`evo-eval run` draws them (evo_eval/fewshot.py: prompts independent of the number of processes).

With synthetic weights there is no real tokenizer offline (the cards' tokenizers live on the hub),
so :class:`ProxyTokenizer` stands in: it splits text with the Llama-3 pre-tokenizer pattern and
hashes each piece into the card's vocabulary. A byte-pair encoder never merges across these
pieces, so the count is a lower bound on a BPE tokenizer's (close to it for the 64K-152K
vocabularies of the paper's models on English and digits); every result says it was used.
"""

from __future__ import annotations

import json
import zlib
from dataclasses import dataclass
from pathlib import Path

from ..errors import DataError

GSM8K_UNTIL = ("Question:", "</s>", "<|im_end|>")  # lm-eval gsm8k.yaml generation_kwargs.until
FEWSHOT_SEED = 1234  # lm-eval's default fewshot_random_seed

# The Llama-3 tokenizer's pre-tokenizer split (tokenizer.json, "Split" pre_tokenizer).
LLAMA3_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                r"|\s*[\r\n]+|\s+(?!\S)|\s+")


@dataclass(frozen=True)
class Prompt:
    doc_id: int
    text: str  # plain rendering (base models, and every model when no chat template applies)
    messages: tuple[dict[str, str], ...]  # the same shots as chat turns, for post-trained models


def find_gsm8k(data_dir: Path | None = None) -> Path:
    """GSM8K's folder in the data mirror (``--data-dir``, as for ``run``; default $EVO_EVAL_DATA, else
    ~/.cache/evo-eval/data): ``<mirror>/gsm8k/main/{train,test}.jsonl`` in the hub dataset's columns."""
    from .mirror import default_mirror_dir

    root = Path(data_dir).expanduser() if data_dir is not None else default_mirror_dir()
    folder = root / "gsm8k" / "main"
    if (folder / "train.jsonl").is_file() and (folder / "test.jsonl").is_file():
        return folder
    raise DataError(f"GSM8K is not in the data mirror {root}",
                    "import it with `evo-eval data import SRC --dest DIR` (SRC: the publishers' files) and pass "
                    "--data-dir DIR")


def _read_jsonl(path: Path) -> list[dict]:
    rows = []
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                raise DataError(f"{path} line {number} is not JSON", "restore the file from the publisher") from None
            if not isinstance(row, dict) or not {"question", "answer"} <= set(row):
                raise DataError(f"{path} line {number} lacks question/answer", "restore the file from the publisher")
            rows.append(row)
    return rows


def gsm8k_prompts(count: int, shots: int, data_dir: Path | None = None, seed: int = FEWSHOT_SEED) -> list[Prompt]:
    """The first ``count`` GSM8K test documents rendered with ``shots`` train exemplars each."""
    folder = find_gsm8k(data_dir)
    train, test = _read_jsonl(folder / "train.jsonl"), _read_jsonl(folder / "test.jsonl")
    if count > len(test):
        raise DataError(f"{folder / 'test.jsonl'} has {len(test)} documents, {count} requested",
                        "ask for fewer prompts")
    from ..fewshot import document_rng

    prompts = []
    for doc_id, doc in enumerate(test[:count]):
        # lm-eval's draw from the train split, from each document's own generator (fewshot.py)
        exemplars = document_rng(seed, doc_id).sample(train, shots) if shots else []
        text = "".join(f"Question: {ex['question']}\nAnswer: {ex['answer']}\n\n" for ex in exemplars)
        text += f"Question: {doc['question']}\nAnswer:"
        messages: list[dict[str, str]] = []
        for ex in exemplars:
            messages += [{"role": "user", "content": f"Question: {ex['question']}\nAnswer:"},
                         {"role": "assistant", "content": ex["answer"]}]
        messages.append({"role": "user", "content": f"Question: {doc['question']}\nAnswer:"})
        prompts.append(Prompt(doc_id, text, tuple(messages)))
    return prompts


class ProxyTokenizer:
    """Prompt ids of realistic length for a vocabulary without its tokenizer (synthetic weights).

    Each Llama-3 pre-tokenizer piece becomes one id, ``crc32(piece) % limit``: deterministic across
    processes, and below ``limit`` so it never hits a card's special ids (mask, end of sequence).
    """

    label = "proxy (Llama-3 pre-tokenizer pieces hashed into the card's vocabulary; a lower bound on BPE length)"

    def __init__(self, limit: int, bos_token_id: int | None = None):
        if limit < 2:
            raise ValueError(f"proxy tokenizer needs a vocabulary of at least 2 ids, got {limit}")
        import regex  # a transformers dependency; only the proxy needs \p{L} classes

        self.limit = int(limit)
        self.bos_token_id = bos_token_id
        self._split = regex.compile(LLAMA3_SPLIT)

    def encode(self, text: str) -> list[int]:
        ids = [zlib.crc32(piece.encode("utf-8")) % self.limit for piece in self._split.findall(text)]
        return ([self.bos_token_id] if self.bos_token_id is not None else []) + ids


def proxy_limit(shape: dict, vocab_size: int) -> int:
    """Ids the proxy may use: below the vocabulary's top 16 and below any special id in the shape."""
    specials = [int(v) for k, v in shape.items() if k.endswith("_token_id") and isinstance(v, int)]
    return max(2, min([vocab_size - 16, *specials]))
