"""Tiny local models for the embedded default and the tests: real architectures, random weights.

Nothing here is downloaded: a byte-level BPE tokenizer is trained on a few lines, and a Llama- or
Qwen2-architecture model of a few hundred thousand parameters is initialised from a fixed seed and
written with ``save_pretrained``, so every loader in the harness reads it exactly as it reads a real
checkpoint folder.
"""

from __future__ import annotations

import json

from pathlib import Path

import torch

# A handful of lines in the benchmarks' registers (English prose, arithmetic, code, Chinese), so the
# byte-level merges are not all wasted on one script.
TRAINING_LINES = [
    "Question: Janet has 16 eggs and eats 3. How many are left? Answer: 16 - 3 = 13. The answer is 13.",
    "The quick brown fox jumps over the lazy dog. A man is sitting on a roof and removing shingles.",
    "def add(a, b):\n    return a + b\n\nassert add(2, 3) == 5",
    "for i in range(10):\n    if i % 2 == 0:\n        print(i)",
    "Which of the following is the best answer? A. red B. blue C. green D. yellow Answer: B",
    "Let x be a real number such that 2x + 3 = 7. Then x = 2, so the final answer is $\\boxed{2}$.",
    "在农业生产中，土地是最主要的基本生产资料。下列关于税法基本原则的表述中，不正确的是。答案：D",
    "Sarah was a much better surgeon than Maria so Maria always got the easier cases.",
    "How do I ready a guinea pig cage? Provide bedding, a water bottle and a food dish.",
    "Q: Is the following sentence plausible? A: Let's think step by step. So the answer is yes.",
]

SPECIAL_TOKENS = ["<s>", "</s>", "<pad>", "<|mask|>", "<|user|>", "<|assistant|>"]

