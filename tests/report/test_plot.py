"""Accuracy-vs-speed figure: the Pareto frontier, the labels on the figure, bad input."""

from __future__ import annotations

import json

import pytest

from evo_eval.errors import UnknownNameError, UserError
from evo_eval.report.plot import Point, draw, pareto_front, plot_accuracy_vs_speed


def test_pareto_front():
    points = [Point("a", 10, 50), Point("b", 20, 40), Point("c", 15, 45), Point("d", 12, 44), Point("e", 20, 40),
              Point("f", 5, 50)]
    # d is beaten by c on both axes; f ties a on accuracy but is slower; b and e tie each other.
    assert [points[i].label for i in pareto_front(points)] == ["a", "c", "b", "e"]
    assert pareto_front([Point("x", 1, 1)]) == [0]


def test_draw_writes_the_notes_onto_the_figure(tmp_path):
    fig = draw([Point("A", 10, 50), Point("B", 20, 40)], tmp_path / "f.png", title="t", xlabel="x", ylabel="y",
               notes=["speed: synthetic weights"])
    assert (tmp_path / "f.png").stat().st_size > 10_000
    assert any("synthetic weights" in t.get_text() for t in fig.texts)


def _speed_record(model, tps, synthetic=True):
    from evo_eval.store import SpeedResult

    blank = {name: None for name in SpeedResult.__dataclass_fields__}
    result = SpeedResult(**{**blank, "model": model, "tokens_per_s": tps, "synthetic": synthetic,
                            "device": "NVIDIA H100 80GB HBM3", "comparable_to_paper": True})
    return result.to_record()


def test_measured_speed_against_paper_accuracy(tmp_path, monkeypatch):
    speed_dir = tmp_path / "speed"
    speed_dir.mkdir()
    for model, tps in (("llama3-8b", 180.0), ("qwen2.5-7b", 190.0), ("evo-8b", 60.0)):
        (speed_dir / f"{model}.json").write_text(json.dumps(_speed_record(model, tps)))
    captured = {}
    from evo_eval.report import plot

    monkeypatch.setattr(plot, "draw", lambda points, output, **kw: captured.update(points=points, **kw))
    plot_accuracy_vs_speed(stage="base", task="gsm8k", accuracy="paper", speed="measured", speed_dir=speed_dir,
                           output=tmp_path / "fig.png")
    got = {p.label: (p.speed, p.accuracy) for p in captured["points"]}
    assert got == {"Evo 8B": (60.0, 86.4), "LLaMA3 8B": (180.0, 52.7), "Qwen2.5 7B": (190.0, 85.8)}
    notes = "\n".join(captured["notes"])
    assert "synthetic weights" in notes and "H100" in notes and "not shown" in notes and "paper" in notes
    # These records name no paper-sized shape: never "at the paper's shapes".
    assert "paper's shapes" not in notes and "small test shapes" in notes


def test_paper_on_both_axes_and_bad_input(tmp_path):
    out = plot_accuracy_vs_speed(stage="instruct", task="mean", accuracy="paper", speed="paper",
                                 results=tmp_path, output=tmp_path / "paper.png")
    assert out.is_file()
    with pytest.raises(UnknownNameError, match="unknown task 'gsm9k'"):
        plot_accuracy_vs_speed(task="gsm9k", output=tmp_path / "x.png")
    with pytest.raises(UnknownNameError, match="accuracy source"):
        plot_accuracy_vs_speed(accuracy="guess", output=tmp_path / "x.png")
    with pytest.raises(UserError, match="nothing to plot"):
        plot_accuracy_vs_speed(results=tmp_path, speed_dir=tmp_path / "none", output=tmp_path / "x.png")


def test_labels_of_crowded_points_do_not_overlap(tmp_path):
    # The paper's AR baselines and masked-diffusion models sit close together on both axes.
    points = [Point("LLaMA3 8B", 180.0, 52.7), Point("Qwen2.5 7B", 190.0, 53.8), Point("Evo 8B", 60.0, 86.4),
              Point("LLaDA 8B", 20.0, 70.7), Point("MDLM 7B", 21.0, 70.1), Point("BD3-LM 7B", 22.0, 69.5),
              Point("ARD 7B", 185.0, 53.2)]
    fig = draw(points, tmp_path / "f.png", title="t", xlabel="x", ylabel="y", notes=["n"])
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(fig)  # the closed figure's canvas is gone; measure on a fresh one
    canvas.draw()
    renderer = canvas.get_renderer()
    labels = {p.label for p in points}
    boxes = [t.get_window_extent(renderer) for t in fig.axes[0].texts if t.get_text() in labels]
    assert len(boxes) == len(points)
    for i, a in enumerate(boxes):
        for b in boxes[i + 1:]:
            assert not a.overlaps(b), (a, b)
    legend = fig.axes[0].get_legend().get_window_extent(renderer)
    assert not any(box.overlaps(legend) for box in boxes)


def test_plot_writes_under_results_not_the_working_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    results = tmp_path / "elsewhere"
    results.mkdir()
    out = plot_accuracy_vs_speed(stage="base", task="mean", accuracy="paper", speed="paper", results=results)
    assert out == results / "speed" / "accuracy_vs_speed_base.png" and out.is_file()
    assert not (tmp_path / "results").exists()
