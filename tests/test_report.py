"""``litdistill-report`` on a hand-built sweep folder: table, CSV, plots, failures, latency."""

from __future__ import annotations

import csv
import json
import statistics
from pathlib import Path

import pytest
import yaml

from litdistill import plots, report

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
COMMON = ["data.max_train_samples=16", "paths.cache_dir=/somewhere/cache",
          "hydra.job.chdir=false"]
# Two configurations x 3 seeds with known scores, one single-seed configuration whose student
# folder is gone, a failed job and a killed one.
KD = {"overrides": ["distill=kd", "distill.temperature=4"], "choices": {"distill": "kd"},
      "distill": {"temperature": 4.0, "alpha_kd": 0.5, "alpha_task": 0.5},
      "scores": [0.81, 0.83, 0.86], "agreement": [0.90, 0.92, 0.95]}
NONE = {"overrides": ["distill=none"], "choices": {"distill": "none"},
        "distill": {"temperature": 1.0, "alpha_kd": 0.0, "alpha_task": 1.0},
        "scores": [0.70, 0.74, 0.71], "agreement": [0.80, 0.85, 0.83]}
GONE = {"overrides": ["distill=kd", "distill.temperature=1"], "choices": {"distill": "kd"},
        "distill": {"temperature": 1.0, "alpha_kd": 0.5, "alpha_task": 0.5},
        "scores": [0.77], "agreement": [0.88]}
TEACHER_SCORE = 0.9
ERROR = "ConfigError: teacher vocabulary (30522) != student vocabulary (100)"


def _save_tiny(folder: Path, tokenizer_dir: Path) -> int:
    from transformers import BertConfig, BertForSequenceClassification, BertTokenizer

    tokenizer = BertTokenizer.from_pretrained(tokenizer_dir)
    model = BertForSequenceClassification(BertConfig(
        vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
        intermediate_size=64, max_position_embeddings=128, num_labels=2))
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return sum(p.numel() for p in model.parameters())


