"""What a run shows and leaves behind: progress output, the JSONL logs, the training curves and Fig. 7."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest

from conftest import png_size
from integrations.retrieval import train
from integrations.retrieval.logs import RunLog, RunRecords, read_run_log
from integrations.retrieval.plotting import CURVES, draw_training_curves, object_attention_figure, \
    training_curves_figure
from integrations.retrieval.progress import Progress

from .toy_plugin import ToyPlugin, toy_options

ESCAPES = ("\r", "\x1b")


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def clock(*times: float):
    return iter(times).__next__


# ------------------------------------------------------------------ progress


def test_progress_in_a_file_is_plain_lines_at_the_interval():
    out = io.StringIO()
    # the clock: start, then one update per second for 25 s, then the close
    with Progress(25, desc="train", unit="step", stream=out, clock=clock(*range(27))) as bar:
        for _ in range(25):
            bar.set_postfix({"loss": "0.5"})
            bar.update()
    lines = out.getvalue().splitlines()
    assert [line.split(" in ")[0] for line in lines] == ["train: 10/25 steps (40%)", "train: 20/25 steps (80%)",
                                                       "train: 25/25 steps (100%)"]
    assert lines[0] == "train: 10/25 steps (40%) in 10 s, 1 steps/s, about 15 s left; loss=0.5"
    assert not any(c in out.getvalue() for c in ESCAPES)


def test_progress_on_a_terminal_is_a_tqdm_bar_and_write_goes_above_it(capsys):
    out = Terminal()
    with Progress(3, desc="scoring", unit="pair", stream=out) as bar:
        bar.update(3)
        bar.write("step 3: validation RSUM 1.00")
    assert "\r" in out.getvalue() and "3/3" in out.getvalue()
    assert capsys.readouterr().out == "step 3: validation RSUM 1.00\n"


def test_disabled_progress_shows_nothing_but_write_still_prints(capsys):
    out = Terminal()
    with Progress(3, desc="train", unit="step", stream=out, enabled=False) as bar:
        bar.update(3)
        bar.write("a result")
    assert out.getvalue() == "" and capsys.readouterr().out == "a result\n"


def test_nested_progress_adds_lines_only_when_it_lasts():
    out = io.StringIO()
    with Progress(2, desc="train", unit="step", stream=out, clock=clock(0, 1, 2)) as outer:
        with Progress(5, desc="scoring", unit="pair", stream=out, clock=clock(0, 1, 2)) as short:
            short.update(5)
        with Progress(5, desc="scoring", unit="pair", stream=out, clock=clock(0, 11, 12)) as long:
            long.update(5)
        outer.update(2)
    assert out.getvalue().splitlines() == ["scoring: 5/5 pairs (100%) in 11 s, 0.455 pairs/s",
                                           "train: 2/2 steps (100%) in 2 s, 1 steps/s"]
    assert Progress._open == 0
    bar = Progress(5, desc="eval", unit="pair", stream=Terminal())  # open alone again: not nested
    assert not bar.nested
    bar.close()


# ------------------------------------------------------------------ the JSONL logs


def test_run_log_writes_evaluations_apart_and_truncates_both_logs(tmp_path):
    log = RunLog(str(tmp_path), enabled=True, tensorboard=False)
    log.truncate_after(0)
    for step in (1, 2, 3):
        log.record({"step": step, "loss": 0.1 * step})
    log.evaluation(2, "val", {"rsum": 300.0}, final=False)
    log.evaluation(3, "val", {"rsum": 310.0}, final=True)
    log.evaluation(3, "test", {"rsum": 305.0}, final=True)
    log.close()
    assert [json.loads(x)["step"] for x in (tmp_path / "log" / "train_log.jsonl").read_text().splitlines()] == \
        [1, 2, 3]  # the step records are unchanged
    records = read_run_log(str(tmp_path))
    assert [(r["step"], r["split"], r["final"], r["rsum"]) for r in records.evaluations] == [
        (2, "val", False, 300.0), (3, "val", True, 310.0), (3, "test", True, 305.0)]
    with open(tmp_path / "log" / "valid_log.jsonl", "a", encoding="utf-8") as handle:
        handle.write('{"step": 4, "spl')  # cut short by a crash
    resumed = RunLog(str(tmp_path), enabled=True, tensorboard=False)
    resumed.truncate_after(3)  # a resume from the checkpoint of step 3: its final evaluations go
    assert [r["step"] for r in read_run_log(str(tmp_path)).steps] == [1, 2, 3]
    assert [(r["step"], r["final"]) for r in read_run_log(str(tmp_path)).evaluations] == [(2, False)]
    resumed.truncate_after(1)
    assert read_run_log(str(tmp_path)) == RunRecords([{"step": 1, "loss": 0.1}], [])


def test_plots_draws_the_curves_of_a_run_and_quiet_still_prints_the_results(tmp_path, capsys):
    result = train(toy_options(str(tmp_path), plots=True, quiet=True, progress=True), ToyPlugin())
    out = capsys.readouterr()
    assert result.curves == str(tmp_path / "results" / "training_curves.png")
    assert png_size(tmp_path / "results" / "training_curves.png") == (1200, 780)
    assert "RSUM" in out.out and f"training curves: {result.curves}" in out.out  # the results
    assert "steps" not in out.err and "validation" not in out.out  # no progress under --quiet
    final = read_run_log(str(tmp_path)).evaluations
    assert [(r["step"], r["split"], r["final"]) for r in final] == [(4, "test", True)]
    assert final[0]["rsum"] == pytest.approx(result.test_metrics["rsum"])


# ------------------------------------------------------------------ pictures


def _records(n: int, lam: float, seed: int) -> RunRecords:
    rng = np.random.default_rng(seed)
    steps = [{"step": s, "rank_loss": float(rng.random()), "iais_loss": lam * float(rng.random()),
              "lambda": lam * s / n} for s in range(1, n + 1)]
    valid = [{"step": s, "split": "val", "final": False, "rsum": 300.0 + s} for s in range(10, n, 10)]
    return RunRecords(steps, valid + [{"step": n, "split": "test", "final": True, "rsum": 1.0}])


def test_training_curves_have_the_four_panels_with_a_line_per_run():
    fig = training_curves_figure({"no IAIS": _records(60, 0.0, 0), "IAIS singular": _records(60, 1.0, 1)})
    axes = fig.get_axes()
    assert [ax.get_title() for ax in axes] == [title for title, *_ in CURVES] == \
        ["margin loss", "IAIS term", "lambda_t (IAIS weight)", "validation RSUM"]
    legends = [[t.get_text() for t in ax.get_legend().get_texts()] for ax in axes]
    assert legends[0] == ["no IAIS (mean of 2)", "IAIS singular (mean of 2)"]  # noisy: faint line + running mean
    assert legends[1] == ["no IAIS: IAIS off", "IAIS singular (mean of 2)"]  # lambda_t = 0: no IAIS term drawn
    assert legends[2] == ["no IAIS: IAIS off", "IAIS singular"]  # lambda_t is smooth: drawn as it is
    assert legends[3] == ["no IAIS", "IAIS singular"]
    rsum = axes[3].get_lines()[0].get_xydata()
    assert rsum[:, 0].tolist() == [10, 20, 30, 40, 50] and rsum[:, 1].tolist() == [310, 320, 330, 340, 350]


def test_training_curves_png_and_a_run_without_records(tmp_path):
    fig = training_curves_figure({"empty": RunRecords([], [])})
    assert all(ax.texts[0].get_text() == "no records" for ax in fig.get_axes())
    path = draw_training_curves({"a": _records(30, 1.0, 0)}, path=tmp_path / "c" / "curves.png", dpi=60)
    assert path.is_file() and png_size(path) == (600, 390)


def test_object_attention_figure_names_the_objects_and_the_checkpoints():
    rng = np.random.default_rng(0)
    m = rng.random((2, 3, 3))
    fig = object_attention_figure(m, m[::-1], ["red cube", "blue ball", "table"],
                                  titles=["without IAIS", "with IAIS"], suptitle="a pair")
    panels = fig.get_axes()[:4]  # then the colour bar
    assert [ax.get_title() for ax in panels] == [r"text self-attention $S_{LL}^{(a)}$",
                                                 r"image self-attention $S_{VV}^{(a)}$", "", ""]
    assert "without IAIS" in panels[0].get_ylabel() and "with IAIS" in panels[2].get_ylabel()
    for ax in panels:
        assert [t.get_text() for t in ax.get_xticklabels()] == ["red cube", "blue ball", "table"]
        assert [t.get_text() for t in ax.get_yticklabels()] == ["red cube", "blue ball", "table"]
