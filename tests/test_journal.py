from types import SimpleNamespace

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
