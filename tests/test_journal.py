import json
from types import SimpleNamespace

import pytest
from lm_eval.api.model import LM

from evo_eval.journal import Journal, JournalLM


def req(args, task="t", doc=0):
    return SimpleNamespace(args=args, task_name=task, doc_id=doc)


class CountingLM(LM):
    """Answers loglikelihood requests from a table and counts what it was asked; reports partials."""

    def __init__(self):
        super().__init__()
        self.asked = []

    def loglikelihood(self, requests, disable_tqdm=False):
        out = []
        for r in requests:
            self.asked.append(r.args)
            value = (-float(len(r.args[1])), r.args[1] == " a")
            self.cache_hook.add_partial("loglikelihood", r.args, value)
            out.append(value)
        return out

    def generate_until(self, requests, disable_tqdm=False):
        self.asked += [r.args for r in requests]
        return [f"answer to {r.args[0]}" for r in requests]

    def loglikelihood_rolling(self, requests, disable_tqdm=False):
        raise NotImplementedError


def test_resume_answers_finished_requests_from_the_journal(tmp_path):
    requests = [req(("ctx", " a"), doc=0), req(("ctx", " bb"), doc=0), req(("ctx2", " a"), doc=1)]
    first = CountingLM()
    journal = Journal(tmp_path, "mmlu", {"model": "x"})
    expected = JournalLM(first, journal).loglikelihood(requests)
    journal.close()
    assert len(first.asked) == 3

    again = CountingLM()
    wrapped = JournalLM(again, Journal(tmp_path, "mmlu", {"model": "x"}))
    assert wrapped.loglikelihood(requests) == expected
    assert again.asked == [] and wrapped.reused == 3


def test_identity_separates_models(tmp_path):
    requests = [req(("ctx", " a"))]
    journal = Journal(tmp_path, "mmlu", {"model": "x"})
    JournalLM(CountingLM(), journal).loglikelihood(requests)
    journal.close()
    other = CountingLM()
    JournalLM(other, Journal(tmp_path, "mmlu", {"model": "y"})).loglikelihood(requests)
    assert other.asked == [("ctx", " a")]


def test_truncated_and_tampered_lines_are_skipped_and_redone(tmp_path, caplog):
    requests = [req(("q", {"until": ["\n"]}), doc=i) for i in range(3)]
    journal = Journal(tmp_path, "gsm8k", {"model": "x"})
    JournalLM(CountingLM(), journal).generate_until(requests)
    journal.close()
    lines = journal.path.read_text().splitlines()
    lines[1] = lines[1].replace("answer", "ANSWER")  # checksum no longer matches
    journal.path.write_text("\n".join(lines[:2]) + "\n" + lines[2][:20])  # last line cut mid-write
    fresh = CountingLM()
    reloaded = Journal(tmp_path, "gsm8k", {"model": "x"})
    assert reloaded.skipped_lines == 2
    out = JournalLM(fresh, reloaded).generate_until(requests)
    assert out == ["answer to q"] * 3
    assert len(fresh.asked) == 2


def test_ranks_write_separate_files_and_reads_merge_them(tmp_path):
    for rank, doc in ((0, 0), (1, 1)):
        journal = Journal(tmp_path, "piqa", {"model": "x"}, rank=rank)
        JournalLM(CountingLM(), journal).loglikelihood([req(("c", " a"), doc=doc)])
        journal.close()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["piqa.rank0.jsonl", "piqa.rank1.jsonl"]
    merged = Journal(tmp_path, "piqa", {"model": "x"})
    assert len(merged.entries) == 2


class BatchSensitiveLM(LM):
    """Like a batched kernel: each answer carries a trace of what else was in the call; logs the calls."""

    def __init__(self):
        super().__init__()
        self.calls = []

    def loglikelihood(self, requests, disable_tqdm=False):
        self.calls.append(sorted(r.doc_id * 10 + len(r.args[1]) for r in requests))
        noise = 1e-9 * sum(len(r.args[0]) for r in requests)
        out = [(-float(len(r.args[1])) - noise, False) for r in requests]
        for r, value in zip(requests, out):
            self.cache_hook.add_partial("loglikelihood", r.args, value)
        return out

    def generate_until(self, requests, disable_tqdm=False):
        import torch

        # Samples from torch's global generator, as lm-eval's HF backend does with do_sample=True.
        out = [f"{torch.rand(1).item():.17f}" for _ in requests]
        for r, value in zip(requests, out):
            self.cache_hook.add_partial("generate_until", r.args, value)
        return out

    def loglikelihood_rolling(self, requests, disable_tqdm=False):
        raise NotImplementedError


def _mc_requests(docs=6):
    return [req((f"question {d} " + "x" * d, f" {choice}"), doc=d) for d in range(docs) for choice in ("a", "bb", "ccc")]


def _journal_only(tmp_path, name, requests, results, every):
    """A journal as an interrupted run leaves it: every ``every``-th answer written."""
    journal = Journal(tmp_path / name, "mmlu", {"model": "x"})
    for i, (request, result) in enumerate(zip(requests, results)):
        if i % every == 0:
            journal.put(journal.key("loglikelihood", request), "loglikelihood", request, result)
    journal.close()


