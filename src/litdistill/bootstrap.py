"""Paired bootstrap confidence intervals for score differences on a dev set.

The question a report answers is "does configuration A beat B?", where A and B are runs of the
same task and dev set, each repeated with seeds 1..k (seed s of A paired with seed s of B).
The gain is the seed-mean of ``score(A_s) - score(B_s)`` in the task's score units (the GLUE
mean of its metrics, as :func:`litdistill.tasks.score`).

Method (a two-level, paired, percentile bootstrap; Efron & Tibshirani 1993, ch. 13; the
row-level pairing of Koehn 2004 / Dror et al. 2018 for NLP): each of ``n_boot`` replicates

1. draws the dev rows with replacement, **the same draw for every run** (so both sides of a
   difference see the same rows: the correlation between A's and B's errors is kept, which
   is what makes paired intervals narrower than unpaired ones), and
2. when there are several seed pairs, draws the pairs with replacement (seed-to-seed spread
   is part of the uncertainty: one lucky seed should not make a gain "significant"),

then recomputes every metric on the drawn rows (counts of a row as weights, so duplicates
count twice: exactly the metric of the resampled set) and the seed-mean gain. The interval
is the 2.5th and 97.5th percentile of the replicate gains; a gain "excludes 0" when both ends
lie on the same side of 0. A comparison with a single reference run (the teacher) pairs every
seed with that one run. With a task of several eval splits (MNLI) each split's rows are
drawn independently and the score is the mean over splits, as training reports it.

Metrics are vectorised over replicates (``W`` is a (B, n) matrix of row counts) and equal
torchmetrics' on the whole set (tested): accuracy, binary F1, binary Matthews correlation,
Pearson and Spearman (ranks of the resampled multiset, ties averaged).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

# Replicates: the Monte-Carlo error of a 95% percentile end is about 0.5-1% of the interval's
# width at 2,000 (Efron & Tibshirani recommend >= 1,000 for percentile intervals).
N_BOOT = 2000


@dataclass(frozen=True)
class Split:
    """One eval split of one run: per-row predictions (class ids, or floats for regression)
    and the gold labels, in the dev file's row order (identical across runs of a task)."""

    predictions: np.ndarray  # (n,) int class ids or float predictions
    labels: np.ndarray  # (n,)


@dataclass(frozen=True)
class Interval:
    """A gain (score units) with its 95% paired-bootstrap interval."""

    gain: float
    low: float
    high: float
    n_pairs: int
    n_boot: int

    @property
    def excludes_zero(self) -> bool:
        """Whether the interval lies entirely above or entirely below 0."""
        return self.low > 0 or self.high < 0


