"""Where a student and its teacher disagree: the dev rows, most different first.

:func:`disagreements` is pure (texts, labels, both models' logits -> rows);
:func:`write_csv` writes them for any reader, and :mod:`litdistill.monitors` logs them as a
W&B Table at the end of a distillation run.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from litdistill import atomic
from litdistill.tasks import TaskSpec

COLUMNS = ["idx", "text", "label", "teacher", "teacher_conf", "student", "student_conf", "gap"]


def _name(task: TaskSpec, value: float | int) -> str | float:
    if task.is_regression:
        return round(float(value), 4)
    names = task.label_names
    return names[int(value)] if names and 0 <= int(value) < len(names) else int(value)


def disagreements(texts: Sequence[str], labels: Tensor, teacher_logits: Tensor,
                  student_logits: Tensor, task: TaskSpec, limit: int = 200,
                  idx: Sequence[int] | None = None) -> list[dict[str, Any]]:
    """The rows where student and teacher disagree, most different first, at most ``limit``.

    Classification: rows whose predicted classes differ, ranked by the total variation
    distance between the two softmax distributions (``0.5 * sum |p_t - p_s|``, in [0, 1]);
    each model's confidence is its probability of the class it predicts. Regression: every
    row, ranked by ``|t - s|``; no confidences.

    Args:
        texts: (N,) the rows' texts (a pair joined by the caller).
        labels: (N,) gold class ids or (N,) float targets.
        teacher_logits: (N, C) (regression: (N, 1)).
        student_logits: (N, C), same rows in the same order.
        task: Label names and regression flag.
        limit: Most rows returned.
        idx: (N,) row ids in the dev file (default: positions).

    Returns:
        Dicts with the keys of :data:`COLUMNS`.
    """
    t, s = teacher_logits.float().cpu(), student_logits.float().cpu()
    if t.shape != s.shape or t.shape[0] != len(texts) or len(labels) != len(texts):
        raise ValueError(f"disagreements: {len(texts)} texts, labels {tuple(labels.shape)}, "
                         f"teacher {tuple(t.shape)}, student {tuple(s.shape)} do not match")
    if task.is_regression:
        t_pred, s_pred = t.reshape(-1), s.reshape(-1)
        gap = (t_pred - s_pred).abs()
        t_conf = s_conf = None
        differ = torch.ones_like(gap, dtype=torch.bool)
    else:
        p_t, p_s = t.softmax(-1), s.softmax(-1)
        t_conf, t_pred = p_t.max(-1)
        s_conf, s_pred = p_s.max(-1)
        gap = 0.5 * (p_t - p_s).abs().sum(-1)
        differ = t_pred != s_pred
    rows = [i for i in differ.nonzero().flatten().tolist()]
    rows.sort(key=lambda i: (-float(gap[i]), i))  # stable: ties keep file order
    out = []
    for i in rows[:max(limit, 0)]:
        out.append({
            "idx": int(idx[i]) if idx is not None else i, "text": texts[i],
            "label": _name(task, labels[i].item()),
            "teacher": _name(task, t_pred[i].item()),
            "teacher_conf": None if t_conf is None else round(float(t_conf[i]), 4),
            "student": _name(task, s_pred[i].item()),
            "student_conf": None if s_conf is None else round(float(s_conf[i]), 4),
            "gap": round(float(gap[i]), 4)})
    return out


def write_csv(path: Path, rows: list[dict[str, Any]]) -> Path:
    """The rows as CSV (header :data:`COLUMNS`), written atomically."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    atomic.write_text(path, buf.getvalue())
    return path
