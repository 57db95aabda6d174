"""The report's table as Markdown and CSV (:mod:`litdistill.report` builds the rows)."""

from __future__ import annotations

import csv
import io
from typing import Any

PLOTS = {"score_vs_params": "student score vs parameters",
         "score_vs_mb": "student score vs size on disk (MB; exported graphs as squares)",
         "score_vs_latency": "student score vs CPU latency (batch 1)",
         "retention_vs_params": "retention of the teacher's score vs parameters",
         "objectives": "mean score by objective (and temperature)"}


def config_label(job: dict[str, Any], common: set[str]) -> str:
    """A failed job's own overrides (what it does not share with every finished job)."""
    from litdistill.runs import config_key

    own = " ".join(o for o in config_key(job.get("overrides") or []) if o not in common)
    return own or "(defaults)"


def _fmt(value: Any, spec: str) -> str:
    return "" if value is None else format(value, spec)


def _pm(row: dict[str, Any], key: str, spec: str) -> str:
    mean, std = row.get(f"{key}_mean"), row.get(f"{key}_std")
    if mean is None:
        return ""
    return f"{mean:{spec}} ± {std:{spec}}" if std is not None else format(mean, spec)


def recipe(row: dict[str, Any]) -> str:
    """The objective, plus the unlabelled rows it learns from (``kd + train_rest``)."""
    extra = [row.get(k) for k in ("transfer", "augment") if row.get(k) not in (None, "none")]
    return " + ".join([row["objective"], *extra])


def _params(n: int | None) -> str:
    return "" if n is None else f"{n / 1e6:.1f}M" if n >= 1e5 else f"{n / 1e3:.1f}k"


_COLUMNS = [("config", lambda r: r["config"]), ("task", lambda r: r["task"] or ""),
            ("student", lambda r: r["model"] or ""), ("params", lambda r: _params(r["params"])),
            ("vocab", lambda r: _params(r.get("vocab"))), ("objective", recipe),
            ("T", lambda r: _fmt(r.get("temperature"), "g")),
            ("α_kd", lambda r: _fmt(r.get("alpha_kd"), "g")),
            ("score", lambda r: _pm(r, "score", ".4f")), ("n", lambda r: str(r["score_n"])),
            ("retention", lambda r: _pm(r, "retention", ".3f")),
            ("agreement", lambda r: _pm(r, "agreement", ".3f")),
            ("MB", lambda r: _fmt(r.get("size_mb"), ".1f")),
            ("ms/ex b=1", lambda r: _fmt(r.get("latency_ms_b1"), ".2f")),
            ("ex/s b=32", lambda r: _fmt(r.get("throughput_b32"), ".1f")),
            ("train s", lambda r: _fmt(r.get("train_seconds_mean"), ".0f"))]
CSV_FIELDS = ["kind", "config", "task", "model", "params", "objective", "transfer", "augment",
              "temperature", "alpha_kd",
              *(f"{k}_{s}" for k in ("score", "retention", "agreement", "train_seconds", "gain")
                for s in ("mean", "std", "n")),
              "size_mb", "latency_ms_b1", "throughput_b32", "seeds", "model_dir", "jobs",
              "vocab"]  # columns are only ever appended: scripts read them by position too


