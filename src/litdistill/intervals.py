"""The report's confidence intervals: every gain it states, with a 95% paired bootstrap
interval over dev rows and seeds (:mod:`litdistill.bootstrap` documents the method).

Two comparisons per student configuration, from the jobs' ``predictions.npz``:

- **vs baseline**: a KD configuration against the no-KD baseline of the same task and pair
  key (the pairs "Did KD pay?" uses), seed s against seed s;
- **vs teacher**: the student against its teacher, each seed against the teacher logits that
  job recorded (retention's numerator minus its denominator);
- **vs reference** (``litdistill-report --reference 'student=tinybert_4l'``): every other
  configuration of a task against the one configuration of that task whose overrides include
  all of the reference's, seed s against seed s (e.g. each student shape against a baseline
  shape).

Jobs recorded without ``predictions.npz`` (litdistill < 0.2) are left out of the interval
(``n`` says how many seeds it has); a configuration without any gets none.
"""

from __future__ import annotations

import csv
import io
import logging
from collections.abc import Sequence
from typing import Any

import numpy as np

from litdistill.bootstrap import Interval, Split, paired_interval
from litdistill.rundir import RunDir, RunDirError

log = logging.getLogger(__name__)

Run = list[Split]  # one job's eval splits


def _splits(arrays: dict[str, np.ndarray], side: str) -> Run | None:
    names = sorted(k.split(".", 1)[1] for k in arrays if k.startswith(f"{side}."))
    if not names:
        return None
    out = []
    for name in names:
        logits = arrays[f"{side}.{name}"]
        # (n, 1) logits are a regression's predictions; else the predicted class.
        preds = logits[:, 0] if logits.shape[1] == 1 else logits.argmax(-1)
        out.append(Split(preds, arrays[f"labels.{name}"]))
    return out


def _metrics(job: dict[str, Any], n_splits: int) -> list[str]:
    """The task's metric names without the split suffix several eval splits add."""
    names = list(job.get("metric_names") or (job.get("student") or {}).get("metrics") or [])
    if n_splits > 1:
        names = list(dict.fromkeys(n.rsplit("_", 1)[0] for n in names))
    return names


def _load(job_dir: str, cache: dict[str, dict[str, np.ndarray] | None]
          ) -> dict[str, np.ndarray] | None:
    if job_dir not in cache:
        try:
            cache[job_dir] = RunDir(job_dir).read_predictions()
        except RunDirError as err:
            log.warning("%s", err)
            cache[job_dir] = None
    return cache[job_dir]


def _interval(metrics: Sequence[str], a: list[Run], b: list[Run]) -> Interval | None:
    if not a or not metrics:
        return None
    try:
        return paired_interval(metrics, a, b)
    except ValueError as err:  # dev rows differ (another subset): no paired interval
        log.warning("no interval: %s", err)
        return None


def _paired(metrics: Sequence[str], own: dict[Any, dict[str, np.ndarray]],
            other: dict[Any, dict[str, np.ndarray] | None]) -> Interval | None:
    seeds = [s for s in own if other.get(s) is not None]
    return _interval(metrics, [_splits(own[s], "student") for s in seeds],
                     [_splits(other[s], "student") for s in seeds])


def _references(students: list[dict[str, Any]], reference: str | None
                ) -> dict[Any, dict[str, Any]]:
    """Per task, the one configuration whose overrides hold every word of ``reference``."""
    if not reference:
        return {}
    words = set(reference.split())
    found: dict[Any, list[dict[str, Any]]] = {}
    for row in students:
        if words <= set(row.get("recipe") or ()) | set(str(row["config"]).split()):
            found.setdefault(row["task"], []).append(row)
    for task, matches in found.items():
        if len(matches) > 1:
            log.warning("--reference %r matches %d configurations of %s; no reference "
                        "intervals there", reference, len(matches), task)
    return {task: m[0] for task, m in found.items() if len(m) == 1}


