"""Several requests per forward (adapters/request_batches.py): for every family, batch 3 answers each
request exactly as batch 1 does (floats compared with ==), whichever requests share its batch, and
does so in fewer network calls where the estimator batches."""

from __future__ import annotations

import random

import pytest
import torch

from evo_eval.adapters.request_batches import AUTO_BATCH, resolve_batch_size
from evo_eval.errors import UserError

# (family, likelihood settings, whether its estimator stacks requests; False: one at a time, stated)
FAMILIES = [
    ("llada", {"mc_num": 4, "batch": 2}, True),
    ("llada", {"mc_num": 2, "batch": 2, "cfg": 0.5, "check_greedy": True}, True),
    ("mdlm", {"mc_num": 4, "batch": 2}, False),
    ("dream", {"mc_num": 4, "batch": 2}, True),
    ("evo", {"estimator": "ar"}, True),
    ("evo", {"mc_num": 3, "batch": 2}, False),
    ("bd3lm", {"mc_num": 4, "batch": 2}, False),
    ("ard", {"mc_num": 4, "batch": 2}, False),
    ("fast_dllm_v2", {}, False),
]
IDS = [f"{f}-{'-'.join(f'{k}{v}' for k, v in s.items())}" for f, s, _ in FAMILIES]


def build(family: str, tiny_checkpoint, **settings):
    from evo_eval.adapters import adapter_class
    from evo_eval.tiny import tiny_card

    return adapter_class(family)(pretrained=str(tiny_checkpoint(family, seed=4)), card=tiny_card(family),
                                 device="cpu", **settings)


def at_batch(lm, size: int):
    other = lm.with_settings()  # shares the loaded network
    other.batch_size = size
    return other


def token_requests(lm, seed: int = 0) -> list[tuple[None, list[int], list[int]]]:
    """Requests in equal-shape families (so batches really form) and odd ones out: multi-token answers
    after contexts of one length, one-token options after several contexts of one length (shared
    forwards, then stacked), and a few of their own shapes."""
    rng = random.Random(seed)
    vocab = min(len(lm.tokenizer), 300)

    def ids(n: int) -> list[int]:
        return [rng.randrange(5, vocab) for _ in range(n)]

    out = [(None, ids(32), ids(3)) for _ in range(5)]  # one bucket: context 32, answer 3
    for _ in range(4):  # one-token options after four contexts of length 33
        context = ids(33)
        out += [(None, context, [t]) for t in ids(3)]
    out += [(None, ids(33), ids(1)) for _ in range(2)]  # lone one-token answers of the same length
    out += [(None, ids(30 + k), ids(2 + k)) for k in range(3)]  # shapes of their own
    out += [(None, ids(6), ids(2)) for _ in range(3)]  # too short to stack (MIN_STACK_ROWS): alone
    rng.shuffle(out)
    return out


def network_calls(lm) -> list[int]:
    """A counter of the network's passes: calls of its first block (every pass runs it once)."""
    count = [0]
    first = next(m for name, m in lm.model.named_modules() if name.endswith(("layers.0", "blocks.0")))
    first.register_forward_hook(lambda *args: count.__setitem__(0, count[0] + 1))
    return count


@pytest.mark.parametrize("family,settings,stacks", FAMILIES, ids=IDS)
def test_batch_three_equals_batch_one(family, settings, stacks, tiny_checkpoint):
    one = build(family, tiny_checkpoint, **settings)
    three = at_batch(one, 3)
    requests = token_requests(one)
    calls = network_calls(one)
    want = one._loglikelihood_tokens(requests, disable_tqdm=True)
    calls_one, calls[0] = calls[0], 0
    got = three._loglikelihood_tokens(requests, disable_tqdm=True)
    assert got == want  # floats and is_greedy, bit for bit
    assert all(isinstance(v, float) and torch.isfinite(torch.tensor(v)) for v, _ in got)

    def per_request(lm):
        return sorted((r.prompt_tokens, r.nfe, r.method, r.extra.get("stderr")) for r in lm.records)

    assert per_request(three) == per_request(one)  # the same work recorded per request
    batched = [r for r in three.records if r.extra.get("request_batch", 1) > 1]
    if stacks:
        assert batched and calls[0] < calls_one
    else:
        assert not batched and calls[0] == calls_one


