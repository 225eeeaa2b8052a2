"""The adapter base every non-HF model shares: lm-eval's request API on top of our samplers and scorers.

A family adapter (evo, llada, mdlm, bd3lm, ard) only says how to load its network and tokenizer and
which sampler and scorer it uses; this base does the rest the same way for all of them:

* tokenisation and lm-eval's context/continuation split (inherited from ``TemplateLM``);
* ``generate_until``: ``until`` strings and EOS become the sampler's ``stop`` callable, the answer is
  cut at the first stop string (special-token stop strings included, ``answer_text``), ``max_gen_toks``
  caps the length; ``do_sample: false`` (lm-eval's default when a task names no temperature) decodes
  greedily in every family (``settings.for_request``), as lm-eval's HF backend does;
* ``loglikelihood`` / ``loglikelihood_rolling`` through the family's scorer, with lm-eval's own
  rolling windows;
* chat templates through the tokenizer, exactly as lm-eval's HF backend applies them;
* data parallelism under ``accelerate launch``: rank is the *global* process index (lm-eval's HF
  backend uses the node-local one, which collides across nodes), and gathers go through
  ``torch.distributed``;
* one seeded generator per request, derived from the seed and the request itself, so a result does
  not depend on request order, batch composition, rank or resumption;
* a stats record per request (NFE, tokens, wall time, estimator) that ``run`` stores in results.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import time
from abc import abstractmethod
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from typing import Any, ClassVar

import torch
from lm_eval import utils as lm_utils
from lm_eval.api.model import TemplateLM
from lm_eval.models.utils import handle_stop_sequences, normalize_gen_kwargs
from tqdm import tqdm

from ..cards import ModelCard, get_card
from ..decoding.base import Sampler, SamplerConfig, make_generator
from ..devices import resolve_device, resolve_dtype
from ..errors import CheckpointError, first_line
from ..families import card_sampler, family as family_record, sampler_class, scorer_class
from ..settings import changed, for_request, likelihood, merge
from ..scoring.base import Scorer
from .batching import Encoded, score_requests, truncate
from .distributed import DistributedMixin
from .request_batches import Generation, answer_in_batches, generation_batches, resolve_batch_size

log = logging.getLogger(__name__)

@dataclass
class RequestRecord:
    """What one request cost; stored per request in the results so tables can sum NFE and time."""

    request_type: str
    task: str | None
    doc_id: int | None
    nfe: int = 0
    new_tokens: int = 0
    prompt_tokens: int = 0
    wall_s: float = 0.0
    method: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)  # what this request changed (settings.in_force)


def request_seed(seed: int, *parts: Any) -> int:
    """A 63-bit seed from the run seed and the request's content (order-, batch- and rank-free)."""
    blob = json.dumps([seed, *parts], sort_keys=True, default=str).encode()
    return int.from_bytes(hashlib.sha256(blob).digest()[:8], "big") & ((1 << 63) - 1)


