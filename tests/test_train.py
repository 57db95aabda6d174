"""End-to-end runs of ``train(cfg)`` on tiny models and tiny GLUE-layout data."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from transformers import pipeline

from litdistill.conf import CONF_DIR
from litdistill.errors import ConfigError
from litdistill.train import train

RESULT_KEYS = {"status", "task", "metric_names", "student", "teacher", "retention",
               "train_seconds", "error"}


def _read(run_dir: Path) -> dict:
    return json.loads((run_dir / "results.json").read_text())


def test_kd_run_writes_complete_results(make_cfg, tmp_path):
    results = train(make_cfg("teacher=tiny", "student=tiny", "distill=kd"))
    on_disk = _read(tmp_path / "run")
    assert on_disk == json.loads(json.dumps(results))
    assert RESULT_KEYS <= set(on_disk) and on_disk["status"] == "ok"
    assert on_disk["error"] is None and on_disk["metric_names"] == ["accuracy"]
    keys = {"name", "params", "score", "metrics"}
    assert set(on_disk["student"]) == keys | {"agreement", "vocab_size", "size_mb"}
    assert set(on_disk["teacher"]) == keys | {"path"}
    for who in ("student", "teacher"):
        entry = on_disk[who]
        assert 0.0 <= entry["score"] <= 1.0 and entry["params"] > 0
    assert 0.0 <= on_disk["student"]["agreement"] <= 1.0
    assert on_disk["teacher"]["path"] is None  # a random teacher has no weights folder
    assert len(on_disk["epoch_seconds"]) == 1 and 0 < on_disk["epoch_seconds"][0] < \
        on_disk["train_seconds"]
    assert on_disk["retention"] == pytest.approx(
        on_disk["student"]["score"] / on_disk["teacher"]["score"])
    assert (tmp_path / "run" / "checkpoints" / "last.ckpt").is_file()


def test_finished_run_is_skipped_and_never_overwritten_by_another_config(make_cfg, tmp_path,
                                                                         no_weights):
    """A rerun of the same config returns the stored results; another config is refused.

    Hydra numbers sweep jobs by position, so a changed sweep rerun into the same sweep dir
    would put another config into a finished job's folder: it must fail, bytes untouched.
    """
    run = tmp_path / "run"
    run.mkdir()
    cfg = make_cfg("teacher=tiny", "student=tiny", "distill=kd")
    from litdistill.runs import config_sha

    done = {"status": "ok", "task": "sst2", "overrides": ["distill=kd"],
            "config_sha": config_sha(cfg)}
    (run / "results.json").write_text(json.dumps(done))
    before = (run / "results.json").read_bytes()
    assert train(cfg) == done  # skipped: no_weights proves nothing was built
    with pytest.raises(ConfigError, match="finished run of another config"):
        train(make_cfg("teacher=tiny", "student=tiny", "distill=kd", "seed=7"))
    assert (run / "results.json").read_bytes() == before
    # resume=true continues in that folder on purpose (e.g. for more epochs): no refusal
    from litdistill.runs import finished

    assert finished(make_cfg("seed=7", "resume=true"), run) is None


def test_fine_tuning_learns_and_exports_a_pipeline_model(make_cfg, tmp_path,
                                                         word_tokenizer_dir):
    """A tiny student fine-tuned (no teacher) beats chance on the separable toy data.

    Constant lr 3e-3 for 12 epochs learns the one-sentiment-word rule for every seed tried
    (40-45 all reach 1.0), so the test does not hang on a lucky seed.
    """
    results = train(make_cfg("student=sized", "student.num_layers=2", "student.hidden=32",
                             "student.heads=2", "student.intermediate=64",
                             f"student.tokenizer_name={word_tokenizer_dir}",
                             "optimizer.lr=3e-3", "scheduler=none", "trainer.max_epochs=12"))
    assert results["teacher"] is None and results["retention"] is None
    assert results["student"]["score"] >= 0.75
    clf = pipeline("text-classification", model=str(tmp_path / "run" / "student"))
    out = clf(["a good film", "an awful plot"])
    assert {o["label"] for o in out} <= {"0", "1"}


def test_regression_and_pair_task(make_cfg):
    results = train(make_cfg("task=stsb", "teacher=tiny", "distill=kd"))
    assert set(results["student"]["metrics"]) == {"pearson", "spearmanr"}


def test_mnli_reports_matched_and_mismatched(make_cfg):
    results = train(make_cfg("task=mnli", "teacher=tiny", "distill=kd"))
    assert set(results["student"]["metrics"]) == {"accuracy_matched", "accuracy_mismatched"}


def test_from_teacher_student_and_exported_student_as_teacher(make_cfg, tmp_path):
    first = tmp_path / "teacher_run"
    train(make_cfg("student=sized", "student.num_layers=4", "student.hidden=32",
                   "student.heads=2", "student.intermediate=64", run_dir=first))
    results = train(make_cfg("teacher=pretrained", f"teacher.name_or_path={first}/student",
                             "student=from_teacher", "student.layers=[1,3]", "distill=kd"))
    assert results["status"] == "ok"
    assert results["student"]["params"] < results["teacher"]["params"]


EXPERIMENTS = sorted(p.stem for p in (Path(CONF_DIR) / "experiment").glob("*.yaml"))


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_every_experiment_config_runs_fast_dev_run(make_cfg, experiment):
    """Each shipped study composes and runs, with its models and task swapped for tiny ones."""
    results = train(make_cfg(f"experiment={experiment}", "task=sst2", "teacher=tiny",
                             "student=tiny", "trainer.fast_dev_run=true"))
    assert results["status"] == "ok"


# ---------------------------------------------------------------- bad input fails fast
def _bad_glue(tmp_path: Path, dev: str) -> Path:
    (tmp_path / "bad" / "SST-2").mkdir(parents=True)
    (tmp_path / "bad" / "SST-2" / "train.tsv").write_text("sentence\tlabel\ngood\t1\n")
    (tmp_path / "bad" / "SST-2" / "dev.tsv").write_text(dev)
    return tmp_path / "bad"


@pytest.mark.parametrize("overrides,message", [
    (["task.name=sst3"], "unknown task 'sst3'; known tasks: cola, sst2"),
    (["distill=kd"], "distillation needs a teacher"),
    (["data.glue_dir=/nonexistent"], "missing data file.*GLUE_DIR"),
    (["teacher=pretrained", "teacher.name_or_path=bert-base-uncased", "distill=kd"],
     "Hub is offline"),
    (["student=from_teacher"], "needs a teacher, or student.source"),
    (["resume=/no/such.ckpt"], "no such checkpoint"),
])
def test_bad_config_fails_before_weights(make_cfg, tmp_path, no_weights, overrides, message):
    with pytest.raises(ConfigError, match=message):
        train(make_cfg(*overrides))
    results = _read(tmp_path / "run")
    assert results["status"] == "failed" and "ConfigError" in results["error"]


def test_bad_labels_and_empty_split_fail_before_weights(make_cfg, tmp_path, no_weights):
    bad = _bad_glue(tmp_path, "sentence\tlabel\ngood\t3\n")
    with pytest.raises(ConfigError, match=r"dev\.tsv:2: label '3' is outside"):
        train(make_cfg(f"data.glue_dir={bad}"))
    (bad / "SST-2" / "dev.tsv").write_text("sentence\tlabel\n")
    with pytest.raises(ConfigError, match="empty"):
        train(make_cfg(f"data.glue_dir={bad}"))


def test_vocab_and_label_mismatch_fail_before_weights(make_cfg, tmp_path, word_tokenizer_dir,
                                                      no_weights):
    with pytest.raises(ConfigError, match="vocabularies differ"):
        train(make_cfg("teacher=tiny", "student=sized", "distill=kd",
                       f"student.tokenizer_name={word_tokenizer_dir}"))


def _cli(args: list[str], cwd: Path, timeout: int = 240) -> subprocess.CompletedProcess:
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", WANDB_MODE="offline")
    return subprocess.run([sys.executable, "-m", "litdistill.train", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)


def test_cli_bad_input_is_one_line_and_nonzero(tmp_path, tiny_glue):
    proc = _cli(["task.name=nope", f"data.glue_dir={tiny_glue}"], tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1].startswith("error: unknown task 'nope'")
    assert "Traceback" not in proc.stderr


def test_ddp_inside_multirun_is_refused(tmp_path, tiny_glue):
    proc = _cli(["--multirun", "hardware=ddp_cpu", "student=tiny", f"data.glue_dir={tiny_glue}",
                 "logger=none", f"hydra.sweep.dir={tmp_path}/sweep"], tmp_path)
    assert proc.returncode == 2
    assert "cannot run inside a --multirun" in proc.stderr and "submitit" in proc.stderr


@pytest.mark.parametrize("logger", ["csv", "tensorboard", "wandb"])
def test_loggers_write_offline_and_finish(make_cfg, tmp_path, logger, monkeypatch):
    """Each logger writes into the run dir; W&B runs offline and is closed after the job."""
    import wandb

    from litdistill import runs

    summary, real_finish = {}, runs.finish_wandb

    def finish_and_keep_summary() -> None:
        if wandb.run is not None:
            summary.update(dict(wandb.run.summary), group=wandb.run.group)
        real_finish()

    monkeypatch.setattr(runs, "finish_wandb", finish_and_keep_summary)
    results = train(make_cfg("teacher=tiny", "distill=kd", f"logger={logger}", "group=g1",
                             "trainer.log_every_n_steps=1"))
    assert results["status"] == "ok"
    run = tmp_path / "run"
    if logger == "csv":
        assert "train/loss_kd" in (run / "csv" / "metrics.csv").read_text().splitlines()[0]
    elif logger == "tensorboard":
        assert list((run / "tensorboard").glob("events.out.tfevents.*"))
    else:
        assert list((run / "wandb").glob("offline-run-*"))
        assert wandb.run is None
        # summary = results.json, flattened; the run sits in its sweep's group
        assert summary["student/score"] == results["student"]["score"]
        assert summary["status"] == "ok" and summary["group"] == "g1"


def test_wandb_mode_never_waits_without_a_key(monkeypatch):
    from litdistill.loggers import wandb_mode

    monkeypatch.setenv("WANDB_MODE", "offline")
    assert wandb_mode("auto") == "offline"
    monkeypatch.delenv("WANDB_MODE")
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("HOME", "/nonexistent")  # no ~/.netrc either
    assert wandb_mode("auto") == "offline"
    assert wandb_mode("disabled") == "disabled"


def test_experiment_values_override_defaults(make_cfg):
    """``_self_`` comes first in train.yaml, so an experiment's data settings win."""
    cfg = make_cfg("experiment=demo_teacher")
    assert cfg.data.max_train_samples == 2000 and cfg.data.max_length == 64
    assert make_cfg("experiment=demo_teacher", "data.max_length=32").data.max_length == 32
    # The demo's baseline: distill=none must really switch KD off under the experiment.
    assert make_cfg("experiment=demo_student", "distill=none").distill.alpha_kd == 0.0
    assert make_cfg("experiment=demo_student").distill.alpha_kd > 0.0


def test_bf16_autocast_live_teacher_and_fixed_padding_run_on_cpu(make_cfg, tmp_path):
    """The GPU path's code on CPU: bf16 autocast with a live (bf16) teacher, and padding every
    batch to max_length (the padding benchmark's baseline)."""
    results = train(make_cfg("teacher=tiny", "distill=kd", "teacher_cache=off",
                             "trainer.precision=bf16-mixed", "data.padding=max_length",
                             "data.max_length=24"))
    assert results["status"] == "ok" and 0.0 <= results["student"]["score"] <= 1.0
    assert results["teacher_cache"]["mode"] == "off"


def test_bad_padding_is_refused(make_cfg, no_weights):
    with pytest.raises(ConfigError, match="data.padding"):
        train(make_cfg("data.padding=dynamic"))


@pytest.mark.slow
def test_compiled_student_trains_and_exports(make_cfg, tmp_path):
    results = train(make_cfg("compile=true", "teacher=tiny", "distill=kd"))
    assert results["status"] == "ok"
    assert (tmp_path / "run" / "student" / "model.safetensors").is_file()