def _cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def render_csv(rows: list[dict[str, Any]]) -> str:
    """The table's rows, machine-readable: separate mean/std/n columns, full precision."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, CSV_FIELDS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: ";".join(map(str, v)) if isinstance(v, list) else v
                         for k, v in row.items()})
    return buf.getvalue()


def _points(mean: float | None, std: float | None, n: int, sign: bool = False) -> str:
    """A score (fraction) as points x100: ``75.9 ± 0.5 (3)``; ``–`` when missing."""
    if mean is None:
        return "–"
    text = f"{100 * mean:+.1f}" if sign else f"{100 * mean:.1f}"
    return text + (f" ± {100 * std:.1f}" if std is not None else "") + f" ({n})"


def _label(key: tuple[str, ...], common: set[str]) -> str:
    return " ".join(o for o in key if o not in common) or "(defaults)"


def render_gains(rows: list[dict[str, Any]], common: set[str]) -> list[str]:
    """"Did KD pay?": each KD configuration's gain over its baseline, paired by seed, and
    per recipe the number of tasks where the mean gain is > 0 (empty without pairs)."""
    kd = [r for r in rows if r.get("gain_n")]
    if not kd:
        return []
    lines = ["", "## Did KD pay? Gain over the no-KD baseline, paired by seed", "",
             "Each KD configuration minus the baseline of the same task, student, labelled "
             "rows and teacher (`distill=none`, no transfer set, no augmentation), seed by "
             "seed; scores and gains in points (x100), mean ± sample std (n seeds).", "",
             "| config | task | baseline | KD | gain |", "|---|---|---|---|---|"]
    recipes: dict[tuple[str, ...], list[dict[str, Any]]] = {}
    for r in kd:
        recipes.setdefault(r["recipe"], []).append(r)
        lines.append(f"| {_cell(r['config'])} | {r['task']} | "
                     f"{_points(r['baseline_score'], None, r['gain_n'])} | "
                     f"{_points(r['score_mean'], r['score_std'], r['score_n'])} | "
                     f"{_points(r['gain_mean'], r['gain_std'], r['gain_n'], sign=True)} |")
    lines += ["", "| recipe | tasks | tasks where KD > baseline | mean gain |",
              "|---|---|---|---|"]
    for recipe, group in recipes.items():
        wins = sum(r["gain_mean"] > 0 for r in group)
        mean = sum(r["gain_mean"] for r in group) / len(group)
        lines.append(f"| {_cell(_label(recipe, common))} | {len(group)} | {wins}/{len(group)} "
                     f"| {100 * mean:+.2f} |")
    return lines


def render_by_task(rows: list[dict[str, Any]], common: set[str]) -> list[str]:
    """One row per recipe, one column per task (points), mean and mean retention over the
    tasks when the recipe ran on all of them (empty for a single task)."""
    students = [r for r in rows if r["kind"] == "student"]
    tasks = sorted({str(r["task"]) for r in students})
    if len(tasks) < 2:
        return []
    teacher_scores: dict[str, set[float]] = {}
    for r in rows:
        if r["kind"] == "teacher" and r["score_mean"] is not None:
            teacher_scores.setdefault(str(r["task"]), set()).add(r["score_mean"])
    lines = ["", "## Scores by task", "",
             "Dev score in points (x100), mean ± sample std (n seeds); mean and retention "
             "(student / its teacher, per task) over the tasks, when a recipe has all of them.",
             "", "| recipe | " + " | ".join(tasks) + " | mean | retention |",
             "|" + "---|" * (len(tasks) + 3)]
    cells = [" / ".join(f"{100 * v:.1f}" for v in sorted(teacher_scores.get(t, ()))) or "–"
             for t in tasks]
    lines.append("| teacher | " + " | ".join(cells) + " | | |")
    recipes: dict[tuple[str, ...], dict[str, dict[str, Any]]] = {}
    for r in students:
        recipes.setdefault(r["recipe"], {})[str(r["task"])] = r
    for recipe, by_task in recipes.items():
        full = len(by_task) == len(tasks)
        mean = sum(by_task[t]["score_mean"] for t in tasks) / len(tasks) if full else None
        ret = [by_task[t].get("retention_mean") for t in tasks] if full else [None]
        retention = f"{100 * sum(ret) / len(ret):.1f}%" if None not in ret else "–"
        lines.append(f"| {_cell(_label(recipe, common))} | "
                     + " | ".join(_points(by_task[t]["score_mean"], by_task[t]["score_std"],
                                          by_task[t]["score_n"]) if t in by_task else "–"
                                  for t in tasks)
                     + f" | {'–' if mean is None else f'{100 * mean:.1f}'} | {retention} |")
    return lines


def render_markdown(rows: list[dict[str, Any]], jobs: list[dict[str, Any]], common: set[str],
                    meta: dict[str, str], plots: dict[str, bool], notes: list[str]) -> str:
    """``report.md``: header, results table, failed jobs, plots and latency notes."""
    lines = ["# litdistill report", ""] + [f"- **{k}**: {v}" for k, v in meta.items()]
    shared = " ".join(sorted(common)) or "(none)"
    lines += [f"- **overrides common to every finished job**: `{shared}`",
              "", "## Results", "",
              "Dev-set score, retention (student / teacher score) and agreement with the "
              "teacher (classification: same predicted class; regression: Pearson r) are "
              "mean ± sample std over seeds (n); latency and throughput are per model.", "",
              "| " + " | ".join(h for h, _ in _COLUMNS) + " |", "|" + "---|" * len(_COLUMNS)]
    lines += ["| " + " | ".join(_cell(get(r)) for _, get in _COLUMNS) + " |" for r in rows]
    lines += render_gains(rows, common) + render_by_task(rows, common)
    failed = [j for j in jobs if not (j.get("status") == "ok" and j.get("student"))]
    lines += ["", f"## Failed jobs ({len(failed)})", ""]
    for job in failed:
        error = (job.get("error") or "status ok but no student entry").strip().splitlines()
        lines.append(f"- `{job['job_dir']}` `{config_label(job, common)}`: {_cell(error[0])}")
    if not failed:
        lines.append("None.")
    lines += ["", "## Plots", ""]
    for name, title in PLOTS.items():
        lines.append(f"![{title}]({name}.png)" if plots[name]
                     else f"- {title}: skipped, no data for it.")
        lines.append("")
    if notes:
        lines += ["## Latency notes", "", *(f"- {n}" for n in notes), ""]
    return "\n".join(lines)