class EvalAdapter(DistributedMixin, TemplateLM):
    """lm-eval ``LM`` for models that are not run by lm-eval's HF backend."""

    family: ClassVar[str]  # its record in evo_eval.families names the sampler and the scorer
    sampler_cls: type[Sampler]
    scorer_cls: type[Scorer]

    def __init__(
        self,
        pretrained: str | None = None,
        card: str | ModelCard | None = None,
        revision: str | None = None,
        tokenizer: str | None = None,
        device: str | None = None,
        dtype: str | None = None,
        batch_size: int | str | None = 1,
        max_length: int | None = None,
        seed: int = 1234,
        max_gen_toks: int = 256,
        benchmark: str | None = None,
        share_forwards: bool = True,
        **overrides: Any,
    ) -> None:
        super().__init__()
        self.card = get_card(card) if isinstance(card, str) else card
        # The card's sampler (speed reads the same one: families.card_sampler), else the family's.
        self.sampler_cls = sampler_class(card_sampler(self.card) if self.card else family_record(self.family).sampler)
        self.scorer_cls = scorer_class(self.family)
        checkpoint = pretrained or (self.card.checkpoint if self.card else None)
        if not checkpoint:
            name = self.card.name if self.card else self.family
            raise CheckpointError(
                f"model '{name}' has no public checkpoint",
                "pass --checkpoint DIR (or pretrained=DIR in model_args) with a save_pretrained folder",
            )
        self.checkpoint = str(checkpoint)
        self.revision = revision if revision is not None else (self.card.revision if self.card else None)
        self._setup_distributed(device)
        self.dtype = resolve_dtype(dtype, self._device, self.card.dtype if self.card else None)
        self.seed = int(seed)
        # Requests per batched forward, each result equal to batch 1's (adapters/request_batches.py).
        self.batch_size = resolve_batch_size(batch_size)
        self._max_gen_toks = int(max_gen_toks)
        # One forward for one-token options after the same context (adapters/batching.py); False
        # answers every request alone (the same numbers, more forwards).
        self.share_forwards = str(share_forwards).lower() not in ("false", "0", "no")

        self.model, self.tokenizer = self.load(self.checkpoint, self.revision, tokenizer, self._device, self.dtype)
        self.model.eval()
        self._max_length = int(max_length) if max_length else self._default_max_length()

        self.sampler = self.sampler_cls()
        self.scorer = self.scorer_cls()
        self.benchmark = benchmark  # whose per-benchmark card settings apply (None: the card's default)
        self._overrides = dict(overrides)  # model_args: above the card's settings (evo_eval/settings.py)
        self._configure()
        self.records: list[RequestRecord] = []

    # ---- what a family provides -------------------------------------------------------------------

    @abstractmethod
    def load(self, checkpoint: str, revision: str | None, tokenizer: str | None, device: torch.device,
             dtype: torch.dtype) -> tuple[torch.nn.Module, Any]:
        """Load the network (on ``device`` in ``dtype``) and its tokenizer, raising CheckpointError
        with one clear line for a missing path or a checkpoint that does not fit the architecture."""

    def _default_max_length(self) -> int:
        config = getattr(self.model, "config", None)
        for name in ("max_position_embeddings", "max_seq_len", "model_length", "n_positions"):
            value = getattr(config, name, None)
            if value:
                return int(value)
        return 2048

    # ---- settings --------------------------------------------------------------------------------

    def _configure(self) -> None:
        """Sampler and scorer configs from the one merge (settings.merge); an unknown key is an error."""
        values = merge(self.card, self.benchmark, self._overrides)
        sampler_keys = {f.name for f in fields(self.sampler_cls.Config)}
        scorer_keys = {f.name for f in fields(self.scorer_cls.Config)}
        unknown = sorted(set(values) - sampler_keys - scorer_keys)
        if unknown:
            raise ValueError(
                f"{self.family} has no setting(s) {', '.join(unknown)}; sampler settings: "
                f"{', '.join(sorted(sampler_keys))}; likelihood settings: {', '.join(sorted(scorer_keys))}"
            )
        sampler_values = {k: v for k, v in values.items() if k in sampler_keys}
        scorer_values = likelihood(self.card, values, scorer_keys)
        sampler_values.setdefault("eos_token_id", self.eot_token_id)
        sampler_values.setdefault("seed", self.seed)
        scorer_values.setdefault("seed", self.seed)
        self.sampler_config = self.sampler_cls.Config.from_dict(sampler_values)
        self.scorer_config = self.scorer_cls.Config.from_dict(scorer_values)

    def with_settings(self, benchmark: str | None = None, **overrides: Any) -> "EvalAdapter":
        """This adapter for one benchmark and/or with more settings (an ablation variant's), sharing the
        loaded network and tokenizer, so variants and benchmarks cost one checkpoint load."""
        other = copy.copy(self)
        other._overrides = {**self._overrides, **overrides}
        other.benchmark = benchmark if benchmark is not None else self.benchmark
        other.records = []
        other._configure()
        return other

    def sampler_config_for(self, gen_kwargs: dict[str, Any]) -> SamplerConfig:
        """The sampler config for one request: the merged settings, then the request's (settings.for_request)."""
        values = asdict(self.sampler_config)
        return type(self.sampler_config).from_dict(for_request(values, gen_kwargs, self._max_gen_toks))

    def decoding_settings(self) -> dict[str, Any]:
        """Everything in force, for the results' provenance."""
        return {
            "sampler": self.sampler_cls.name,
            "sampler_config": asdict(self.sampler_config),
            "likelihood": self.scorer_cls.method,
            "likelihood_config": asdict(self.scorer_config),
        }

    # ---- lm-eval's tokenisation API ----------------------------------------------------------------

    @property
    def eot_token_id(self) -> int:
        return int(self.tokenizer.eos_token_id)

    @property
    def prefix_token_id(self) -> int:
        bos = getattr(self.tokenizer, "bos_token_id", None)
        return int(bos) if bos is not None else self.eot_token_id

    @property
    def max_length(self) -> int:
        return self._max_length

    @property
    def max_gen_toks(self) -> int:
        return self._max_gen_toks

    @property
    def device(self) -> torch.device:
        return self._device

    @property
    def tokenizer_name(self) -> str:
        return str(getattr(self.tokenizer, "name_or_path", self.checkpoint)).replace("/", "__")

    def tok_encode(self, string: str, add_special_tokens: bool | None = None, **kwargs) -> list[int]:
        return self.tokenizer.encode(string, add_special_tokens=bool(add_special_tokens))

    def tok_decode(self, tokens: list[int] | torch.Tensor, skip_special_tokens: bool = True) -> str:
        if isinstance(tokens, torch.Tensor):
            tokens = tokens.tolist()
        return self.tokenizer.decode(tokens, skip_special_tokens=skip_special_tokens)

    def apply_chat_template(self, chat_history: list[dict[str, str]], add_generation_prompt: bool = True) -> str:
        return self.tokenizer.apply_chat_template(
            chat_history, tokenize=False, add_generation_prompt=add_generation_prompt,
            continue_final_message=not add_generation_prompt,
        )

    # ---- data parallelism (DistributedMixin supplies rank, world_size and the collectives) ------------

    def _setup_distributed(self, device: str | None) -> None:
        self._rank, self._world_size = 0, 1
        self._device = resolve_device(device)
        if self.setup_distributed() and (device in (None, "auto") or "cuda" in str(device)):
            self._device = self._dist_state.device

    # ---- requests ----------------------------------------------------------------------------------

    def _loglikelihood_tokens(self, requests, disable_tqdm: bool = False, **kwargs) -> list[tuple[float, bool]]:
        items = [Encoded(list(ctx), list(cont), key, None) for key, ctx, cont in requests]
        return self._score_all(items, disable_tqdm)

    def _score_all(self, items: list[Encoded], disable_tqdm: bool) -> list[tuple[float, bool]]:
        if self.batch_size > 1:  # several requests per forward (adapters/request_batches.py)
            return answer_in_batches(self, items, group=self.share_forwards)
        return score_requests(self, items, group=self.share_forwards, disable_tqdm=disable_tqdm)

    def _ll_generator(self, context_ids: list[int], continuation_ids: list[int]) -> torch.Generator:
        """A log-likelihood request's own generator, seeded from the run seed and the request."""
        return make_generator(request_seed(self.seed, "ll", context_ids, continuation_ids), self.device)

    def _score_one(self, context_ids: list[int], continuation_ids: list[int], key: Any,
                   request: Any = None) -> tuple[float, bool]:
        context_ids = truncate(context_ids, len(continuation_ids), self.max_length)
        ctx = torch.tensor(context_ids, dtype=torch.long, device=self.device)
        cont = torch.tensor(continuation_ids, dtype=torch.long, device=self.device)
        generator = self._ll_generator(context_ids, continuation_ids)
        start = time.perf_counter()
        with torch.inference_mode():
            out = self.scorer.score(self.model, ctx, cont, self.scorer_config, generator=generator)
        return self._answer_ll(out, len(context_ids), time.perf_counter() - start, key, request)

    def _score_group(self, items: list[Encoded]) -> list[tuple[float, bool]] | None:
        """One forward for one-token continuations after one context (adapters/batching.py), or None
        when the scorer cannot share it. No generator: the exact one-token scores draw nothing."""
        context_ids = truncate(items[0].context_ids, 1, self.max_length)
        ctx = torch.tensor(context_ids, dtype=torch.long, device=self.device)
        candidates = torch.tensor([it.continuation_ids[0] for it in items], dtype=torch.long, device=self.device)
        start = time.perf_counter()
        with torch.inference_mode():
            outs = self.scorer.score_choices(self.model, ctx, candidates, self.scorer_config)
        if outs is None:
            return None
        wall = time.perf_counter() - start
        return [self._answer_ll(out, len(context_ids), wall if i == 0 else 0.0, it.key, it.request,
                                {"shared_forward": len(items)})
                for i, (out, it) in enumerate(zip(outs, items, strict=True))]

    def _answer_ll(self, out: Any, prompt_tokens: int, wall_s: float, key: Any, request: Any,
                   extra: dict[str, Any] | None = None) -> tuple[float, bool]:
        """Record one scored request and hand its result to lm-eval's cache hook (the journal)."""
        self.records.append(RequestRecord(
            "loglikelihood", getattr(request, "task_name", None), getattr(request, "doc_id", None),
            nfe=out.nfe, prompt_tokens=prompt_tokens, wall_s=wall_s, method=out.method,
            extra={**({"stderr": out.stderr} if out.stderr is not None else {}), **(extra or {})},
        ))
        result = (float(out.logprob), bool(out.is_greedy))
        if isinstance(key, tuple) and len(key) == 2 and all(isinstance(k, str) for k in key):
            self.cache_hook.add_partial("loglikelihood", key, result)
        return result

    def loglikelihood(self, requests, disable_tqdm: bool = False) -> list[tuple[float, bool]]:
        # Same encoding as TemplateLM.loglikelihood, kept per request so records carry task/doc ids.
        items = []
        for request in requests:
            context, continuation = request.args
            if context == "":
                cont = self.tok_encode(continuation, add_special_tokens=False)
                ctx_ids, cont_ids = ([self.prefix_token_id], cont) if cont[:1] != [self.prefix_token_id] else (cont[:1], cont[1:])
            else:
                ctx_ids, cont_ids = self._encode_pair(context, continuation)
            items.append(Encoded(ctx_ids, cont_ids, (context, continuation), request))
        return self._score_all(items, disable_tqdm)

    def loglikelihood_rolling(self, requests, disable_tqdm: bool = False) -> list[float]:
        results = []
        for request in tqdm(requests, disable=disable_tqdm or self.rank != 0, desc=f"{self.family} rolling"):
            (string,) = request.args
            windows = map(
                lm_utils.make_disjoint_window,
                lm_utils.get_rolling_token_windows(
                    token_list=self.tok_encode(string), prefix_token=self.prefix_token_id,
                    max_seq_len=self.max_length, context_len=1,
                ),
            )
            total = sum(self._score_one(list(ctx), list(cont), None, request)[0] for ctx, cont in windows)
            results.append(total)
            self.cache_hook.add_partial("loglikelihood_rolling", (string,), total)
        return results

    def generate_until(self, requests, disable_tqdm: bool = False) -> list[str]:
        results: list[str | None] = [None] * len(requests)
        eos_text = self.tok_decode([self.eot_token_id], skip_special_tokens=False)
        prepared = [self._prepare_generation(request, eos_text) for request in requests]
        # Several canvases per forward where the sampler decodes them exactly (adapters/request_batches.py).
        batches = generation_batches(self, prepared)
        for indices in tqdm(batches, disable=disable_tqdm or self.rank != 0, desc=f"{self.family} generate"):
            mine = [prepared[i] for i in indices]
            outs = self.sampler.sample_batch(self.model, [g.prompt_ids for g in mine], mine[0].config,
                                             generators=[g.generator for g in mine], stops=[g.stop for g in mine])
            for i, g, out in zip(indices, mine, outs, strict=True):
                text = self.answer_text(out.tokens, g.until)
                self.records.append(RequestRecord(
                    "generate_until", getattr(g.request, "task_name", None), getattr(g.request, "doc_id", None),
                    nfe=out.stats.nfe, new_tokens=out.stats.new_tokens, prompt_tokens=out.stats.prompt_tokens,
                    wall_s=out.stats.wall_s, method=self.sampler_cls.name,
                    extra={"active_token_steps": out.stats.active_token_steps, **out.stats.extra,
                           **({"request_batch": len(indices)} if len(indices) > 1 else {})},
                    settings=changed(asdict(self.sampler_config), asdict(g.config)),
                ))
                results[i] = text
                self.cache_hook.add_partial("generate_until", tuple(g.request.args), text)
        return results  # type: ignore[return-value]

    def _prepare_generation(self, request: Any, eos_text: str) -> Generation:
        """One request's sampler config, prompt ids, stop callable and generator (seeded from itself)."""
        context, gen_kwargs = request.args
        kwargs = normalize_gen_kwargs(dict(gen_kwargs), default_max_gen_toks=self._max_gen_toks)
        until = handle_stop_sequences(kwargs.get("until"), eos_text)
        config = self.sampler_config_for(kwargs)
        budget = max(1, self.max_length - config.max_new_tokens)
        prompt = self.tok_encode(context, add_special_tokens=self._add_bos())[-budget:]
        return Generation(
            request, until, config, torch.tensor(prompt, dtype=torch.long, device=self.device), self._stop_fn(until),
            make_generator(request_seed(self.seed, "gen", context, kwargs), self.device))

    def answer_text(self, tokens: torch.Tensor, until: list[str]) -> str:
        """The answer as lm-eval's HF backend returns it: generation ends at the token that completes a
        stop string in the text decoded *with* special tokens (its stopping criteria decode so), and the
        text returned is decoded without them and cut at the first stop string. So a stop string that
        is a special token (``<|eot_id|>``, ``<|im_end|>``) ends the answer as it does there."""
        ids = tokens.tolist() if isinstance(tokens, torch.Tensor) else list(tokens)

        def fires(n: int) -> bool:
            text = self.tok_decode(ids[:n], skip_special_tokens=False)
            return any(s and s in text for s in until)

        if ids and fires(len(ids)):
            lo, hi = 1, len(ids)  # the shortest prefix whose text holds a stop string
            while lo < hi:
                mid = (lo + hi) // 2
                lo, hi = (lo, mid) if fires(mid) else (mid + 1, hi)
            ids = ids[:lo]
        return cut_at_stop(self.tok_decode(ids), until)

    def _add_bos(self) -> bool:
        return getattr(self.tokenizer, "bos_token_id", None) is not None

    def _stop_fn(self, until: list[str]):
        """Stop once the decoded text so far contains any stop string (checked on committed ids)."""
        if not until:
            return None

        def stop(tokens: torch.Tensor) -> bool:
            text = self.tok_decode(tokens, skip_special_tokens=False)  # as lm-eval's HF stopping criteria
            return any(s and s in text for s in until)

        return stop


