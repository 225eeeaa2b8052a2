"""`evo-eval report`: one self-contained page, opened in a real (headless) Chromium."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess

import pytest
from typer.testing import CliRunner

from evo_eval.cli import app
from evo_eval.errors import UserError
from evo_eval.report.html import build_report

# Evo right on documents 0-7, LLaMA3 right on 0-3 and 8-9: "Evo right, LLaMA3 wrong" is 4, 5, 6, 7.
EVO = [1.0] * 8 + [0.0] * 2
LLAMA = [1.0] * 4 + [0.0] * 4 + [1.0] * 2


@pytest.fixture
def results(tmp_path, write):
    prompts = {"evo_arc_challenge": [f"Question {i}: which gas do plants absorb?\nAnswer:" for i in range(10)]}
    prompts["evo_arc_challenge"][9] = "Question 9: </script><!-- <b>raw</b>\nAnswer:"  # text, never markup
    records = [{"request_type": "generate_until", "task": "evo_arc_challenge", "doc_id": i, "nfe": 32 + i,
                "wall_s": 0.5} for i in range(10)]
    write(tmp_path, "evo-8b", "arc_challenge", {"evo_arc_challenge": EVO}, shots=25, prompts=prompts,
          answers={"evo_arc_challenge": [f"evo answer {i}" for i in range(10)]}, records=records)
    write(tmp_path, "llama3-8b", "arc_challenge", {"evo_arc_challenge": LLAMA}, shots=25, prompts=prompts,
          answers={"evo_arc_challenge": [f"llama answer {i}" for i in range(10)]})
    return tmp_path


def test_page_is_self_contained_and_holds_every_document(results):
    page = build_report(results).read_text()
    assert (results / "report.html").is_file()
    # Nothing is fetched: no external script, style sheet, image or font.
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", page)
    assert "<link" not in page and "@import" not in page
    data = json.loads(re.search(r'<script type="application/json" id="data">(.*?)</script>', page, re.S).group(1))
    bench = data["benchmarks"]["base/arc_challenge"]
    assert bench["systems"] == ["Evo 8B", "LLaMA3 8B"] and bench["total"] == 10
    first = bench["docs"][0]["by"]
    assert first["0"][1:] == ["evo answer 0", 1.0, 32.0, 0.5] and first["1"][1:] == ["llama answer 0", 1.0, None, None]
    assert len(bench["prompts"]) == 10  # the same prompt is stored once for both systems
    assert bench["prompts"][9] == "Question 9: </script><!-- <b>raw</b>\nAnswer:"
    assert "80.0" in page and "[" in page  # the table, with its interval


def test_bad_input(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        build_report(tmp_path / "nowhere")
    with pytest.raises(UserError, match="no results under"):
        build_report(tmp_path)


@pytest.mark.parametrize("args, line", [
    (["report", "--results", "{tmp}/nowhere"], "error: results folder {tmp}/nowhere does not exist — run `evo-eval run` first, or pass --results DIR"),
    (["report", "--results", "{tmp}", "--max-docs", "-1"], "error: --max-docs must be 0 (all) or a positive number, got -1 — pass e.g. --max-docs 200"),
    (["table", "--results", "{tmp}", "--against", "evo-9b"], "error: unknown --against card for stage base 'evo-9b' — did you mean evo-8b?"),
])
def test_cli_bad_input_is_one_line_and_exit_2(results, args, line):
    out = CliRunner().invoke(app, [a.replace("{tmp}", str(results)) for a in args])
    assert out.exit_code == 2 and out.stderr.strip() == line.replace("{tmp}", str(results))


def _chromium() -> str | None:
    return next((shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome") if shutil.which(n)), None)


def test_page_renders_in_headless_chromium(results, tmp_path):
    browser = _chromium()
    if browser is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is not installed: .ci/run installs Debian's package (apt-get install chromium)")
        pytest.skip("no chromium here (Debian: apt-get install chromium); CI installs it and runs this test")
    runner = CliRunner()
    out = runner.invoke(app, ["report", "--results", str(results), "--against", "evo-8b"])
    assert out.exit_code == 0, out.stderr
    page = results / "report.html"

    def dom(fragment: str) -> str:
        profile = tmp_path / f"profile-{len(fragment)}"
        run = subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                              "--disable-component-update", "--disable-sync", "--no-first-run",
                              f"--user-data-dir={profile}", "--virtual-time-budget=5000", "--dump-dom",
                              page.as_uri() + fragment], capture_output=True, text=True, timeout=120)
        assert run.returncode == 0, run.stderr[-2000:]
        return run.stdout

    shown = dom("")
    # The table, as the browser built it.
    assert re.search(r"<td>ARC-C \(25-shot\)</td>.*?<b>80\.0</b>", shown, re.S)
    # LLaMA3 against Evo: 2 documents better, 4 worse: p = 2 * (1 + 6 + 15) / 64.
    assert "paired difference -20.0" in shown and "on 10 documents, sign test p = 0.688" in shown
    # One sample, rendered by the page's script: its prompt, answer and cost.
    assert shown.count('class="doc"') == 10
    assert "Question 0: which gas do plants absorb?" in shown and "evo answer 0" in shown
    assert "score 1.000 · NFE 32 · 0.50 s" in shown
    assert "Question 9: &lt;/script&gt;&lt;!-- &lt;b&gt;raw&lt;/b&gt;" in shown and "<b>raw</b>" not in shown
    # The filter "A right, B wrong" (Evo vs LLaMA3), opened from the page's address.
    filtered = dom("#bench=base/arc_challenge&a=0&b=1&mode=aw")
    assert "4 documents match" in filtered
    titles = re.findall(r"document (\d+) · target", filtered)
    assert titles == ["4", "5", "6", "7"]