CHAT_TEMPLATE = (
    "{% for m in messages %}{% if m['role'] == 'user' %}<|user|>{{ m['content'] }}\n"
    "{% elif m['role'] == 'assistant' %}<|assistant|>{{ m['content'] }}</s>\n"
    "{% else %}{{ m['content'] }}\n{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)


def build_tokenizer(out_dir: str | Path, vocab_size: int = 512, lines: list[str] | None = None):
    """Train a byte-level BPE on ``lines`` and save it as a transformers fast tokenizer."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False,
    )
    tok.train_from_iterator(lines or TRAINING_LINES, trainer=trainer)
    bos = tok.token_to_id("<s>")
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", bos)])
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>", mask_token="<|mask|>",
    )
    fast.chat_template = CHAT_TEMPLATE
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    fast.save_pretrained(out)
    return fast


def tiny_tokenizer(out_dir: str | Path, tokenizer_dir: str | Path | None = None):
    """The tokenizer saved in ``tokenizer_dir``, or, without one, a new one trained into ``out_dir``."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(tokenizer_dir)) if tokenizer_dir else build_tokenizer(out_dir)


def build_random_checkpoint(module, out_dir: str | Path, tokenizer_dir: str | Path | None = None,
                            seed: int = 0) -> Path:
    """``module.random_model`` (a family's ModelModule) at its TINY_SHAPE with the vocabulary sized to the
    tiny tokenizer and its BOS/EOS/pad ids in the config, written with the tokenizer by ``save_pretrained``."""
    out = Path(out_dir)
    tokenizer = tiny_tokenizer(out, tokenizer_dir)
    model = module.random_model(dict(module.TINY_SHAPE, vocab_size=len(tokenizer)), dtype=torch.float32,
                                device="cpu", seed=seed)
    model.config.bos_token_id = tokenizer.bos_token_id
    model.config.eos_token_id = tokenizer.eos_token_id
    model.config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def build_llada_checkpoint(module, out_dir: str | Path, tokenizer_dir: str | Path | None = None,
                           seed: int = 0) -> Path:
    """A random-weight LLaDA at TINY_SHAPE with the tiny tokenizer (its <|mask|> as mask), with the
    published config's auto_map so it looks like the real checkpoints."""
    out = Path(out_dir)
    tokenizer = tiny_tokenizer(out, tokenizer_dir)
    shape = dict(module.TINY_SHAPE, vocab_size=len(tokenizer), mask_token_id=tokenizer.mask_token_id,
                 eos_token_id=tokenizer.eos_token_id)
    model = module.random_model(shape, dtype=torch.float32, device="cpu", seed=seed)
    model.config.auto_map = dict(module.AUTO_MAP)
    model.config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


# The published MDLM / BD3-LM layout, for tiny checkpoints built locally.
DIT_AUTO_MAP = {
    "mdlm": {"AutoConfig": "configuration_mdlm.MDLMConfig", "AutoModelForMaskedLM": "modeling_mdlm.MDLM"},
    "bd3lm": {"AutoConfig": "configuration_bd3lm.BD3LMConfig", "AutoModelForMaskedLM": "modeling_bd3lm.BD3LM"},
}


def save_published_layout(model: torch.nn.Module, out_dir: str | Path, name: str | None = None) -> Path:
    """``save_pretrained``, then config.json in the hub repositories' form: their keys, their
    ``architectures``, ``torch_dtype``, ``return_dict: false`` and the ``auto_map`` to remote code
    that the loader must not need."""
    out = Path(out_dir)
    model.save_pretrained(out)
    path = out / "config.json"
    config = json.loads(path.read_text(encoding="utf-8"))
    config.pop("dtype", None)
    config.update(_name_or_path=name or str(out), architectures=[type(model).__name__],
                  auto_map=DIT_AUTO_MAP[config["model_type"]], return_dict=False, torch_dtype="float32",
                  transformers_version="4.49.0")
    path.write_text(json.dumps(config, indent=2, sort_keys=True), encoding="utf-8")
    return out


def build_dit_checkpoint(module, out_dir: str | Path, tokenizer_dir: str | Path | None = None,
                         seed: int = 0) -> Path:
    """A random-weight checkpoint of ``module`` (models.mdlm or models.bd3lm) at its TINY_SHAPE in the
    published layout (``save_published_layout``), with the tiny tokenizer."""
    from .errors import UserError

    out = Path(out_dir)
    tokenizer = tiny_tokenizer(out, tokenizer_dir)
    shape = dict(module.TINY_SHAPE)
    if len(tokenizer) > shape["vocab_size"]:
        raise UserError(f"the tokenizer has {len(tokenizer)} ids, more than the tiny vocabulary of {shape['vocab_size']}",
                        "build it with evo_eval.tiny.build_tokenizer's default vocabulary")
    model = module.random_model(shape, dtype=torch.float32, device="cpu", seed=seed)
    save_published_layout(model, out)
    tokenizer.save_pretrained(out)
    return out


def _qwen2_layout_model(module, out: Path, tokenizer_dir: str | Path | None, seed: int):
    """A Qwen2-layout stand-in (Dream-v0, Fast-dLLM v2) at TINY_SHAPE sized to the tiny tokenizer, whose
    <|mask|>, EOS, BOS and pad ids its config carries, with the published config's auto_map."""
    tokenizer = tiny_tokenizer(out, tokenizer_dir)
    shape = dict(module.TINY_SHAPE, vocab_size=len(tokenizer), mask_token_id=tokenizer.mask_token_id,
                 eos_token_id=tokenizer.eos_token_id, bos_token_id=tokenizer.bos_token_id,
                 pad_token_id=tokenizer.pad_token_id)
    model = module.random_model(shape, dtype=torch.float32, device="cpu", seed=seed)
    model.config.auto_map = dict(module.AUTO_MAP)
    return model, tokenizer


def build_dream_checkpoint(module, out_dir: str | Path, tokenizer_dir: str | Path | None = None,
                           seed: int = 0) -> Path:
    """A random-weight Dream-v0 at TINY_SHAPE with the tiny tokenizer (its <|mask|> as mask and its
    special ids in the config), with the published config's auto_map and architecture name."""
    out = Path(out_dir)
    model, tokenizer = _qwen2_layout_model(module, out, tokenizer_dir, seed)
    model.config.architectures = [module.ARCHITECTURE]
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def build_fast_dllm_v2_checkpoint(module, out_dir: str | Path, tokenizer_dir: str | Path | None = None,
                                  seed: int = 0) -> Path:
    """A random-weight Fast-dLLM v2 at TINY_SHAPE with the tiny tokenizer (its <|mask|> as mask, its EOS as
    the stop token), with the published config's model_type, architecture name and auto_map."""
    out = Path(out_dir)
    model, tokenizer = _qwen2_layout_model(module, out, tokenizer_dir, seed)
    model.save_pretrained(out)
    path = out / "config.json"  # save_pretrained names our class; the published file names the authors'
    config = json.loads(path.read_text(encoding="utf-8"))
    config["architectures"] = [module.ARCHITECTURE]
    path.write_text(json.dumps(config, indent=2, sort_keys=True), encoding="utf-8")
    tokenizer.save_pretrained(out)
    return out


TINY_SHAPES = {
    "llama": dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                  num_key_value_heads=2, max_position_embeddings=2048),
    "qwen2": dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                  num_key_value_heads=2, max_position_embeddings=2048),
}


