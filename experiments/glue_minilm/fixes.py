"""The table of fixes.sh: the 3-layer student under the fixes the papers use.

    python experiments/glue_minilm/fixes.py outputs/glue_minilm > experiments/glue_minilm/fixes.md

Reads run.sh's teachers and 3-layer runs (``<out>/teachers``, ``<out>/<task>``: the reference
rows) and ``<out>/fixes/<fix>/<task>/*/results.json`` (with fix D's own teachers in
``<out>/fixes/full_data/teachers``). A row is one student recipe: its teacher's and its own
data budget (train rows x epochs) and the objective with its temperature and weights. Cells
are GLUE points (x100), mean +- sample std over seeds (n). Retention = student / its own
teacher per task and seed, averaged over seeds, then over tasks when a row has all five. The
gain table pairs each KD row with the baseline (no KD) of the same budgets, seed by seed.
"""

from __future__ import annotations

import statistics
import sys
from collections import defaultdict
from pathlib import Path

from table import HEAD, TASKS, _fmt, _load, gain_cells

BASELINE = "baseline (no KD)"


def _budget(job: dict) -> str:
    """``rows x epochs`` from the job's overrides; rows = the train set when not capped."""
    found = dict(o.split("=", 1) for o in job.get("overrides", []) if "=" in o)
    rows = found.get("data.max_train_samples")
    rows = f"{int(rows):,}" if rows and rows != "null" else "all"
    return f"{rows} x {found.get('trainer.max_epochs', job.get('epochs'))}"


def _recipe(job: dict) -> str:
    d = job.get("distill") or {}
    if job["choices"]["distill"] == "none":
        return BASELINE
    return (f"{job['choices']['distill']} T={d.get('temperature'):g} "
            f"alpha_kd={d.get('alpha_kd'):g} alpha_task={d.get('alpha_task'):g}")


def _students(per_task: dict[str, dict[int, tuple[float, float]]]) -> dict[str, dict[int, float]]:
    """``task -> seed -> student score`` (drops the teacher score kept beside it)."""
    return {t: {seed: pair[0] for seed, pair in seeds.items()} for t, seeds in per_task.items()}


def main(out: Path) -> str:
    teacher_dirs = [out / "teachers", out / "fixes" / "full_data" / "teachers"]
    teachers = {}  # (budget, task) -> score
    for folder in teacher_dirs:
        for job in _load(folder):
            teachers[(_budget(job), job["task"])] = job["student"]["score"]
    by_path = {str(Path(j["run_dir"]) / "student"): _budget(j)
               for folder in teacher_dirs for j in _load(folder)}
    # scores[(script, teacher budget, student budget, recipe)][task][seed] = (student, teacher)
    scores: dict[tuple[str, str, str, str], dict[str, dict[int, tuple[float, float]]]] = \
        defaultdict(lambda: defaultdict(dict))
    sources = [("run.sh", out / task, task) for task in TASKS]
    sources += [("fixes.sh", p, p.name) for p in sorted(out.glob("fixes/*/*"))
                if p.name in TASKS]
    for script, folder, task in sources:
        for job in _load(folder):
            if job["choices"]["student"] != "minilm_3l" or job["choices"]["distill"] == "pkd":
                continue
            t_budget = by_path.get(str(Path(job["teacher"]["path"] or "")), "?")
            key = (script, t_budget, _budget(job), _recipe(job))
            scores[key][task][job["seed"]] = (job["student"]["score"], job["teacher"]["score"])
    head = " | ".join(HEAD[t] for t in TASKS)
    lines = [f"| script | teacher budget | student budget | recipe | {head} | retention |",
             "|" + "---|" * (len(TASKS) + 5)]
    for t_budget in sorted({b for b, _ in teachers}):
        cells = [_fmt([teachers[(t_budget, t)]]) if (t_budget, t) in teachers else "–"
                 for t in TASKS]
        lines.append(f"| | {t_budget} | | teacher | " + " | ".join(cells) + " | 100% |")
    for key in sorted(scores, key=lambda k: (k[0] != "run.sh", k[1], k[2], k[3] != BASELINE,
                                             k[3])):
        per_task = scores[key]
        cells = [_fmt([s for s, _ in per_task[t].values()]) if t in per_task else "–"
                 for t in TASKS]
        retention = "–"
        if set(per_task) == set(TASKS):
            kept = [statistics.mean(s / t for s, t in per_task[task].values()) for task in TASKS]
            retention = f"{100 * statistics.mean(kept):.1f}%"
        lines.append(f"| {key[0]} | {key[1]} | {key[2]} | {key[3]} | " + " | ".join(cells)
                     + f" | {retention} |")
    lines += ["", "Gain over the baseline of the same budgets (paired by seed, points):", "",
              f"| script | teacher budget | student budget | recipe | {head} "
              "| tasks where KD > baseline |", "|" + "---|" * (len(TASKS) + 5)]
    for key, per_task in sorted(scores.items()):
        base = scores.get((*key[:3], BASELINE), {})
        if key[3] == BASELINE or not base:
            continue
        cells, wins, compared = gain_cells(_students(per_task), _students(base))
        if compared:
            lines.append(f"| {key[0]} | {key[1]} | {key[2]} | {key[3]} | " + " | ".join(cells)
                         + f" | {wins}/{compared} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(main(Path(sys.argv[1] if len(sys.argv) > 1 else "outputs/glue_minilm")), end="")