@pytest.mark.parametrize("family,settings,stacks", FAMILIES, ids=IDS)
def test_a_result_does_not_depend_on_its_batch_mates(family, settings, stacks, tiny_checkpoint):
    lm = at_batch(build(family, tiny_checkpoint, **settings), 4)
    requests = [r for r in token_requests(lm, seed=1) if len(r[2]) == 3 and len(r[1]) == 32]
    others = [r for r in token_requests(lm, seed=2) if len(r[2]) == 3 and len(r[1]) == 32]
    target = requests[0]
    alone = lm._loglikelihood_tokens([target], disable_tqdm=True)[0]
    with_first = lm._loglikelihood_tokens(requests[:4], disable_tqdm=True)[0]
    with_second = lm._loglikelihood_tokens([others[0], target, others[1], others[2]], disable_tqdm=True)[1]
    assert alone == with_first == with_second


def test_short_requests_are_answered_alone():
    from evo_eval.decoding.base import MIN_STACK_ROWS
    from evo_eval.scoring.ar import ar_batch_key
    from evo_eval.scoring.llada import LLaDAScorer

    config = LLaDAScorer.Config(mc_num=2, batch=2)
    assert LLaDAScorer().batch_key(config, 5, 3) is None  # 2 rows x 8 positions
    assert LLaDAScorer().batch_key(config, MIN_STACK_ROWS // 2, 3) == (MIN_STACK_ROWS // 2, 3)
    assert ar_batch_key(MIN_STACK_ROWS - 1, 1) is None and ar_batch_key(MIN_STACK_ROWS, 1) is not None


def test_batch_size_values():
    assert resolve_batch_size(None) == 1
    assert resolve_batch_size("3") == 3 and resolve_batch_size(5) == 5
    assert resolve_batch_size("auto") == AUTO_BATCH and resolve_batch_size("auto:4") == AUTO_BATCH
    with pytest.raises(UserError, match="positive integer or auto"):
        resolve_batch_size("0")


# (family, sampler settings, whether its sampler decodes canvases in lockstep)
GENERATORS = [
    ("llada", {"block_length": 4}, True),  # four blocks: canvases stop early at different blocks
    ("llada", {"block_length": 4, "cfg_scale": 0.5, "remasking": "random"}, True),
    ("llada", {"threshold": 0.5, "block_length": 4}, False),  # steps per block differ per canvas: alone
    ("dream", {}, True),
    ("dream", {"alg": "origin"}, True),
    ("mdlm", {}, False),
    ("evo", {}, False),
    ("bd3lm", {}, False),
    ("ard", {}, False),
    ("fast_dllm_v2", {}, False),
]
GEN_IDS = [f"{f}-{'-'.join(f'{k}{v}' for k, v in s.items()) or 'default'}" for f, s, _ in GENERATORS]


def generation_requests(lm, count: int = 7):
    """Prompts of one token length (so batches form) and two odd ones; greedy and sampled settings,
    and a stop string some canvases hit early."""
    from lm_eval.api.instance import Instance

    words = []
    for w in "the a of to and in is it on that was he for as with his they at be this from".split():
        if len(lm.tok_encode(" " + w)) == 1 and " " + w not in words:
            words.append(" " + w)
    assert len(words) >= 6
    rng = random.Random(3)
    contexts = ["Q:" + "".join(rng.choice(words) for _ in range(20)) for _ in range(count)]
    contexts += ["Q:" + "".join(rng.choice(words) for _ in range(k)) for k in (17, 23)]
    out = []
    for i, context in enumerate(contexts):
        kwargs = {"until": ["\n\n", "e"], "max_gen_toks": 16}
        if i % 2:
            kwargs.update(do_sample=True, temperature=0.7)
        out.append(Instance("generate_until", {}, (context, kwargs), i, ("gen", i, 1)))
    lengths = [len(lm.tok_encode(c, add_special_tokens=True)) for c in contexts]
    assert max(lengths.count(n) for n in set(lengths)) >= 3  # a batch really forms
    return out


@pytest.mark.parametrize("family,settings,stacks", GENERATORS, ids=GEN_IDS)
def test_generation_batch_three_equals_batch_one(family, settings, stacks, tiny_checkpoint):
    from evo_eval.families import family as family_record

    one = build(family, tiny_checkpoint, **{**family_record(family).tiny_decoding, **settings})
    three = at_batch(one, 3)
    requests = generation_requests(one)
    calls = network_calls(one)
    want = one.generate_until(requests, disable_tqdm=True)
    calls_one, calls[0] = calls[0], 0
    got = three.generate_until(requests, disable_tqdm=True)
    assert got == want
    assert len(set(got)) > 1
    if family == "llada" and stacks:  # canvases of one batch stop after different blocks
        assert len({r.extra["blocks_decoded"] for r in one.records}) > 1
    key = lambda r: (r.doc_id, r.nfe, r.new_tokens, r.prompt_tokens, r.extra.get("blocks_decoded"))  # noqa: E731
    assert sorted(map(key, three.records)) == sorted(map(key, one.records))
    batched = [r for r in three.records if r.extra.get("request_batch", 1) > 1]
    if stacks:
        assert batched and calls[0] < calls_one
    else:
        assert not batched and calls[0] == calls_one


@pytest.mark.slow
def test_a_batched_run_writes_the_results_of_batch_one(cli_processes, small_mirror, tokenizer_dir, tmp_path):
    """Through `evo-eval run` (journal chunks, records, results file): batch 3 writes what batch 1 writes,
    apart from times and the records saying how many requests shared a forward."""
    import json
    import re

    import yaml

    from evo_eval.store import to_json
    from evo_eval.tiny import build_tiny_checkpoint, tiny_card

    checkpoint = build_tiny_checkpoint("llada", tmp_path / "llada", tokenizer_dir=tokenizer_dir, seed=2)
    card = tiny_card("llada")
    card_file = tmp_path / f"{card.name}.yaml"
    card_file.write_text(yaml.safe_dump({k: v for k, v in card.to_dict().items() if k != "path"}, sort_keys=False))
    args = ["run", "--model", str(card_file), "--checkpoint", str(checkpoint), "--data-dir", str(small_mirror),
            "--tasks", "arc_challenge,gsm8k", "--limit", "4", "--shots", "0", "--device", "cpu",
            "--bootstrap-iters", "0", "--gen-kwargs", "max_gen_toks=8",
            "--model-args", "mc_num=2,batch=2,gen_length=8,steps=8,block_length=4"]

    def comparable(path):
        data = json.loads(path.read_text(encoding="utf-8"))
        for section, key in (("provenance", "written_at"), ("provenance", "wall_time_s"), ("lm_eval", "date")):
            data[section][key] = "<time>"
        for record in data["requests"]["per_request"]:
            record["wall_s"] = "<time>"
            record.get("extra", {}).pop("request_batch", None)
        return re.sub(r'("--batch-size",\s*)"3"', r'\1"1"', to_json(data))  # the command line says it

    written, shared = {}, 0
    for size in ("1", "3"):
        (tmp_path / size).mkdir()
        code, command = cli_processes.run(*args, "--batch-size", size, "--output", "results", cwd=tmp_path / size)
        assert code == 0, command.stderr
        folder = tmp_path / size / "results" / "base" / card.name
        for benchmark in ("arc_challenge", "gsm8k"):
            raw = json.loads((folder / f"{benchmark}.json").read_text())
            shared += size == "3" and any(r.get("extra", {}).get("request_batch") for r in raw["requests"]["per_request"])
            written[size, benchmark] = comparable(folder / f"{benchmark}.json")
    assert shared  # the batched run did stack requests
    for benchmark in ("arc_challenge", "gsm8k"):
        assert written["1", benchmark] == written["3", benchmark], benchmark