def _write_job(job_dir: Path, results: dict, overrides: list[str]) -> None:
    (job_dir / ".hydra").mkdir(parents=True)
    (job_dir / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    (job_dir / "results.json").write_text(json.dumps(results))


@pytest.fixture(scope="module")
def sweep(tmp_path_factory: pytest.TempPathFactory, word_tokenizer_dir: Path) -> Path:
    root = tmp_path_factory.mktemp("report")
    sweep_dir = root / "multirun" / "2025-01-01_00-00-00"
    teacher_dir = root / "teacher"
    params = _save_tiny(teacher_dir, word_tokenizer_dir)
    num = 0
    for config in (KD, NONE, GONE):
        for seed, (score, agreement) in enumerate(zip(config["scores"], config["agreement"])):
            job_dir = sweep_dir / str(num)
            overrides = [*COMMON, *config["overrides"], f"seed={seed}"]
            student_dir = job_dir / "student"
            if config is not GONE:
                _save_tiny(student_dir, word_tokenizer_dir)
            results = {
                "status": "ok", "error": None, "task": "sst2", "metric_names": ["accuracy"],
                "overrides": overrides, "choices": config["choices"], "seed": seed,
                "distill": config["distill"], "retention": score / TEACHER_SCORE,
                "student": {"name": "tiny-student", "params": params, "score": score,
                            "metrics": {"accuracy": score}, "agreement": agreement,
                            "vocab_size": 4820},
                "teacher": {"name": "tiny-teacher", "params": params, "score": TEACHER_SCORE,
                            "metrics": {"accuracy": TEACHER_SCORE}, "path": str(teacher_dir)},
                "train_seconds": 10.0 + seed, "student_dir": str(student_dir),
                "global_step": 4, "epochs": 1}
            if (config, seed) == (NONE, 1):  # an older file: no choices, overrides, agreement
                for key in ("choices", "overrides"):
                    del results[key]
                del results["student"]["agreement"]
            _write_job(job_dir, results, overrides)
            num += 1
    _write_job(sweep_dir / str(num), {
        "status": "failed", "error": ERROR + "\n  at line 2 of the traceback", "task": "sst2",
        "overrides": [*COMMON, "teacher=pretrained", "seed=0"], "student": None,
        "teacher": None, "retention": None}, [*COMMON, "teacher=pretrained", "seed=0"])
    killed = sweep_dir / str(num + 1)  # started (Hydra wrote .hydra/) but never finished
    (killed / ".hydra").mkdir(parents=True)
    (killed / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(["student=big", "seed=0"]))
    assert report.main([str(sweep_dir), "--repeats", "2"]) == 0
    return sweep_dir


def _csv(folder: Path) -> list[dict[str, str]]:
    with (folder / "report.csv").open() as fh:
        return list(csv.DictReader(fh))


def _row(rows: list[dict[str, str]], config: str) -> dict[str, str]:
    (row,) = [r for r in rows if r["kind"] == "student" and r["config"] == config]
    return row


def test_csv_holds_mean_sample_std_and_n_per_configuration(sweep: Path) -> None:
    rows = _csv(sweep)
    for config, label in ((KD, "distill.temperature=4 distill=kd"), (NONE, "distill=none")):
        row = _row(rows, label)
        assert float(row["score_mean"]) == statistics.mean(config["scores"])
        assert float(row["score_std"]) == statistics.stdev(config["scores"])
        assert int(row["score_n"]) == 3
        assert row["seeds"] == "0;1;2"
        retention = [s / TEACHER_SCORE for s in config["scores"]]
        assert float(row["retention_mean"]) == pytest.approx(statistics.mean(retention))
    assert float(_row(rows, "distill.temperature=4 distill=kd")["temperature"]) == 4.0
    assert _row(rows, "distill=none")["objective"] == "none"
    # the old file (seed 1) has no agreement: the mean is over the seeds that have it
    none = _row(rows, "distill=none")
    assert int(none["agreement_n"]) == 2
    assert float(none["agreement_mean"]) == statistics.mean(NONE["agreement"][::2])
    gone = _row(rows, "distill.temperature=1 distill=kd")
    assert (gone["score_n"], gone["score_std"]) == ("1", "")
    assert none["vocab"] == "4820"  # the student's kept vocabulary (the teacher's: unrecorded)
    assert [r["vocab"] for r in rows if r["kind"] == "teacher"] == [""]
    assert "| 4.8k |" in (sweep / "report.md").read_text()


def test_teacher_reference_row_is_deduplicated_and_timed(sweep: Path) -> None:
    teachers = [r for r in _csv(sweep) if r["kind"] == "teacher"]
    assert len(teachers) == 1
    assert float(teachers[0]["score_mean"]) == TEACHER_SCORE
    assert float(teachers[0]["latency_ms_b1"]) > 0
    assert float(teachers[0]["throughput_b32"]) > 0


def test_latency_measured_for_students_and_blank_when_folder_missing(sweep: Path) -> None:
    rows = _csv(sweep)
    assert float(_row(rows, "distill=none")["latency_ms_b1"]) > 0
    assert _row(rows, "distill.temperature=1 distill=kd")["latency_ms_b1"] == ""
    md = (sweep / "report.md").read_text()
    assert "## Latency notes" in md and "is missing; latency left blank" in md
    assert "threads=1" in md and "torch" in md


def test_markdown_table_failed_jobs_and_plots(sweep: Path) -> None:
    md = (sweep / "report.md").read_text()
    assert "| distill.temperature=4 distill=kd | sst2 | tiny-student |" in md
    kd = KD["scores"]
    assert f"{statistics.mean(kd):.4f} ± {statistics.stdev(kd):.4f} | 3 |" in md
    assert "| 0.7700 | 1 |" in md  # a single seed: no "± std"
    assert "teacher (reference)" in md
    assert "## Failed jobs (2)" in md
    assert f"`{sweep / '7'}` `teacher=pretrained`: {ERROR}" in md  # jobs 0-6 are ok
    assert "line 2 of the traceback" not in md
    assert f"`{sweep / '8'}` `student=big`: no results.json (still running, or killed)" in md
    assert "litdistill-report " in md and "--repeats 2" in md
    for name in report.PLOTS:
        png = sweep / f"{name}.png"
        assert f"]({name}.png)" in md
        assert png.stat().st_size > 1000 and png.read_bytes()[:8] == PNG_MAGIC
    assert not list(sweep.glob(".*tmp*"))  # temp files renamed away


def test_no_latency_skips_timing_and_latency_plot(sweep: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert report.main([str(sweep), "--out", str(out), "--no-latency"]) == 0
    rows = _csv(out)
    assert all(r["latency_ms_b1"] == "" for r in rows)
    md = (out / "report.md").read_text()
    assert "not measured (--no-latency)" in md
    assert "score vs CPU latency (batch 1): skipped" in md
    assert not (out / "score_vs_latency.png").exists()
    assert (out / "score_vs_params.png").read_bytes()[:8] == PNG_MAGIC


def test_bad_input_exits_2_with_a_clear_message(tmp_path: Path, capsys) -> None:
    assert report.main([str(tmp_path / "nope")]) == 2
    assert "nope: no such folder" in capsys.readouterr().err
    (tmp_path / "empty" / "0").mkdir(parents=True)
    assert report.main([str(tmp_path / "empty"), "--no-latency"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "no results.json under it" in err
    assert not (tmp_path / "empty" / "report.md").exists()


def test_config_key_drops_seed_hydra_and_paths() -> None:
    key = report.config_key(["seed=3", "+seed=4", "hydra.job.chdir=false", "paths.x=1",
                             "hydra/launcher=joblib", "distill=kd", "student.hidden=32"])
    assert key == ("distill=kd", "student.hidden=32")


def test_pareto_front_hand_example() -> None:
    """Cost/score pairs; the front climbs in score as cost grows.

    a (1, .60) front: cheapest.  b (2, .55) beaten by a.  c (3, .70) front.
    d (3, .65) beaten by c (same cost).  e (5, .70) beaten by c (same score, costlier).
    f (8, .90) front.  g (8, .90) duplicate of f: only the first kept.
    """
    costs = [1, 2, 3, 3, 5, 8, 8]
    scores = [0.60, 0.55, 0.70, 0.65, 0.70, 0.90, 0.90]
    assert plots.pareto_front(costs, scores) == [0, 2, 5]
    assert plots.pareto_front([], []) == []


def test_plots_give_each_task_its_own_panel_and_pareto_front() -> None:
    """Scores of different tasks do not compare, so fronts are drawn per task.

    cola: a (1 param, .30), teacher (4, .50). sst2: b (2, .80), c (3, .90), d (3, .85),
    teacher (4, .95). One front over both tasks would drop the cola teacher (beaten by c);
    per task it is on cola's front, and d is off sst2's.
    """
    def row(task, kind, params, score, config):
        return {"task": task, "kind": kind, "params": params, "score_mean": score,
                "config": config, "objective": "kd" if kind == "student" else "teacher"}

    rows = [row("cola", "teacher", 4, 0.5, "teacher (reference)"),
            row("sst2", "teacher", 4, 0.95, "teacher (reference)"),
            row("cola", "student", 1, 0.30, "task=cola distill=kd student=a"),
            row("sst2", "student", 2, 0.80, "task=sst2 distill=kd student=b"),
            row("sst2", "student", 3, 0.90, "task=sst2 distill=kd student=c"),
            row("sst2", "student", 3, 0.85, "task=sst2 distill=kd student=d"),
            row("mnli", "teacher", 4, 0.8, "teacher (reference)")]  # no student: no panel
    panels = plots.plot_panels(rows, "params", "score", front=True)
    assert list(panels) == ["cola", "sst2"]
    for task, (pts, front) in panels.items():
        assert {r["task"] for r in pts} == {task}
        assert sum(r["kind"] == "teacher" for r in pts) == 1
    cola, sst2 = panels["cola"], panels["sst2"]
    assert [cola[0][i]["config"] for i in cola[1]] == ["task=cola distill=kd student=a",
                                                       "teacher (reference)"]
    assert [sst2[0][i]["config"] for i in sst2[1]] == [
        "task=sst2 distill=kd student=b", "task=sst2 distill=kd student=c",
        "teacher (reference)"]
    labels = plots._labels(sst2[0])  # what all of a panel's points share is left out
    assert sorted(labels.values()) == ["student=b", "student=c", "student=d"]
    assert plots.plot_panels(rows, "params", "score", front=False)["sst2"][1] == []


def _job(task: str, distill: str, seed: int, score: float, teacher: float) -> dict:
    overrides = [f"task={task}", f"teacher.name_or_path=/t/{task}", f"distill={distill}",
                 "data.max_train_samples=100", f"seed={seed}"]
    return {"status": "ok", "task": task, "overrides": overrides, "seed": seed,
            "choices": {"distill": distill}, "distill": {"alpha_kd": 0.5 * (distill != "none")},
            "retention": score / teacher, "job_dir": f"/j/{task}/{distill}/{seed}",
            "student": {"name": "s", "params": 10, "score": score},
            "teacher": {"name": "t", "params": 20, "score": teacher, "path": f"/t/{task}"}}


def test_paired_gains_and_scores_by_task():
    """KD minus baseline per seed: rte gains (0.62-0.60, 0.66-0.61) = (+2, +5) points, mean
    +3.5, sample std sqrt(((2-3.5)^2 + (5-3.5)^2) / 1) = 2.12; cola loses 1 point on its one
    shared seed (seed 3 has no baseline, so it is not paired)."""
    jobs = [_job("rte", "none", 1, 0.60, 0.70), _job("rte", "none", 2, 0.61, 0.70),
            _job("rte", "kd", 1, 0.62, 0.70), _job("rte", "kd", 2, 0.66, 0.70),
            _job("cola", "none", 1, 0.30, 0.40), _job("cola", "kd", 1, 0.29, 0.40),
            _job("cola", "kd", 3, 0.35, 0.40)]
    rows, common = report.build_rows(jobs)
    kd = {r["task"]: r for r in rows if r["kind"] == "student" and not r["baseline"]}
    assert kd["rte"]["gain_mean"] == pytest.approx(0.035)
    assert kd["rte"]["gain_std"] == pytest.approx(statistics.stdev([0.02, 0.05]))
    assert kd["cola"]["gain_mean"] == pytest.approx(-0.01) and kd["cola"]["gain_n"] == 1
    assert all("gain_mean" not in r for r in rows if r.get("baseline"))
    # one recipe across tasks: the task and per-task teacher folder are not part of it
    assert kd["rte"]["recipe"] == kd["cola"]["recipe"] == ("data.max_train_samples=100",
                                                         "distill=kd")
    from litdistill import tables

    gains = "\n".join(tables.render_gains(rows, common))
    assert "| distill=kd | 2 | 1/2 | +1.25 |" in gains  # (+3.5 - 1.0) / 2
    by_task = "\n".join(tables.render_by_task(rows, common))
    assert "| teacher | 40.0 | 70.0 | | |" in by_task
    # kd: cola mean of 0.29, 0.35; rte of 0.62, 0.66; mean over tasks (0.32 + 0.64) / 2
    assert "| distill=kd | 32.0 ± 4.2 (2) | 64.0 ± 2.8 (2) | 48.0 |" in by_task


def test_teacher_row_takes_its_size_from_any_job_that_recorded_it():
    """A no-KD job read first may not have loaded the teacher (params None): the teacher's
    reference row still gets its params and vocabulary from a later job."""
    first, later = _job("rte", "none", 1, 0.60, 0.70), _job("rte", "kd", 1, 0.62, 0.70)
    first["teacher"]["params"] = None
    later["teacher"]["vocab_size"] = 30522
    rows, _ = report.build_rows([first, later])
    (teacher,) = [r for r in rows if r["kind"] == "teacher"]
    assert (teacher["params"], teacher["vocab"], len(teacher["jobs"])) == (20, 30522, 2)


def test_no_pairs_no_gain_section(sweep):
    """A sweep without a baseline of the same configuration gets no gain section."""
    from litdistill import tables

    rows, common = report.build_rows([_job("rte", "kd", 1, 0.6, 0.7)])
    assert tables.render_gains(rows, common) == []
    assert tables.render_by_task(rows, common) == []


def test_report_gives_each_gain_a_paired_bootstrap_interval(tmp_path):
    """Job folders with predictions.npz: the report's intervals are exactly those
    :func:`paired_interval` gives on the same predictions (KD seed s vs baseline seed s;
    student vs its job's teacher logits), and a gain whose interval excludes 0 is marked."""
    import numpy as np

    from litdistill.bootstrap import Split, paired_interval
    from litdistill.outputs import write_predictions
    from litdistill.rundir import RunDir

    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 400)

    def logits(accuracy: float) -> np.ndarray:
        right = rng.random(400) < accuracy
        pred = np.where(right, labels, 1 - labels)
        return np.eye(2, dtype=np.float32)[pred]

    teacher = logits(0.9)
    predictions = {}
    for i, job in enumerate([_job("rte", d, s, 0.0, 0.9) for d in ("none", "kd")
                             for s in (1, 2)]):
        student = logits(0.6 if job["distill"]["alpha_kd"] == 0 else 0.8)
        job_dir = tmp_path / "sweep" / str(i)
        job["student"]["score"] = float((student.argmax(-1) == labels).mean())
        job["metric_names"] = ["accuracy"]
        RunDir(job_dir).write_results({k: v for k, v in job.items() if k != "job_dir"})
        write_predictions(RunDir(job_dir).predictions_path, {
            "idx.validation": np.arange(400), "labels.validation": labels,
            "student.validation": student, "teacher.validation": teacher})
        predictions[(job["choices"]["distill"], job["seed"])] = student
    out = report.report([tmp_path / "sweep"], tmp_path / "out", latency=False,
                        reference="distill=none")
    kd = next(r for r in out["rows"] if r["kind"] == "student" and not r["baseline"])

    def runs(distill: str) -> list[list[Split]]:
        return [[Split(predictions[(distill, s)].argmax(-1), labels)] for s in (1, 2)]

    assert kd["ci_baseline"] == paired_interval(["accuracy"], runs("kd"), runs("none"))
    assert kd["ci_teacher"] == paired_interval(["accuracy"], runs("kd"),
                                               [[Split(teacher.argmax(-1), labels)]] * 2)
    assert kd["ci_baseline"].excludes_zero and kd["ci_baseline"].low > 0.1
    # --reference distill=none: the one configuration of the task with that override
    assert kd["ci_reference"] == kd["ci_baseline"] and "distill=none" in kd["reference"]
    text = (tmp_path / "out" / "report.md").read_text()
    assert "## Gains with 95% confidence intervals" in text
    table = (tmp_path / "out" / "intervals.csv").read_text().splitlines()
    assert table[0].startswith("task,config,versus,gain,low,high")
    assert sum(line.split(",")[2] == "baseline" for line in table[1:]) == 1
    assert sum(line.split(",")[2] == "reference" for line in table[1:]) == 1


def test_exported_graphs_are_points_of_the_size_and_latency_fronts():
    """An int8 graph (smaller on disk, same score) dominates its fp32 student in MB: it is on
    the MB front; the params plot leaves graphs out (a graph has its student's params)."""
    from litdistill.plots import plot_panels

    student = {"kind": "student", "task": "sst2", "config": "student=a", "params": 100,
               "size_mb": 60.0, "latency_ms_b1": 5.0, "score_mean": 0.80}
    graph = {"kind": "export", "task": "sst2", "config": "student=a [onnx int8]",
             "params": 100, "size_mb": 16.0, "latency_ms_b1": 1.0, "score_mean": 0.80}
    pts, front = plot_panels([student, graph], "size_mb", "score", front=True)["sst2"]
    assert [pts[i]["kind"] for i in front] == ["export"]
    pts, front = plot_panels([student, graph], "latency_ms_b1", "score", front=True)["sst2"]
    assert len(pts) == 2 and [pts[i]["kind"] for i in front] == ["export"]


def test_report_callback_logs_the_sweep_to_wandb_only_when_asked(sweep, tmp_path, monkeypatch):
    import shutil

    from omegaconf import OmegaConf

    copy = tmp_path / "sweep"
    shutil.copytree(sweep, copy)
    calls = []
    monkeypatch.setattr("litdistill.wandb_report.log_report",
                        lambda out, **kwargs: calls.append(Path(out)))
    cfg = OmegaConf.create({"hydra": {"sweep": {"dir": str(copy)}}})
    report.ReportCallback(latency=False).on_multirun_end(cfg)
    assert calls == [] and (copy / "report.md").is_file()
    report.ReportCallback(latency=False, wandb=True).on_multirun_end(cfg)
    assert calls == [copy]