def _safe_div(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    # torchmetrics returns 0 for F1/MCC with an empty denominator (no positives at all).
    out = np.zeros_like(num, dtype=float)
    np.divide(num, den, out=out, where=den != 0)
    return out


def _pearson(x: np.ndarray, y: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Weighted Pearson r per replicate; ``w`` (B, n) counts, ``x``/``y`` (n,) or (B, n)."""
    total = w.sum(axis=1)
    mx = (w * x).sum(axis=1) / total
    my = (w * y).sum(axis=1) / total
    dx = x - mx[:, None]
    dy = y - my[:, None]
    cov = (w * dx * dy).sum(axis=1)
    var = np.sqrt((w * dx * dx).sum(axis=1) * (w * dy * dy).sum(axis=1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return cov / var  # NaN for a constant side, as torchmetrics


def _ranks(values: np.ndarray, w: np.ndarray) -> np.ndarray:
    """(B, n) mid-ranks (1-based) each row would get in its replicate's multiset.

    Rows sorted once by value; in a replicate a row with count c after cumulative count C
    occupies positions C - c + 1 .. C, and tied values share the mean position of their group.
    """
    order = np.argsort(values, kind="stable")
    sorted_vals = values[order]
    starts = np.flatnonzero(np.r_[True, sorted_vals[1:] != sorted_vals[:-1]])
    group_of = np.cumsum(np.r_[True, sorted_vals[1:] != sorted_vals[:-1]]) - 1  # (n,)
    counts = np.add.reduceat(w[:, order], starts, axis=1)  # (B, groups)
    end = np.cumsum(counts, axis=1)
    mid = end - (counts - 1) / 2.0  # mean of positions end-count+1 .. end
    ranks = np.empty_like(w, dtype=float)
    ranks[:, order] = mid[:, group_of]
    return ranks


def metric(name: str, split: Split, w: np.ndarray) -> np.ndarray:
    """One metric of ``split`` under each replicate's row counts ``w`` (B, n) -> (B,).

    Raises:
        ValueError: A metric this module does not know.
    """
    p, y = split.predictions, split.labels
    if name == "accuracy":
        return (w * (p == y)).sum(axis=1) / w.sum(axis=1)
    if name in ("f1", "matthews_correlation"):
        tp = (w * ((p == 1) & (y == 1))).sum(axis=1).astype(float)
        fp = (w * ((p == 1) & (y != 1))).sum(axis=1).astype(float)
        fn = (w * ((p != 1) & (y == 1))).sum(axis=1).astype(float)
        if name == "f1":
            return _safe_div(2 * tp, 2 * tp + fp + fn)
        tn = (w * ((p != 1) & (y != 1))).sum(axis=1).astype(float)
        den = np.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))
        return _safe_div(tp * tn - fp * fn, den)
    if name == "pearson":
        return _pearson(p.astype(float), y.astype(float), w)
    if name == "spearmanr":
        return _pearson(_ranks(p.astype(float), w), _ranks(y.astype(float), w), w)
    raise ValueError(f"no bootstrap form for metric {name!r}")


def scores(metrics: Sequence[str], splits: Sequence[Split], weights: Sequence[np.ndarray]
           ) -> np.ndarray:
    """The task score (mean of every split's metrics) per replicate -> (B,)."""
    values = [metric(m, s, w) for s, w in zip(splits, weights, strict=True) for m in metrics]
    return np.mean(values, axis=0)


def _draws(splits: Sequence[Split], n_boot: int, rng: np.random.Generator
           ) -> list[np.ndarray]:
    # Row counts of a draw with replacement: multinomial(n, uniform) per replicate.
    return [rng.multinomial(len(s.labels), np.full(len(s.labels), 1 / len(s.labels)),
                            size=n_boot) for s in splits]


def paired_interval(metrics: Sequence[str], runs_a: Sequence[Sequence[Split]],
                    runs_b: Sequence[Sequence[Split]], n_boot: int = N_BOOT, seed: int = 0,
                    level: float = 0.95) -> Interval:
    """The seed-mean gain of A over B with its paired bootstrap interval.

    Args:
        metrics: The task's metric names (``TaskSpec.metrics``).
        runs_a: Per seed, A's eval splits (seed order = the pairing).
        runs_b: Per seed, B's eval splits in the same order; or a single run, paired with
            every seed of A (a teacher).
        n_boot: Replicates.
        seed: Seed of the resampling (the interval is reproducible).
        level: Coverage of the interval.

    Raises:
        ValueError: No pairs, or runs whose dev rows or labels differ.
    """
    if not runs_a:
        raise ValueError("paired_interval needs at least one run of A")
    if len(runs_b) == 1 and len(runs_a) > 1:
        runs_b = list(runs_b) * len(runs_a)
    if len(runs_b) != len(runs_a):
        raise ValueError(f"{len(runs_a)} runs of A but {len(runs_b)} of B: pair them by seed")
    reference = runs_a[0]
    for run in (*runs_a, *runs_b):
        for split, ref in zip(run, reference, strict=True):
            if len(split.labels) != len(ref.labels) or not np.array_equal(split.labels,
                                                                          ref.labels):
                raise ValueError("runs disagree on the dev rows (labels differ): not pairable")
    full = [np.ones((1, len(s.labels)), dtype=np.int64) for s in reference]
    gains_full = [scores(metrics, a, full)[0] - scores(metrics, b, full)[0]
                  for a, b in zip(runs_a, runs_b, strict=True)]
    rng = np.random.default_rng(seed)
    weights = _draws(reference, n_boot, rng)
    per_pair = np.stack([scores(metrics, a, weights) - scores(metrics, b, weights)
                         for a, b in zip(runs_a, runs_b, strict=True)])  # (pairs, B)
    if len(runs_a) > 1:
        picks = rng.integers(0, len(runs_a), size=(n_boot, len(runs_a)))  # (B, pairs)
        per_pair = np.take_along_axis(per_pair.T, picks, axis=1).T
    replicates = per_pair.mean(axis=0)
    tail = (1 - level) / 2 * 100
    low, high = np.nanpercentile(replicates, [tail, 100 - tail])
    return Interval(float(np.mean(gains_full)), float(low), float(high), len(runs_a), n_boot)
