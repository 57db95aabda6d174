"""``RunDir``: a run dir's layout, results.json through one schema, one error for bad files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from litdistill import atomic, runs
from litdistill.rundir import SCHEMA_VERSION, RunDir, RunDirError, run_task

# A results.json as litdistill <= this change wrote it (no schema_version), key order kept.
OLD = {"status": "ok", "task": "sst2", "overrides": ["distill=kd", "seed=1"],
       "run_dir": "/x/0", "choices": {"task": "sst2"}, "config_sha": "ab" * 32,
       "metric_names": ["accuracy"], "label_names": None, "transfer": None,
       "teacher_gate": None, "teacher_cache": {"validation": {"key": "k", "hit": False}},
       "error": None, "student": {"name": "s", "params": 10, "score": 0.5,
                                  "metrics": {"accuracy": 0.5}, "agreement": 1.0},
       "teacher": None, "retention": None, "train_seconds": 1.5, "distill": {"alpha_kd": 0.5},
       "seed": 1, "best_checkpoint": None, "student_dir": "/x/0/student", "global_step": 4,
       "epochs": 1, "phase_starts": [["main", 0]], "epoch_seconds": [1.2]}


def test_results_written_before_read_back_and_reserialise_byte_for_byte(tmp_path) -> None:
    atomic.write_json(tmp_path / "results.json", OLD)
    before = (tmp_path / "results.json").read_bytes()
    run = RunDir(tmp_path)
    results = run.read_results()
    assert results == OLD and list(results) == list(OLD)
    run.write_results(results)
    assert (tmp_path / "results.json").read_bytes() == before


@pytest.mark.parametrize(("text", "why"), [
    ("{not json", "results.json is damaged (Expecting property name"),
    ("[1, 2]", "results.json is damaged (holds a list, not a mapping)"),
    ('{"status": "done"}', "status 'done' is none of ok, failed"),
    (json.dumps({"status": "ok", "schema_version": SCHEMA_VERSION + 1}), "upgrade litdistill"),
    ('{"status": "ok", "student": 3}', "student/teacher entry is no mapping"),
])
def test_a_damaged_results_json_is_one_clear_error(tmp_path, text, why) -> None:
    (tmp_path / "results.json").write_text(text)
    with pytest.raises(RunDirError, match=f"^{tmp_path}: ") as err:
        RunDir(tmp_path).read_results()
    assert why in str(err.value)
    assert RunDir(tmp_path).ok_results() is None  # skip_done: not done, run it again


def test_missing_files_name_the_folder(tmp_path) -> None:
    with pytest.raises(RunDirError, match="no results.json"):
        RunDir(tmp_path).read_results()
    with pytest.raises(RunDirError, match=r"no \.hydra/config\.yaml"):
        RunDir(tmp_path).read_config()
    (tmp_path / ".hydra").mkdir()
    (tmp_path / ".hydra" / "config.yaml").write_text("- a list\n")
    with pytest.raises(RunDirError, match="damaged"):
        RunDir(tmp_path).read_config()


def test_layout_paths(tmp_path) -> None:
    run = RunDir(str(tmp_path))
    assert run.last_checkpoint == tmp_path / "checkpoints" / "last.ckpt"
    assert run.onnx_path() == tmp_path / "export" / "model.onnx"
    assert run.onnx_path("int8", folder=tmp_path / "o") == tmp_path / "o" / "model.int8.onnx"
    assert run.export_json == tmp_path / "export" / "export.json"
    assert run.predictions_path == tmp_path / "predictions.npz"


def test_skip_done_reads_through_rundir(make_cfg, tmp_path) -> None:
    """An ok run of this config is done; a damaged results.json is not (it runs again)."""
    cfg = make_cfg("skip_done=true")
    out = tmp_path / "job"
    atomic.write_json(out / "results.json", {**OLD, "config_sha": runs.config_sha(cfg)})
    assert runs.finished(cfg, out)["seed"] == 1
    (out / "results.json").write_text('{"status": "ok", "config_')  # truncated
    assert runs.finished(cfg, out) is None


def test_run_task_takes_the_recorded_label_names(tmp_path) -> None:
    cfg = OmegaConf.create({"task": {"name": "custom", "text_fields": ["q"],
                                     "label_field": "y"}})
    task = run_task(cfg, {"status": "ok", "label_names": ["a", "b", "c"]}, tmp_path)
    assert task.label_names == ("a", "b", "c") and task.num_labels == 3
    with pytest.raises(RunDirError, match="records no label_names"):
        run_task(cfg, {"status": "ok", "label_names": None}, tmp_path)


def test_a_new_run_records_the_schema_version(make_cfg, tmp_path) -> None:
    cfg = make_cfg()
    with runs.RunRecord(cfg, Path(cfg.paths.output_dir)) as record:
        record.mark_ok(student=None)
        record.write()
    results = RunDir(cfg.paths.output_dir).read_results()
    assert list(results)[:2] == ["schema_version", "status"]
    assert results["schema_version"] == SCHEMA_VERSION and results["status"] == "ok"