def build_tiny_ar(out_dir: str | Path, arch: str = "llama", seed: int = 0, tokenizer_dir: str | Path | None = None):
    """A random-weight Llama or Qwen2 causal LM plus tokenizer, saved with ``save_pretrained``."""
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

    out = Path(out_dir)
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir) if tokenizer_dir else build_tokenizer(out)
    classes = {"llama": (LlamaConfig, LlamaForCausalLM), "qwen2": (Qwen2Config, Qwen2ForCausalLM)}
    if arch not in classes:
        raise ValueError(f"unknown tiny architecture '{arch}'; choose one of {', '.join(classes)}")
    config_cls, model_cls = classes[arch]
    # Embedding rows padded to a multiple of 64, as Qwen2.5 (152064 rows for ~151.6k tokens) and most
    # checkpoints do: the Qwen2 tokenizer class adds <|endoftext|> when loaded next to a qwen2 config.
    config = config_cls(
        vocab_size=(len(tokenizer) + 64) // 64 * 64, bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id, tie_word_embeddings=False, **TINY_SHAPES[arch],
    )
    torch.manual_seed(seed)
    model = model_cls(config)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def _tiny_family(family: str):
    from .families import FAMILIES

    record = FAMILIES.get(family)
    if record is None or record.tiny_build is None:
        builders = [f.name for f in FAMILIES.values() if f.tiny_build]
        raise ValueError(f"no tiny builder for family '{family}'; choose one of {', '.join(builders)}")
    return record


def tiny_card(family: str, name: str | None = None, stage: str = "base"):
    """The family's paper card (base or instruct) at its TINY_SHAPE and without a checkpoint: what a tiny
    checkpoint is checked against in the tests and the demo."""
    from dataclasses import replace

    from .cards import get_card
    from .families import model_module

    paper = get_card(_tiny_family(family).paper_cards[stage == "instruct"])
    return replace(paper, name=name or f"{family}-tiny", shape=dict(model_module(family).TINY_SHAPE),
                   checkpoint=None, revision=None, path=None)


def build_tiny_checkpoint(family: str, out_dir: str | Path, tokenizer_dir: str | Path | None = None,
                          seed: int = 0) -> Path:
    """A tiny random-weight checkpoint of a non-AR family, by the builder its registry record names."""
    from .families import load, model_module

    return load(_tiny_family(family).tiny_build)(model_module(family), out_dir, tokenizer_dir, seed=seed)


def build_tiny_family(family: str, out_dir: str | Path, tokenizer_dir: str | Path) -> tuple[Path, Path]:
    """A tiny checkpoint of a non-AR family and a card YAML for it: (card path, checkpoint folder).

    The card is the family's paper card with the architecture's TINY_SHAPE and the registry's cheap
    decoding (the algorithm is the card's, only its sizes shrink, so the demo and the end-to-end tests
    exercise every family's real code path in seconds), named ``<family>-tiny`` and columned
    "<paper column> (tiny)", run with ``--model CARD.yaml``.
    """
    from dataclasses import replace

    from .cards import write_card

    record = _tiny_family(family)
    checkpoint = Path(out_dir) / f"{family}-tiny"
    if not (checkpoint / "config.json").is_file():
        build_tiny_checkpoint(family, checkpoint, tokenizer_dir)
    paper = tiny_card(family)
    card = replace(
        paper, column=f"{paper.column} (tiny)",
        decoding={"default": {**paper.decoding_for(None), **record.tiny_decoding}},
        likelihood={**paper.likelihood, **record.tiny_likelihood},
        notes=f"Tiny random-weight stand-in for {record.paper_cards[0]} (demo and tests): not the paper's model.",
    )
    return write_card(card, out_dir), checkpoint