class FolderAdapter(EvalAdapter):
    """A family whose loader reads a checkpoint folder (or hub id) checked against the card, next to a
    tokenizer that must not have more ids than the network embeds (LLaDA, ARD).

    A subclass names ``load_model`` (``models.<family>.load_<family>``), ``load_tokenizer`` (name,
    revision) and ``embedding_rows``, the config field that counts the embedding table's rows.
    """

    load_model: ClassVar[Callable[..., torch.nn.Module]]
    load_tokenizer: ClassVar[Callable[[str, str | None], Any]]
    embedding_rows: ClassVar[str] = "vocab_size"

    def load(self, checkpoint: str, revision: str | None, tokenizer: str | None, device: torch.device,
             dtype: torch.dtype) -> tuple[torch.nn.Module, Any]:
        model = self.load_model(checkpoint, revision=revision, card=self.card, device=device, dtype=dtype)
        tok = self.load_tokenizer(tokenizer or checkpoint, None if tokenizer else revision)
        rows = getattr(model.config, self.embedding_rows)
        if len(tok) > rows:
            raise CheckpointError(f"the tokenizer has {len(tok)} tokens but {checkpoint} embeds {rows}",
                                  "pass the checkpoint's own tokenizer")
        return model, tok


def load_tokenizer(name: str, revision: str | None, *fallbacks: Any) -> Any:
    """A checkpoint's tokenizer (folder or hub id) through AutoTokenizer, then each class in
    ``fallbacks`` (Dream's names a remote-code class whose files Qwen2's fast class reads); one line if
    none loads. Never remote code: a card's checkpoint must not run code to be read."""
    from transformers import AutoTokenizer

    problem: BaseException | None = None
    for cls in (AutoTokenizer, *fallbacks):
        try:
            return cls.from_pretrained(str(name), revision=revision, trust_remote_code=False)
        except (OSError, ValueError, TypeError) as exc:
            problem = exc
    raise CheckpointError(f"cannot load the tokenizer of {name}: {first_line(problem)}",
                          "save the tokenizer into the checkpoint folder, or pass tokenizer=DIR (model_args)") from None



def qwen2_tokenizer(name: str, revision: str | None) -> Any:
    """The Qwen2-layout stand-ins' tokenizers (Dream-v0, Fast-dLLM v2): their tokenizer_config names a
    remote-code class (DreamTokenizer, a Qwen2 BPE over vocab.json and merges.txt); where AutoTokenizer
    cannot load it without that code, Qwen2's fast class reads the same files."""
    from transformers import Qwen2TokenizerFast

    return load_tokenizer(name, revision, Qwen2TokenizerFast)

def cut_at_stop(text: str, until: list[str]) -> str:
    """The text before the earliest stop string, as lm-eval's backends return it."""
    cut = len(text)
    for s in until:
        if s:
            index = text.find(s)
            if index != -1:
                cut = min(cut, index)
    return text[:cut]
