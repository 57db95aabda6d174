"""The report's plots (matplotlib, Agg): score and retention vs cost with Pareto fronts,
one panel per task, and mean scores by objective and temperature.

Rows are :func:`litdistill.report.build_rows`'s: teacher references (``kind="teacher"``) and one
row per configuration with ``score_mean``/``_std``, ``retention_mean``/``_std``, ``params``
and, when measured, ``latency_ms_b1``.
"""

from __future__ import annotations

import math
import statistics
from pathlib import Path
from typing import Any

from litdistill import atomic
from litdistill.tables import recipe


def pareto_front(costs: list[float], scores: list[float]) -> list[int]:
    """Indices of the points no other point beats, by increasing cost.

    A point is beaten when another has lower-or-equal cost and higher-or-equal score, one of
    them strictly; of identical points the first is kept.
    """
    order = sorted(range(len(costs)), key=lambda i: (costs[i], -scores[i]))
    front, best = [], -math.inf
    for i in order:
        if scores[i] > best:
            front.append(i)
            best = scores[i]
    return front


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, path: Path) -> None:
    try:
        atomic.write_file(path, lambda tmp: fig.savefig(tmp, dpi=120, format="png"))
    finally:
        _pyplot().close(fig)


def plot_panels(rows: list[dict[str, Any]], x: str, y: str,
                front: bool) -> dict[str, tuple[list[dict[str, Any]], list[int]]]:
    """Each task's points (rows with ``x`` and a mean ``y``) and its Pareto front's indices.

    Scores of different tasks (accuracy, Matthews correlation, Pearson) do not compare, so
    every task gets its own panel, teacher star and front. Tasks with no student point are
    left out.
    """
    panels: dict[str, tuple[list[dict[str, Any]], list[int]]] = {}
    for task in dict.fromkeys(str(r["task"]) for r in rows):
        pts = [r for r in rows if str(r["task"]) == task and r.get(x)
               and r.get(f"{y}_mean") is not None]
        if not any(r["kind"] == "student" for r in pts):
            continue
        idx = (pareto_front([r[x] for r in pts], [r[f"{y}_mean"] for r in pts])
               if front else [])
        panels[task] = (pts, idx)
    return panels


def _labels(pts: list[dict[str, Any]]) -> dict[int, str]:
    """Each student point's label: its overrides minus those every point of the panel shares
    (the task, that task's teacher), which the panel title already says."""
    words = {id(r): r["config"].split() for r in pts if r["kind"] != "teacher"}
    shared = set.intersection(*map(set, words.values())) if len(words) > 1 else set()
    return {k: " ".join(w for w in ws if w not in shared)[:48] or "(defaults)"
            for k, ws in words.items()}


def _points_plot(rows: list[dict[str, Any]], x: str, y: str, xlabel: str, ylabel: str,
                 path: Path, front: bool) -> bool:
    """Configurations (seed-std error bars, colour = objective), teachers as stars; one panel
    per task."""
    panels = plot_panels(rows, x, y, front)
    if not panels:
        return False
    plt = _pyplot()
    cols = min(len(panels), 3)
    nrows = math.ceil(len(panels) / cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(6.5 * cols + 1, 4.6 * nrows), squeeze=False)
    # the same colour for an objective in every panel and plot
    objectives = dict.fromkeys(recipe(r) for r in rows if r["kind"] == "student")
    colours = {o: f"C{i % 10}" for i, o in enumerate(objectives)}
    for ax, (task, (pts, idx)) in zip(axes.flat, panels.items(), strict=False):
        stacked: dict[float, int] = {}  # labels of points at one x go one above the other
        names = _labels(pts)
        for r in sorted(pts, key=lambda r: -r[f"{y}_mean"]):
            if r["kind"] == "teacher":
                ax.scatter(r[x], r[f"{y}_mean"], marker="*", s=220, color="black", zorder=3,
                           label="teacher")
                continue
            # An exported graph (ONNX) is a square in its student's colour.
            ax.errorbar(r[x], r[f"{y}_mean"], yerr=r.get(f"{y}_std") or 0,
                        fmt="s" if r["kind"] == "export" else "o", capsize=3,
                        color=colours[recipe(r)], label=recipe(r))
            above = stacked[r[x]] = stacked.get(r[x], -1) + 1
            ax.annotate(names[id(r)], (r[x], r[f"{y}_mean"]), fontsize=7,
                        textcoords="offset points", xytext=(6, 4 - 9 * above))
        if idx:
            ax.step([pts[i][x] for i in idx], [pts[i][f"{y}_mean"] for i in idx], where="post",
                    color="grey", linestyle="--", label="Pareto front")
        if y == "retention":
            ax.axhline(1.0, color="black", linewidth=0.8, linestyle=":")
        xs = [r[x] for r in pts]
        if min(xs) > 0 and max(xs) / min(xs) > 20:
            ax.set_xscale("log")
        handles, labels = ax.get_legend_handles_labels()
        unique = dict(zip(labels, handles, strict=True))  # one legend entry per label
        ax.legend(unique.values(), unique.keys(), fontsize=8)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        if len(panels) > 1:
            ax.set_title(task, fontsize=10)
        ax.margins(x=0.25, y=0.15)
    for ax in list(axes.flat)[len(panels):]:
        ax.set_visible(False)
    fig.tight_layout()
    _save(fig, path)
    return True


