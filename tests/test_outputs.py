"""``predictions.npz``: the dev predictions a finished run leaves for the report's intervals."""

from __future__ import annotations

import numpy as np
import pytest

from litdistill.bootstrap import Split, metric
from litdistill.rundir import RunDir, RunDirError
from litdistill.train import train


def test_kd_run_records_dev_predictions_that_reproduce_its_scores(make_cfg, tmp_path):
    """The saved student logits score exactly what results.json says the student scored, the
    teacher's what it says the teacher scored, and the rows are in dev-file order."""
    results = train(make_cfg("teacher=tiny", "student=tiny", "distill=kd",
                             "trainer.max_epochs=2"))
    arrays = RunDir(results["run_dir"]).read_predictions()
    idx, labels = arrays["idx.validation"], arrays["labels.validation"]
    assert list(idx) == sorted(idx) and len(idx) == 32
    everything = np.ones((1, len(labels)), dtype=np.int64)
    for side in ("student", "teacher"):
        logits = arrays[f"{side}.validation"]
        assert logits.shape == (32, 2) and logits.dtype == np.float32
        accuracy = metric("accuracy", Split(logits.argmax(-1), labels), everything)[0]
        assert accuracy == pytest.approx(results[side]["metrics"]["accuracy"], abs=1e-6)


def test_damaged_predictions_are_one_clear_error(tmp_path):
    run = RunDir(tmp_path)
    assert run.read_predictions() is None
    run.predictions_path.write_bytes(b"not a zip")
    with pytest.raises(RunDirError, match="predictions.npz is damaged"):
        run.read_predictions()
