"""The GLUE study's table, as the papers print it, from the runs of run.sh.

    python experiments/glue_minilm/table.py outputs/glue_minilm > experiments/glue_minilm/results.md

Reads ``<out>/teachers/*/results.json`` and ``<out>/<task>/*/results.json``. Scores are GLUE
points (x100): CoLA Matthews corr., SST-2 and RTE accuracy, MRPC mean(F1, acc), STS-B
mean(Pearson, Spearman); mean +- sample std over seeds (n). Retention = student / teacher
score per task, averaged over tasks. KD gain = KD minus baseline of the same student and
seed (paired), mean +- std.
"""

from __future__ import annotations

import json
import statistics
import sys
from collections import defaultdict
from pathlib import Path

TASKS = ["cola", "sst2", "mrpc", "stsb", "rte"]
HEAD = {"cola": "CoLA (mcc)", "sst2": "SST-2 (acc)", "mrpc": "MRPC (F1/acc)",
        "stsb": "STS-B (P/S)", "rte": "RTE (acc)"}
STUDENTS = {"minilm_3l": "3L cut (0,2,4)", "minilm_2l": "2L cut (0,3)"}
OBJECTIVES = {"none": "baseline (no KD)", "kd": "kd", "pkd": "pkd"}


def _load(folder: Path) -> list[dict]:
    jobs = []
    for path in sorted(folder.glob("*/results.json")):
        job = json.loads(path.read_text())
        if job.get("status") == "ok":
            jobs.append(job)
    return jobs


def _caps(jobs) -> str:
    """The data-size and length overrides the jobs ran with (the table's fine print)."""
    keys = ("data.max_train_samples", "trainer.max_epochs", "data.max_length")
    found = sorted({o for j in jobs for o in j.get("overrides", []) if o.startswith(keys)})
    return ", ".join(f"`{o}`" for o in found) or "none"


def _fmt(values: list[float]) -> str:
    if not values:
        return "–"
    mean = 100 * statistics.mean(values)
    if len(values) == 1:
        return f"{mean:.1f}"
    return f"{mean:.1f} ± {100 * statistics.stdev(values):.1f} ({len(values)})"


def gain_cells(kd: dict[str, dict[int, float]],
               base: dict[str, dict[int, float]]) -> tuple[list[str], int, int]:
    """Per task, KD minus baseline paired by seed (points, mean ± std); also the number of
    tasks where the mean gain is positive and of tasks compared."""
    cells, wins, compared = [], 0, 0
    for task in TASKS:
        seeds = sorted(set(base.get(task, {})) & set(kd.get(task, {})))
        diffs = [kd[task][s] - base[task][s] for s in seeds]
        if not diffs:
            cells.append("–")
            continue
        compared += 1
        wins += statistics.mean(diffs) > 0
        cells.append(f"{100 * statistics.mean(diffs):+.1f}" + (
            f" ± {100 * statistics.stdev(diffs):.1f}" if len(diffs) > 1 else ""))
    return cells, wins, compared


def main(out: Path) -> str:
    teachers = {j["task"]: j for j in _load(out / "teachers")}
    # scores[(student, objective)][task] = {seed: score}
    scores: dict[tuple[str, str], dict[str, dict[int, float]]] = defaultdict(
        lambda: defaultdict(dict))
    params, subsets, failed = {}, {}, []
    for task in TASKS:
        for path in sorted((out / task).glob("*/results.json")):
            job = json.loads(path.read_text())
            if job.get("status") != "ok":
                failed.append(f"{task}/{path.parent.name}: {job.get('error')}")
                continue
            key = (job["choices"]["student"], job["choices"]["distill"])
            scores[key][task][job["seed"]] = job["student"]["score"]
            params[job["choices"]["student"]] = job["student"]["params"]
    for task, job in teachers.items():
        subsets[task] = job["global_step"]
    caps = {"teachers": _caps(teachers.values()),
            "students": _caps(j for t in TASKS for j in _load(out / t))}
    lines = ["| model | params | " + " | ".join(HEAD[t] for t in TASKS)
             + " | mean | retention |", "|" + "---|" * (len(TASKS) + 4)]
    t_scores = {t: teachers[t]["student"]["score"] for t in TASKS if t in teachers}
    t_params = next(iter(teachers.values()))["student"]["params"] if teachers else None
    lines.append(f"| teacher: MiniLM-L6 fine-tuned | {t_params / 1e6:.1f}M | "
                 + " | ".join(_fmt([t_scores[t]]) if t in t_scores else "–" for t in TASKS)
                 + f" | {100 * statistics.mean(t_scores.values()):.1f} | 100% |"
                 if teachers else "| teacher | – |")
    for student, s_name in STUDENTS.items():
        for objective, o_name in OBJECTIVES.items():
            per_task = scores.get((student, objective), {})
            if not per_task:
                continue
            means = {t: statistics.mean(v.values()) for t, v in per_task.items()}
            cells = [_fmt(list(per_task[t].values())) if t in per_task else "–" for t in TASKS]
            if set(means) == set(TASKS) and set(t_scores) == set(TASKS):
                mean = f"{100 * statistics.mean(means.values()):.1f}"
                retention = f"{100 * statistics.mean(means[t] / t_scores[t] for t in TASKS):.1f}%"
            else:  # a mean over some tasks would not compare with the teacher's
                mean = retention = "–"
            lines.append(f"| {s_name}, {o_name} | {params[student] / 1e6:.1f}M | "
                         + " | ".join(cells) + f" | {mean} | {retention} |")
    lines += ["", "KD gain over the baseline of the same student (paired by seed, points):", "",
              "| student, objective | " + " | ".join(HEAD[t] for t in TASKS)
              + " | tasks where KD > baseline |", "|" + "---|" * (len(TASKS) + 2)]
    for student, s_name in STUDENTS.items():
        base = scores.get((student, "none"), {})
        for objective in ("kd", "pkd"):
            kd = scores.get((student, objective), {})
            cells, wins, compared = gain_cells(kd, base)
            lines.append(f"| {s_name}, {objective} | " + " | ".join(cells)
                         + f" | {wins}/{compared} |")
    lines += ["", "Optimizer steps of each task's teacher (batch 32): "
              + ", ".join(f"{t} {subsets[t]}" for t in TASKS if t in subsets) + ". Overrides "
              f"beyond experiment=glue_minilm: teachers {caps['teachers']}; students "
              f"{caps['students']}."]
    if failed:
        lines += ["", "Failed jobs:", *[f"- {f}" for f in failed]]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(main(Path(sys.argv[1] if len(sys.argv) > 1 else "outputs/glue_minilm")), end="")
