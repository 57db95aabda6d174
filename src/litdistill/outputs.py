"""What a finished run leaves beside ``results.json``: the best student (``student/``) and its
dev predictions (``predictions.npz``), which the report's paired bootstrap intervals read.

``predictions.npz`` holds, per eval split ``<split>``, in the dev file's row order (sorted by
``idx``, the row's position in the validated dev file, so runs whose tokenizers order their
batches differently still line up row for row):

- ``idx.<split>``: (n,) int64 row ids;
- ``labels.<split>``: (n,) gold labels (class ids, or floats for regression);
- ``student.<split>``: (n, num_labels) float32 logits of the exported (best) student;
- ``teacher.<split>``: (n, num_labels) the teacher's logits, when the run had a teacher.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import datasets
import numpy as np
import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from litdistill import atomic
from litdistill.batching import TEACHER_LOGITS
from litdistill.reader import eval_batches, split_logits
from litdistill.tasks import TaskSpec


def export_student(student: PreTrainedModel, tokenizer: PreTrainedTokenizerBase,
                   task: TaskSpec | None, dest: Path) -> Path:
    """``save_pretrained`` model + tokenizer, with the task's label names (a general
    student has no task), written atomically."""
    if task is not None and task.label_names and not task.is_regression:
        student.config.id2label = dict(enumerate(task.label_names))
        student.config.label2id = {n: i for i, n in enumerate(task.label_names)}

    def fill(tmp: Path) -> None:
        student.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)

    return atomic.write_dir(dest, fill)


def dev_predictions(student: PreTrainedModel, tokenizer: PreTrainedTokenizerBase,
                    splits: Mapping[str, datasets.Dataset], eval_splits: list[str],
                    batch_size: int, device: torch.device | str = "cpu"
                    ) -> dict[str, np.ndarray]:
    """The arrays of ``predictions.npz`` (see the module docstring): one pass of the student
    over each eval split (the exported weights, whatever the last validation saw)."""
    arrays: dict[str, np.ndarray] = {}
    for split in eval_splits:
        data = splits[split]
        order = np.argsort(np.asarray(data["idx"]), kind="stable")
        logits = split_logits(student, eval_batches(data, tokenizer, batch_size),
                              rows=len(data), device=device)
        arrays[f"idx.{split}"] = np.asarray(data["idx"], dtype=np.int64)[order]
        arrays[f"labels.{split}"] = np.asarray(data["label"])[order]
        arrays[f"student.{split}"] = logits[order]
        if TEACHER_LOGITS in data.column_names:
            arrays[f"teacher.{split}"] = np.asarray(data[TEACHER_LOGITS],
                                                    dtype=np.float32)[order]
    return arrays


def write_predictions(path: Path, arrays: Mapping[str, np.ndarray]) -> Path:
    """``predictions.npz``, atomically."""

    def fill(tmp: Path) -> None:
        with open(tmp, "wb") as fh:  # a handle: np.savez would add .npz to a bare name
            np.savez(fh, **arrays)

    return atomic.write_file(path, fill)