def add_intervals(rows: list[dict[str, Any]], jobs: list[dict[str, Any]],
                  reference: str | None = None) -> None:
    """Give student rows ``ci_baseline``, ``ci_teacher`` and ``ci_reference``
    (:class:`Interval` or None)."""
    by_dir = {j["job_dir"]: j for j in jobs}
    cache: dict[str, dict[str, np.ndarray] | None] = {}
    students = [r for r in rows if r.get("kind") == "student"]
    baselines = {(r["task"], r["pair_key"]): r for r in students if r.get("baseline")}
    references = _references(students, reference)
    for row in students:
        seeds = {by_dir[d].get("seed"): d for d in row["jobs"]}
        own = {s: _load(d, cache) for s, d in seeds.items()}
        own = {s: a for s, a in own.items() if a is not None}
        if not own:
            continue
        first = next(iter(own.values()))
        metrics = _metrics(by_dir[seeds[next(iter(own))]], len(_splits(first, "student")))
        with_teacher = [s for s in own if _splits(own[s], "teacher")]
        row["ci_teacher"] = _interval(metrics, [_splits(own[s], "student") for s in with_teacher],
                                      [_splits(own[s], "teacher") for s in with_teacher])
        def runs_of(other: dict[str, Any]) -> dict[Any, dict[str, np.ndarray] | None]:
            return {by_dir[d].get("seed"): _load(d, cache) for d in other["jobs"]}

        if (ref := references.get(row["task"])) is not None and ref is not row:
            row["ci_reference"] = _paired(metrics, own, runs_of(ref))
            row["reference"] = ref["config"]
        base = baselines.get((row["task"], row["pair_key"]))
        if not row.get("baseline") and base is not None:
            row["ci_baseline"] = _paired(metrics, own, runs_of(base))


def _fmt(ci: Interval | None) -> tuple[str, str, str]:
    if ci is None:
        return "–", "–", ""
    mark = " *" if ci.excludes_zero else ""
    return (f"{100 * ci.gain:+.1f}{mark}", f"[{100 * ci.low:+.1f}, {100 * ci.high:+.1f}]",
            str(ci.n_pairs))


def render_intervals(rows: list[dict[str, Any]]) -> list[str]:
    """Markdown section (empty when no row has an interval)."""
    found = [r for r in rows if r.get("ci_baseline") or r.get("ci_teacher")
             or r.get("ci_reference")]
    if not found:
        return []
    lines = ["", "## Gains with 95% confidence intervals (paired bootstrap)", "",
             "Points (x100). Dev rows drawn with replacement (the same draw for both sides) "
             "and seed pairs drawn with replacement, 2,000 replicates, percentile interval "
             "(`litdistill.bootstrap`); `*`: the interval excludes 0. n: seed pairs with "
             "saved predictions.", "",
             "| config | task | vs baseline | 95% CI | n | vs teacher | 95% CI | n |"
             " vs reference | 95% CI | n |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in found:
        cells = [c for k in ("baseline", "teacher", "reference") for c in _fmt(r.get(f"ci_{k}"))]
        config = str(r["config"]).replace("|", "\\|")
        lines.append(f"| {config} | {r['task']} | {' | '.join(cells)} |")
    if refs := sorted({(r["task"], r["reference"]) for r in found if r.get("reference")}):
        lines += ["", "Reference: " + "; ".join(f"{t}: `{c}`" for t, c in refs) + "."]
    return lines


def render_intervals_csv(rows: list[dict[str, Any]]) -> str:
    """``intervals.csv``: one row per configuration and comparison (score units)."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["task", "config", "versus", "gain", "low", "high", "excludes_zero",
                     "n_pairs", "n_boot"])
    for r in rows:
        for versus in ("baseline", "teacher", "reference"):
            ci: Interval | None = r.get(f"ci_{versus}")
            if ci is not None:
                writer.writerow([r["task"], r["config"], versus, f"{ci.gain:.6f}",
                                 f"{ci.low:.6f}", f"{ci.high:.6f}", int(ci.excludes_zero),
                                 ci.n_pairs, ci.n_boot])
    return buf.getvalue()
