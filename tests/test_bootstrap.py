"""Paired bootstrap intervals (:mod:`litdistill.bootstrap`) on constructed predictions."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torchmetrics

from litdistill.bootstrap import Split, metric, paired_interval

TORCHMETRICS = {
    "accuracy": lambda: torchmetrics.Accuracy(task="multiclass", num_classes=3),
    "f1": lambda: torchmetrics.F1Score(task="binary"),
    "matthews_correlation": lambda: torchmetrics.MatthewsCorrCoef(task="binary"),
    "pearson": lambda: torchmetrics.PearsonCorrCoef(),
    "spearmanr": lambda: torchmetrics.SpearmanCorrCoef(),
}


def _split(name: str, rng: np.random.Generator, n: int) -> Split:
    if name in ("pearson", "spearmanr"):
        # Rounded values: ties on both sides, as STS-B's 0.2-step labels have.
        labels = np.round(rng.uniform(0, 5, n), 1)
        return Split(np.round(labels + rng.normal(0, 1, n), 1), labels)
    classes = 3 if name == "accuracy" else 2
    labels = rng.integers(0, classes, n)
    return Split(np.where(rng.random(n) < 0.7, labels, rng.integers(0, classes, n)), labels)


def _torchmetric(name: str, split: Split) -> float:
    m = TORCHMETRICS[name]()
    floats = name in ("pearson", "spearmanr")
    m.update(torch.tensor(split.predictions, dtype=torch.float32 if floats else torch.long),
             torch.tensor(split.labels, dtype=torch.float32 if floats else torch.long))
    return float(m.compute())


@pytest.mark.parametrize("name", sorted(TORCHMETRICS))
def test_metric_matches_torchmetrics_on_whole_and_resampled_sets(name):
    """Counts as weights = the metric of the expanded multiset: with all counts 1 it is the
    whole-set metric, and with a draw's counts it is torchmetrics' on ``np.repeat`` rows."""
    rng = np.random.default_rng(0)
    split = _split(name, rng, 200)
    ones = np.ones((1, 200), dtype=np.int64)
    assert metric(name, split, ones)[0] == pytest.approx(_torchmetric(name, split), abs=1e-5)
    counts = rng.multinomial(200, np.full(200, 1 / 200), size=3)
    for row, got in zip(counts, metric(name, split, counts), strict=True):
        expanded = Split(np.repeat(split.predictions, row), np.repeat(split.labels, row))
        assert got == pytest.approx(_torchmetric(name, expanded), abs=1e-5)


def test_all_right_vs_all_wrong_is_a_sure_gain_of_one():
    """A predicts every label, B none: on any resample A scores 1 and B 0, so the gain and
    both ends of the interval are exactly 1."""
    labels = np.array([0, 1] * 50)
    a, b = [Split(labels, labels)], [Split(1 - labels, labels)]
    ci = paired_interval(["accuracy"], [a, a, a], [b, b, b], n_boot=200)
    assert (ci.gain, ci.low, ci.high, ci.n_pairs) == (1.0, 1.0, 1.0, 3)
    assert ci.excludes_zero


def test_identical_runs_give_a_zero_interval():
    """Every resample gives A and B the same rows and the same predictions: gain 0 exactly."""
    rng = np.random.default_rng(1)
    split = _split("f1", rng, 300)
    ci = paired_interval(["f1", "accuracy"], [[split]], [[split]], n_boot=300)
    assert (ci.gain, ci.low, ci.high) == (0.0, 0.0, 0.0)
    assert not ci.excludes_zero


def test_accuracy_gain_interval_matches_the_normal_approximation():
    """One pair, accuracy: the gain is the mean of d_i = [A right] - [B right] in {-1, 0, 1},
    so the bootstrap distribution of the gain is that of a mean of n draws of d: by the CLT
    its 95% interval is mean +- 1.96 sd(d) / sqrt(n). With n = 4,000 the two agree within
    a few percent of the half-width."""
    rng = np.random.default_rng(2)
    n = 4000
    labels = rng.integers(0, 2, n)
    a_right = rng.random(n) < 0.80
    b_right = np.where(rng.random(n) < 0.6, a_right, rng.random(n) < 0.76)
    a = Split(np.where(a_right, labels, 1 - labels), labels)
    b = Split(np.where(b_right, labels, 1 - labels), labels)
    d = a_right.astype(float) - b_right.astype(float)
    half = 1.96 * d.std() / math.sqrt(n)
    ci = paired_interval(["accuracy"], [[a]], [[b]], n_boot=4000, seed=3)
    assert ci.gain == pytest.approx(d.mean(), abs=1e-12)
    assert ci.low == pytest.approx(d.mean() - half, abs=0.08 * half)
    assert ci.high == pytest.approx(d.mean() + half, abs=0.08 * half)


def test_seed_spread_widens_the_interval():
    """Three seed pairs with gains +0.3, -0.3, +0.3 on a large dev set: rows alone would
    make the mean gain +0.1 look sure, but resampling the pairs (a draw of three -0.3 seeds
    has probability 1/27 > 2.5%) puts 0 inside the interval. The same gains on every seed
    exclude 0."""
    n = 1000
    labels = np.zeros(n, dtype=np.int64)
    right = Split(labels, labels)

    def acc(p: float) -> Split:  # right on the first p * n rows
        return Split(np.where(np.arange(n) < p * n, 0, 1), labels)

    base = acc(0.5)
    mixed = paired_interval(["accuracy"], [[acc(0.8)], [acc(0.2)], [acc(0.8)]],
                            [[base]] * 3, n_boot=2000)
    assert mixed.gain == pytest.approx(0.1)
    assert mixed.low < 0 < mixed.high
    steady = paired_interval(["accuracy"], [[acc(0.6)]] * 3, [[base]] * 3, n_boot=2000)
    assert steady.excludes_zero and steady.low > 0
    one_reference = paired_interval(["accuracy"], [[acc(0.6)]] * 3, [[right]], n_boot=200)
    assert one_reference.gain == pytest.approx(-0.4) and one_reference.n_pairs == 3


def test_same_seed_same_interval_and_unpairable_runs_refused():
    rng = np.random.default_rng(4)
    a, b = _split("accuracy", rng, 100), _split("accuracy", rng, 100)
    b = Split(b.predictions, a.labels)
    assert paired_interval(["accuracy"], [[a]], [[b]], seed=7) == \
        paired_interval(["accuracy"], [[a]], [[b]], seed=7)
    other = Split(a.predictions, 1 - a.labels)
    with pytest.raises(ValueError, match="dev rows"):
        paired_interval(["accuracy"], [[a]], [[other]])
    with pytest.raises(ValueError, match="pair them by seed"):
        paired_interval(["accuracy"], [[a], [a]], [[b], [b], [b]])
