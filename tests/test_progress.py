"""Progress inside a benchmark: requests done/total, rate and ETA; plain lines in logs; totals over ranks."""

from __future__ import annotations

import io
import re

from evo_eval.progress import BenchmarkProgress, RequestProgress, Snapshot


def test_a_log_gets_plain_request_lines_the_results_folder_and_no_git_noise(cli_processes, small_mirror,
                                                                            tiny_llama_dir, tmp_path):
    """stderr is a file (as under slurm or nohup) and the folder is no git checkout."""
    code, command = cli_processes.run(
        "run", "--model", "llama3-8b", "--checkpoint", str(tiny_llama_dir), "--data-dir", str(small_mirror),
        "--tasks", "gsm8k", "--limit", "3", "--shots", "1", "--device", "cpu", "--bootstrap-iters", "0",
        "--gen-kwargs", "max_gen_toks=4", "--output", "results", cwd=tmp_path, env={"EVO_EVAL_PROGRESS_EVERY": "0"})
    assert code == 0, command.stderr
    lines = command.stderr.splitlines()
    progress = [line for line in lines if re.fullmatch(r"  gsm8k +\d/3 requests(, [\d.]+/(s|min))?(, ETA \d+s)?", line)]
    assert progress and progress[0].endswith(" 0/3 requests"), command.stderr
    assert any(re.search(r" [123]/3 requests, [\d.]+/(s|min), ETA \d+s$", line) for line in progress), command.stderr
    assert "fatal: not a git repository" not in command.stderr
    folder = tmp_path / "results" / "base" / "llama3-8b"
    assert lines[-1] == ("results in results/base/llama3-8b: 1 written now, 0 kept from earlier runs (`evo-eval table --results results` shows them)")
    assert (folder / "gsm8k.json").is_file()


def test_rank_zero_adds_the_other_ranks_counts(tmp_path):
    shown: list[Snapshot] = []
    other = RequestProgress("gsm8k", tmp_path, rank=1, world_size=2, every_s=0)
    mine = RequestProgress("gsm8k", tmp_path, rank=0, world_size=2, report=shown.append, every_s=0)
    other.begin(3)
    other.advance(2)
    mine.begin(3)
    mine.advance(1)
    assert (shown[-1].done, shown[-1].total, shown[-1].ranks) == (3, 6, 2)
    assert shown[-1].line().startswith("3/6 requests over 2 ranks")
    other.advance(1)
    other.publish()
    mine.advance(2)
    mine.finish()
    assert (shown[-1].done, shown[-1].total, shown[-1].final) == (6, 6, True)
    assert not (tmp_path / "gsm8k.rank1.progress.json").exists()


def test_a_terminal_gets_a_bar_per_benchmark():
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn

    console = Console(file=io.StringIO(), force_terminal=True, force_interactive=True, width=100)
    progress = Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                        TextColumn("{task.fields[detail]}"), console=console)
    bars = BenchmarkProgress(progress, console)
    bars.update(Snapshot("gsm8k", 40, 100, 2.0, 30.0, 1))
    (task,) = progress.tasks
    assert (task.completed, task.total, task.fields["detail"]) == (40, 100, "2.0/s, ETA 30s")
    bars.close("gsm8k")
    assert not progress.tasks