def test_a_resumed_batching_backend_sees_the_same_chunks_and_gives_the_same_answers(tmp_path):
    requests = _mc_requests()
    clean_lm = BatchSensitiveLM()
    clean = JournalLM(clean_lm, Journal(tmp_path / "clean", "mmlu", {"model": "x"}), chunk_size=6)
    expected = clean.loglikelihood(requests)
    assert all(len(call) == 6 for call in clean_lm.calls)  # whole contexts, two per chunk
    _journal_only(tmp_path, "chunked", requests, expected, every=4)
    resumed_lm = BatchSensitiveLM()
    resumed = JournalLM(resumed_lm, Journal(tmp_path / "chunked", "mmlu", {"model": "x"}), chunk_size=6)
    assert resumed.loglikelihood(requests) == expected
    assert all(call in clean_lm.calls for call in resumed_lm.calls) and resumed_lm.calls
    # Handing over just the missing requests would change the answers of such a backend.
    _journal_only(tmp_path, "loose", requests, expected, every=4)
    loose = JournalLM(BatchSensitiveLM(), Journal(tmp_path / "loose", "mmlu", {"model": "x"}))
    assert loose.loglikelihood(requests) != expected


def test_sampling_from_torchs_generator_is_reproduced_on_resume(tmp_path):
    requests = [req((f"q{d}", {"until": ["\n"], "do_sample": True}), doc=d) for d in range(8)]
    clean = JournalLM(BatchSensitiveLM(), Journal(tmp_path / "a", "gsm8k", {"model": "x"}), chunk_size=2)
    expected = clean.generate_until(requests)
    assert len(set(expected)) == len(expected)
    journal = Journal(tmp_path / "b", "gsm8k", {"model": "x"})
    for i in (0, 1, 5):
        journal.put(journal.key("generate_until", requests[i]), "generate_until", requests[i], expected[i])
    journal.close()
    import torch

    torch.manual_seed(99)  # whatever ran before in the process must not matter
    resumed = JournalLM(BatchSensitiveLM(), Journal(tmp_path / "b", "gsm8k", {"model": "x"}), chunk_size=2)
    assert resumed.generate_until(requests) == expected


class RecordingLM(CountingLM):
    """Keeps per-request stats as our adapters do (appended before the response is reported)."""

    def __init__(self):
        super().__init__()
        self.records = []

    def loglikelihood(self, requests, disable_tqdm=False):
        out = []
        for r in requests:
            self.records.append(SimpleNamespace(doc_id=r.doc_id, nfe=len(r.args[1]), wall_s=0.1))
            value = (-float(len(r.args[1])), False)
            self.cache_hook.add_partial("loglikelihood", r.args, value)
            out.append(value)
        return out


def test_per_request_records_survive_the_journal_in_request_order(tmp_path):
    requests = _mc_requests(3)
    clean = JournalLM(RecordingLM(), Journal(tmp_path / "a", "mmlu", {"model": "x"}))
    expected = clean.loglikelihood(requests)
    first = JournalLM(RecordingLM(), Journal(tmp_path / "b", "mmlu", {"model": "x"}))
    first.loglikelihood(requests[:4])
    first.journal.close()
    resumed = JournalLM(RecordingLM(), Journal(tmp_path / "b", "mmlu", {"model": "x"}))
    assert resumed.loglikelihood(requests) == expected
    assert resumed.reused == 4 and resumed.computed == len(requests) - 4
    assert resumed.records == clean.records
    assert [(r["doc_id"], r["nfe"]) for r in resumed.records] == [(r.doc_id, len(r.args[1])) for r in requests]


def test_lines_of_another_format_or_glued_to_a_torn_tail_are_reported_and_redone(tmp_path):
    requests = [req(("ctx", f" {c}"), doc=i) for i, c in enumerate("abcd")]
    journal = Journal(tmp_path, "arc", {"model": "x"})
    JournalLM(CountingLM(), journal).loglikelihood(requests[:2])
    journal.close()
    future = json.loads(journal.path.read_text().splitlines()[0]) | {"v": 99}
    text = journal.path.read_text()
    journal.path.write_text(json.dumps(future) + "\n" + text[: len(text) - 10])  # v99 line; last line torn
    reloaded = Journal(tmp_path, "arc", {"model": "x"})
    assert reloaded.skipped_lines == 2
    report = reloaded.report()
    assert "2 journal line(s) skipped" in report and "journal format 99, this evo-eval reads 2" in report
    assert "line 3 is truncated" in report
    lm = CountingLM()
    JournalLM(lm, reloaded).loglikelihood(requests)
    reloaded.close()
    assert lm.asked == [("ctx", " b"), ("ctx", " c"), ("ctx", " d")]
    # The torn tail was closed with a newline, so nothing appended after it was lost.
    final = Journal(tmp_path, "arc", {"model": "x"})
    assert final.skipped_lines == 2 and len(final.entries) == 4


def test_a_full_disk_while_journaling_is_one_clear_error(tmp_path, monkeypatch):
    import errno
    import os

    from evo_eval.errors import ResultsError

    journal = Journal(tmp_path, "gsm8k", {"model": "x"})

    def full(fd, data):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "write", full)
    with pytest.raises(ResultsError, match=r"cannot append to the request journal .*No space left on device"):
        JournalLM(CountingLM(), journal).generate_until([req(("q", {"until": ["\n"]}))])
