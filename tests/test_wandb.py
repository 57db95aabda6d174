"""Per-run figures in every logger, W&B organisation and summary, the disagreement table,
checked on what an offline run wrote (no network)."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytest
import torch

from litdistill.disagreement import COLUMNS, disagreements
from litdistill.loggers import pick_job_type, run_tags
from litdistill.tasks import TaskSpec
from litdistill.train import train
from litdistill.wandb_files import read_run

SST2 = TaskSpec("sst2", ("sentence",), 2, ("accuracy",), label_names=("neg", "pos"))
STSB = TaskSpec("stsb", ("s1", "s2"), 1, ("pearson",), is_regression=True)


def test_disagreements_rank_rows_by_distance_and_cap():
    """Rows 0 and 2 disagree. Teacher p = softmax([2, 0]) = (0.881, 0.119) on both; student
    row 0 softmax([0, 1]) = (0.269, 0.731), row 2 softmax([0, 3]) = (0.047, 0.953).
    TV distance = |p_t0 - p_s0|: row 0 0.881 - 0.269 = 0.612, row 2 0.881 - 0.047 = 0.834,
    so row 2 comes first; rows 1 and 3 agree and are left out."""
    teacher = torch.tensor([[2.0, 0.0], [0.0, 2.0], [2.0, 0.0], [1.0, 0.0]])
    student = torch.tensor([[0.0, 1.0], [0.0, 5.0], [0.0, 3.0], [3.0, 0.0]])
    rows = disagreements(["a", "b", "c", "d"], torch.tensor([0, 1, 1, 0]), teacher, student,
                         SST2, idx=[10, 11, 12, 13])
    assert [r["idx"] for r in rows] == [12, 10]
    top = rows[0]
    assert set(top) == set(COLUMNS)
    assert (top["text"], top["label"], top["teacher"], top["student"]) == ("c", "pos", "neg",
                                                                           "pos")
    assert top["teacher_conf"] == pytest.approx(1 / (1 + math.exp(-2)), abs=1e-4)
    assert top["student_conf"] == pytest.approx(1 / (1 + math.exp(-3)), abs=1e-4)
    assert top["gap"] == pytest.approx(1 / (1 + math.exp(-2)) - 1 / (1 + math.exp(3)),
                                       abs=1e-4)
    assert [r["idx"] for r in disagreements(["a", "b", "c", "d"], torch.tensor([0, 1, 1, 0]),
                                            teacher, student, SST2, limit=1,
                                            idx=[10, 11, 12, 13])] == [12]


def test_disagreements_of_regression_rank_by_absolute_difference():
    rows = disagreements(["x", "y", "z"], torch.tensor([1.0, 2.0, 3.0]),
                         torch.tensor([[1.0], [2.0], [3.0]]), torch.tensor([[1.5], [0.0], [3.0]]),
                         STSB)
    assert [(r["idx"], r["gap"]) for r in rows] == [(1, 2.0), (0, 0.5), (2, 0.0)]
    assert rows[0]["teacher_conf"] is None and rows[0]["teacher"] == 2.0


def test_disagreements_refuse_mismatched_rows():
    with pytest.raises(ValueError, match="do not match"):
        disagreements(["a"], torch.tensor([0]), torch.zeros(2, 2), torch.zeros(2, 2), SST2)


def test_job_type_and_tags():
    assert pick_job_type(teacher=False) == "teacher"
    assert pick_job_type(teacher=True) == "student"
    assert pick_job_type(teacher=True, general=True) == "general"
    choices = {"task": "rte", "distill": "minilm", "student": "minilm_3l", "transfer": "none",
               "augment": "tinybert", "optimizer": "adamw"}
    assert run_tags({}, choices) == ["task:rte", "objective:minilm", "student:minilm_3l",
                                     "transfer:none", "augment:tinybert"]
    assert run_tags({"task": "sst2", "student": "tiny-student"}, {}) == [
        "task:sst2", "student:tiny-student"]


def _history(run: dict, key: str) -> list[float]:
    return [row[key] for row in run["history"] if key in row]


def test_wandb_offline_run_holds_results_figures_and_disagreements(make_cfg, tmp_path):
    """A KD run on STS-B (regression: every dev row is in the table, so it is never empty)
    logged offline: the summary's headline keys equal results.json, the job is a `student`
    with its task/student tags and group, and the table equals disagreements.csv."""
    results = train(make_cfg("task=stsb", "teacher=tiny", "distill=kd", "logger=wandb",
                             "group=g1", "trainer.log_every_n_steps=2",
                             "trainer.max_epochs=2", "callbacks.monitor.disagreements=5"))
    run_dir = tmp_path / "run"
    run = read_run(run_dir, wait=60)
    assert run["finished"]
    assert (run["group"], run["job_type"]) == ("g1", "student")
    assert run["tags"] == ["task:stsb", "student:tiny-student"]  # no Hydra app: no choices
    summary, student = run["summary"], results["student"]
    assert summary["score"] == student["score"] and summary["status"] == "ok"
    assert summary["teacher_score"] == results["teacher"]["score"]
    assert summary["retention"] == pytest.approx(results["retention"])
    assert summary["params"] == student["params"] and summary["size_mb"] > 0
    assert summary["train_seconds"] == results["train_seconds"]
    assert summary["student/score"] == student["score"]  # the flat results stay there too
    assert run["config"]["task/name"] == "stsb"
    # figures: lr per group, grad norm, throughput at the log interval; per validation
    assert len(_history(run, "train/lr_pg0")) == 8  # 64 rows / 8 = 8 steps x 2 epochs / 2
    assert all(v > 0 for v in _history(run, "train/grad_norm"))
    assert all(v > 0 for v in _history(run, "train/tokens_per_sec"))
    assert len(_history(run, "val/samples_per_sec")) == 2
    assert len(_history(run, "train/epoch_seconds")) == 2
    teacher = results["teacher"]["score"]
    assert _history(run, "teacher/score") == [pytest.approx(teacher)]
    scores = _history(run, "val/score")
    assert _history(run, "val/retention") == [pytest.approx(s / teacher) for s in scores]
    # the disagreement table: 5 rows, as the CSV beside results.json
    with open(run_dir / "disagreements.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 5 and list(rows[0]) == COLUMNS
    gaps = [float(r["gap"]) for r in rows]
    assert gaps == sorted(gaps, reverse=True)
    (table_file,) = run_dir.glob("wandb/offline-run-*/files/media/table/disagreements_*.json")
    table = json.loads(table_file.read_text())
    assert table["columns"] == COLUMNS
    assert [str(r[0]) for r in table["data"]] == [r["idx"] for r in rows]
    assert " ||| " in rows[0]["text"]  # a sentence pair


def test_every_logger_gets_the_figures(make_cfg, tmp_path):
    """The same figures reach the CSV logger, val/retention on val/score's row."""
    results = train(make_cfg("teacher=tiny", "distill=kd", "logger=csv",
                             "trainer.log_every_n_steps=2"))
    with open(tmp_path / "run" / "csv" / "metrics.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    columns = set(rows[0])
    assert {"train/lr_pg0", "train/grad_norm", "train/samples_per_sec", "train/tokens_per_sec",
            "train/epoch_seconds", "val/samples_per_sec", "val/tokens_per_sec",
            "val/retention", "teacher/score"} <= columns
    val = next(r for r in rows if r["val/score"])
    retention = next(r for r in rows if r["val/retention"])
    assert retention["step"] == val["step"]
    assert float(retention["val/retention"]) == pytest.approx(
        float(val["val/score"]) / results["teacher"]["score"])


def test_report_logged_as_one_report_run_in_the_sweep_group(tmp_path):
    """`log_report` reads a report folder: the W&B Table holds report.csv's rows, the
    score-vs-params scatter holds the students' points, each PNG is an image."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from litdistill.tables import render_csv
    from litdistill.wandb_report import log_report

    out = tmp_path / "sweep_2026"
    out.mkdir()
    rows = [{"kind": "teacher", "config": "teacher", "params": 1000, "score_mean": 0.9},
            {"kind": "student", "config": "student=a", "params": 100, "score_mean": 0.8,
             "score_std": 0.01, "score_n": 2},
            {"kind": "student", "config": "student=b", "params": 300, "score_mean": 0.85}]
    (out / "report.csv").write_text(render_csv(rows))
    (out / "report.md").write_text("| a |\n|---|\n")
    fig = plt.figure()
    fig.savefig(out / "score_vs_params.png")
    plt.close(fig)
    folder = log_report(out, mode="offline")
    run = read_run(folder, wait=60)
    assert (run["job_type"], run["group"], run["name"]) == ("report", "sweep_2026",
                                                            "report sweep_2026")
    media = Path(folder) / "files" / "media"
    (table_file,) = media.glob("table/report/table_*.table.json")
    table = json.loads(table_file.read_text())
    config, params = table["columns"].index("config"), table["columns"].index("params")
    assert [(r[config], r[params]) for r in table["data"]] == [
        ("teacher", 1000), ("student=a", 100), ("student=b", 300)]
    (scatter,) = media.glob("table/report/score_vs_params_table_*.table.json")
    assert json.loads(scatter.read_text())["data"] == [["student=a", 100, 0.8],
                                                       ["student=b", 300, 0.85]]
    assert list(media.glob("images/plots/score_vs_params_*.png"))
    assert not list(media.glob("table/report/score_vs_latency*"))  # no latency column values
    assert (Path(folder) / "files" / "report.md").is_file()
