"""``metrics.evaluate``: the one score function outside training, with training's NaN policy."""

from __future__ import annotations

import pytest
import torch

from litdistill.errors import TrainingError
from litdistill.metrics import evaluate
from litdistill.tasks import TASKS


def test_scores_are_the_mean_of_the_task_metrics() -> None:
    """MRPC: 3 of 4 rows right -> accuracy 0.75; one TP, one FP, no FN -> F1 = 2/3."""
    task = TASKS["mrpc"]
    logits = torch.tensor([[0.0, 1.0], [0.0, 1.0], [1.0, 0.0], [1.0, 0.0]])
    labels = torch.tensor([1, 0, 0, 0])
    values = evaluate(task, [logits], [labels])
    assert values["accuracy"] == pytest.approx(0.75)
    assert values["f1"] == pytest.approx(2 / 3)
    assert values["score"] == pytest.approx((0.75 + 2 / 3) / 2)


def test_a_nan_score_is_a_failure_naming_the_split() -> None:
    """A constant regression prediction has no Pearson correlation: NaN, never 0."""
    task = TASKS["stsb"]
    constant, labels = torch.full((4, 1), 2.5), torch.tensor([0.0, 1.0, 4.0, 5.0])
    with pytest.warns(UserWarning), pytest.raises(TrainingError, match=r"stsb validation: "
                                                   r"pearson.*is NaN"):
        evaluate(task, [constant], [labels])


def test_constant_reference_predictors_may_count_nan_as_zero() -> None:
    """The teacher gate's mean baseline: Pearson and Spearman undefined -> 0, score 0."""
    task = TASKS["stsb"]
    constant, labels = torch.full((4, 1), 2.5), torch.tensor([0.0, 1.0, 4.0, 5.0])
    with pytest.warns(UserWarning):
        values = evaluate(task, [constant], [labels], nan_as_zero=True)
    assert values == {"pearson": 0.0, "spearmanr": 0.0, "score": 0.0}
