"""Task metrics, whole-split evaluation and student-teacher agreement.

One ``MetricCollection`` per eval split (MNLI: matched, mismatched); a task's ``score`` is the
GLUE-leaderboard mean of its metrics (:func:`litdistill.tasks.score`). Metric names with
several eval splits get the split's suffix (``accuracy_matched``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torchmetrics
from torch import Tensor, nn

from litdistill.errors import TrainingError
from litdistill.tasks import TaskSpec, score, split_suffix

_FACTORIES: dict[str, Callable[[int], torchmetrics.Metric]] = {
    "accuracy": lambda c: torchmetrics.Accuracy(task="multiclass", num_classes=c),
    "f1": lambda c: torchmetrics.F1Score(task="binary"),
    "matthews_correlation": lambda c: torchmetrics.MatthewsCorrCoef(task="binary"),
    "pearson": lambda c: torchmetrics.PearsonCorrCoef(),
    "spearmanr": lambda c: torchmetrics.SpearmanCorrCoef(),
}


def task_metrics(task: TaskSpec) -> nn.ModuleList:
    """One MetricCollection per eval split of the task."""
    return nn.ModuleList(
        torchmetrics.MetricCollection({m: _FACTORIES[m](task.num_labels) for m in task.metrics})
        for _ in task.eval_splits
    )


def agreement_metric(task: TaskSpec) -> torchmetrics.Metric:
    """Student-teacher agreement on dev: the fraction of equal predicted classes, or for
    regression the Pearson r between the two models' predictions."""
    if task.is_regression:
        return torchmetrics.PearsonCorrCoef()
    return torchmetrics.Accuracy(task="multiclass", num_classes=task.num_labels)


def predictions(task: TaskSpec, logits: Tensor) -> Tensor:
    """(B, C) logits -> (B,) class ids, or (B, 1) -> (B,) float predictions for regression."""
    return logits.squeeze(-1).float() if task.is_regression else logits.argmax(-1)


def compute(task: TaskSpec, collections: nn.ModuleList) -> dict[str, float]:
    """Compute and reset every split's collection; keys as the module logs them. NaN (e.g.
    Pearson of a constant prediction) is returned as is: the caller fails on it.

    Args:
        task: The task (split names).
        collections: From :func:`task_metrics`, updated with a split's predictions.
    """
    values: dict[str, float] = {}
    multi = len(task.eval_splits) > 1
    for split, collection in zip(task.eval_splits, collections, strict=True):
        for name, value in collection.compute().items():
            values[f"{name}_{split_suffix(split)}" if multi else name] = float(value)
        collection.reset()
    return values


def evaluate(task: TaskSpec, logits: Sequence[Tensor], labels: Sequence[Tensor], *,
             nan_as_zero: bool = False) -> dict[str, float]:
    """The task's metrics and ``score`` of whole-split predictions, one entry per eval split
    (the names the module logs).

    Args:
        task: The task.
        logits: Per eval split, ``(rows, num_labels)`` logits.
        labels: Per eval split, ``(rows,)`` labels.
        nan_as_zero: Only for reference predictors that are constant by design (the teacher
            gate's majority/mean baseline, whose correlation is undefined): count NaN as 0.

    Raises:
        TrainingError: A metric is NaN, as training fails on one: a NaN score is never 0.
    """
    collections = task_metrics(task)
    for split_logits, split_labels, collection in zip(logits, labels, collections,
                                                      strict=True):
        collection.update(predictions(task, split_logits), split_labels)
    values = compute(task, collections)
    if bad := [k for k, v in values.items() if math.isnan(v)]:
        if not nan_as_zero:
            raise TrainingError(
                f"{task.name} {'/'.join(task.eval_splits)}: {', '.join(bad)} is NaN (constant "
                "or non-finite predictions); a NaN score is a failure, not 0")
        values = {k: 0.0 if math.isnan(v) else v for k, v in values.items()}
    values["score"] = score(values)
    return values