def _bars(ax: Any, groups: dict[str, dict[str, list[float]]], legend: str,
          teachers: dict[str, list[float]]) -> None:
    """Grouped bars: one group per outer key, one bar per inner key, mean ± sample std; each
    group's teacher score(s) as a dashed line across that group only."""
    inner = list(dict.fromkeys(k for g in groups.values() for k in g))
    width = 0.8 / len(inner)
    lows, highs = [], [v for g in groups for v in teachers.get(g, [])]
    for i, name in enumerate(inner):
        xs, means, stds = [], [], []
        for g, bars in enumerate(groups.values()):
            if vals := bars.get(name):
                xs.append(g + (i - (len(inner) - 1) / 2) * width)
                means.append(statistics.mean(vals))
                stds.append(statistics.stdev(vals) if len(vals) > 1 else 0.0)
        ax.bar(xs, means, width, yerr=stds, capsize=3, label=name)
        lows += [m - s for m, s in zip(means, stds, strict=True)]
        highs += [m + s for m, s in zip(means, stds, strict=True)]
    labelled = False
    for g, group in enumerate(groups):
        for score in teachers.get(group, []):
            ax.hlines(score, g - 0.45, g + 0.45, color="black", linestyle="--", linewidth=0.9,
                      label=None if labelled else "teacher")
            labelled = True
    ax.set_xticks(range(len(groups)), list(groups), fontsize=8)
    # bars from 0 would hide differences of a point or two
    ax.set_ylim(max(0.0, min(lows) - 0.05), max(highs) + 0.03)
    ax.legend(title=legend, fontsize=8)


def _objectives_plot(rows: list[dict[str, Any]], path: Path) -> bool:
    """Scores of all seeds pooled by student and objective, and by temperature if it varies.

    Groups never pool tasks: a group is one task's student (by objective) or one task's
    objective (by temperature), drawn with that task's teacher.
    """
    students = sorted((r for r in rows if r["kind"] == "student"),
                      key=lambda r: (recipe(r), r["temperature"] or 0.0))
    if not any(s is not None for r in students for s in r["scores"]):
        return False
    many = len({r["task"] for r in students}) > 1
    one_model = len({r["model"] for r in students}) == 1  # then the task names a group
    by_objective: dict[str, dict[str, list[float]]] = {}
    by_temperature: dict[str, dict[str, list[float]]] = {}
    group_task: dict[str, Any] = {}
    for r in students:
        scores = [s for s in r["scores"] if s is not None]
        # a bar is one recipe (objective + transfer + augment): pooling kd with kd + tinybert
        # would average two different students
        g_obj = str(r["task"]) if one_model else f"{r['task']}\n{r['model']}"
        g_temp = f"{r['task']}\n{recipe(r)}" if many else recipe(r)
        group_task.update({g_obj: r["task"], g_temp: r["task"]})
        by_objective.setdefault(g_obj, {}).setdefault(recipe(r), []).extend(scores)
        by_temperature.setdefault(g_temp, {}).setdefault(
            f"T={r['temperature']}", []).extend(scores)
    task_teachers: dict[Any, list[float]] = {}
    for r in rows:
        if r["kind"] == "teacher" and r["score_mean"] is not None:
            task_teachers.setdefault(r["task"], []).append(r["score_mean"])
    teachers = {g: sorted(set(task_teachers.get(t, []))) for g, t in group_task.items()}
    panels = [(by_objective, "objective")]
    if any(len(temps) > 1 for temps in by_temperature.values()):  # T varies within a group
        panels.append((by_temperature, "temperature"))
    plt = _pyplot()
    width = max(5.5, 1.1 * max(len(g) for g, _ in panels))
    fig, axes = plt.subplots(1, len(panels), figsize=(width * len(panels) + 1, 4.5),
                             squeeze=False)
    for ax, (groups, legend) in zip(axes[0], panels, strict=True):
        _bars(ax, groups, legend, teachers)
        ax.set_title(f"mean dev score by {legend}, all seeds pooled", fontsize=9)
    axes[0][0].set_ylabel("dev score")
    fig.tight_layout()
    _save(fig, path)
    return True


def write_plots(rows: list[dict[str, Any]], out: Path) -> dict[str, bool]:
    """Write the report's PNGs into ``out``; return which were written (name -> bool).

    A plot with nothing to show is not written, and an older file of that name is removed:
    it would no longer match the table beside it.
    """
    models = [r for r in rows if r["kind"] != "export"]  # a graph has its student's params
    plots = {
        "score_vs_params": _points_plot(models, "params", "score", "parameters", "dev score",
                                        out / "score_vs_params.png", front=True),
        "score_vs_mb": _points_plot(rows, "size_mb", "score", "size on disk, MB", "dev score",
                                    out / "score_vs_mb.png", front=True),
        "score_vs_latency": _points_plot(rows, "latency_ms_b1", "score",
                                         "CPU latency, ms per example (batch 1)", "dev score",
                                         out / "score_vs_latency.png", front=True),
        "retention_vs_params": _points_plot(models, "params", "retention", "parameters",
                                            "retention (student / teacher score)",
                                            out / "retention_vs_params.png", front=False),
        "objectives": _objectives_plot(models, out / "objectives.png")}
    for name, written in plots.items():
        if not written:
            (out / f"{name}.png").unlink(missing_ok=True)
    return plots
