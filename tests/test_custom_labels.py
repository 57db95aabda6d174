"""Custom tasks read their classes from the training file (issue: bring your own data)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from litdistill.errors import ConfigError
from litdistill.tasks import get_task
from litdistill.train import train

COARSE = ["NUM", "LOC", "HUM", "DESC", "ENTY", "ABBR"]  # TREC's six, deliberately unsorted
WORDS = {"NUM": "how many", "LOC": "where is", "HUM": "who was", "DESC": "what is",
         "ENTY": "what kind", "ABBR": "what does stand"}


def _trec(path: Path, n: int, labels: list[str]) -> Path:
    with path.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["question", "coarse"])
        for i in range(n):
            label = labels[i % len(labels)]
            writer.writerow([f"{WORDS.get(label, 'what')} the thing {i}", label])
    return path


def _custom(tmp_path: Path, dev_labels: list[str] | None = None) -> list[str]:
    train_file = _trec(tmp_path / "train.csv", 48, COARSE)
    dev_file = _trec(tmp_path / "dev.csv", 12, dev_labels or COARSE)
    return ["task=custom", f"task.data_files.train={train_file}",
            f"task.data_files.validation={dev_file}", "task.text_fields=[question]",
            "task.label_field=coarse", "student=tiny"]


def test_string_labels_are_read_from_the_training_file(make_cfg, tmp_path):
    """Six string classes, no label_names/num_labels: sorted, trained, recorded, exported."""
    results = train(make_cfg(*_custom(tmp_path)))
    assert results["status"] == "ok"
    assert results["label_names"] == sorted(COARSE)
    config = json.loads((Path(results["student_dir"]) / "config.json").read_text())
    assert config["id2label"] == {str(i): n for i, n in enumerate(sorted(COARSE))}


def test_label_names_imply_num_labels_and_conflicts_fail_early(make_cfg, tmp_path, no_weights):
    task = get_task({"name": "custom", "text_fields": ["q"], "label_names": COARSE})
    assert task.num_labels == 6 and not task.infer_labels
    with pytest.raises(ConfigError, match="6 names but task.num_labels=2"):
        train(make_cfg(*_custom(tmp_path), f"task.label_names=[{','.join(COARSE)}]",
                       "task.num_labels=2"))


def test_a_dev_label_unseen_in_training_fails_before_weights(make_cfg, tmp_path, no_weights):
    with pytest.raises(ConfigError, match=r"dev.csv: row \d+: label 'OTHER' never occurs in "
                                          r"the training file .*train.csv"):
        train(make_cfg(*_custom(tmp_path, dev_labels=["NUM", "OTHER"])))


def test_integer_labels_sort_numerically_and_regression_stays_explicit(tmp_path):
    from litdistill.tasks import with_labels_from

    task = get_task({"name": "custom", "text_fields": ["q"]})
    assert task.infer_labels
    assert with_labels_from(task, [10, 2, 1, 2], "f").label_names == ("1", "2", "10")
    with pytest.raises(ConfigError, match="at least 2 classes"):
        with_labels_from(task, ["a", "a"], "f")
    with pytest.raises(ConfigError, match="row\\(s\\) \\[2\\] have no 'label'"):
        with_labels_from(task, ["a", None], "f")
    with pytest.raises(ConfigError, match="label_names is for classification"):
        get_task({"name": "custom", "text_fields": ["q"], "is_regression": True,
                  "label_names": ["a", "b"]})
    with pytest.raises(ConfigError, match="binary metrics"):
        with_labels_from(get_task({"name": "custom", "text_fields": ["q"], "metrics": ["f1"]}),
                         ["a", "b", "c"], "f")


def test_inferred_label_run_exports_to_int8_onnx(make_cfg, tmp_path):
    """The classes a run read from its training file are the ones export scores with: its
    config names none (export once rebuilt the task from the config: num_classes 0)."""
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    from omegaconf import OmegaConf

    from litdistill.export import main

    cfg = make_cfg(*_custom(tmp_path))
    results = train(cfg)
    run_dir = Path(results["run_dir"])
    (run_dir / ".hydra").mkdir()
    OmegaConf.save(cfg, run_dir / ".hydra" / "config.yaml")  # as litdistill-train leaves it
    assert "label_names" not in cfg.task or not cfg.task.label_names
    assert main([str(run_dir), "--quantize", "int8"]) == 0
    info = json.loads((run_dir / "export" / "export.json").read_text())
    assert info["task"] == "custom" and info["checks"]["rows"] == 12
    assert info["checks"]["fp32"]["agreement"] == 1.0
    # The graph's score is the run's own: the same 12 dev rows, the same six classes.
    assert info["checks"]["reproduces_run_score"] is True
    assert set(info["scores"]) == {"pytorch", "fp32", "int8"}
    assert 0.0 <= info["scores"]["int8"]["score"] <= 1.0
