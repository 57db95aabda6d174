"""The study's table per task, from the reports ``run.sh`` writes (nothing typed by hand).

Reads ``report/report.csv`` + ``report/intervals.csv`` (intervals against random 4 x 312 and
the teacher, latency of the int8 graphs) and ``intervals_vs_cut.csv`` (a second report's
intervals against the 3-layer depth cut) and prints a markdown table per task: shape,
parameters (and share of the teacher's), MB, kept vocabulary, int8 ONNX latency at batch 1,
score over the seeds, retention, and the paired 95% intervals.

    python experiments/student_shapes/summary.py [--dir experiments/student_shapes]
    python experiments/student_shapes/summary.py --majority STUDY/students   # collapse check

``--majority`` instead prints, for every run's saved dev predictions, the share of dev rows
it predicts as the dev set's majority class (1.0: a student that learned a constant).
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import numpy as np

# (interval kind, file it is in, column)
VERSUS = (("reference", "report/intervals.csv", "vs random 4x312"),
          ("reference", "intervals_vs_cut.csv", "vs cut 3x384"),
          ("baseline", "report/intervals.csv", "vs its no-KD twin"),
          ("teacher", "report/intervals.csv", "vs teacher"))


def shape(config: str) -> str:
    """A short name for a configuration (its overrides)."""
    words = dict(w.split("=", 1) for w in config.split())
    name = {"tinybert_4l": "random 4x312", "minilm_3l": "cut 3x384"}.get(
        words.get("student", ""), f"pruned 3x{words.get('student.hidden', '?')}")
    if words.get("student.vocab") == "task":
        name += " + vocab" + (" (all train pieces)" if "student.vocab_extra" in words else "")
    if words.get("student.importance") == "gradient":
        name += " (gradient importance)"
    return name + (" no-KD" if words.get("distill") == "none" else "")


def _read(path: Path) -> list[dict[str, str]]:
    with path.open() as fh:
        return list(csv.DictReader(fh))


def _ci(found: dict[str, str] | None) -> str:
    if not found:
        return ""
    star = " *" if found["excludes_zero"] == "1" else ""
    return (f"{100 * float(found['gain']):+.1f}{star} [{100 * float(found['low']):+.1f}, "
            f"{100 * float(found['high']):+.1f}] (n={found['n_pairs']})")


def tables(folder: Path) -> str:
    """The markdown tables (one per task) of the study in ``folder``."""
    rows = _read(folder / "report" / "report.csv")
    intervals = {(i["task"], i["config"], i["versus"], name): i
                 for name in {file for _, file, _ in VERSUS} if (folder / name).is_file()
                 for i in _read(folder / name)}
    out = []
    for task in sorted({r["task"] for r in rows}):
        teacher = next(r for r in rows if r["task"] == task and r["kind"] == "teacher")
        t_params = float(teacher["params"])
        head = ["shape", "params", "MB", "vocab", "int8 ms b=1", "score", "retention",
                *(label for _, _, label in VERSUS)]
        out += [f"### {task} (teacher {float(teacher['score_mean']):.4f}, "
                f"{t_params / 1e6:.1f}M, {float(teacher['size_mb']):.1f} MB)", "",
                "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for r in (r for r in rows if r["task"] == task and r["kind"] == "student"):
            int8 = next((e for e in rows if e["kind"] == "export"
                         and e["config"] == f"{r['config']} [onnx int8]"), {})
            std = f" ± {float(r['score_std']):.4f}" if r["score_std"] else ""
            params = float(r["params"])
            cells = [shape(r["config"]), f"{params / 1e6:.2f}M ({100 * params / t_params:.0f}%)",
                     f"{float(r['size_mb']):.1f}", r["vocab"],
                     f"{float(int8['latency_ms_b1']):.2f}" if int8.get("latency_ms_b1") else "",
                     f"{float(r['score_mean']):.4f}{std} (n={r['score_n']})",
                     f"{100 * float(r['retention_mean']):.1f}%",
                     *(_ci(intervals.get((task, r["config"], versus, name)))
                       for versus, name, _ in VERSUS)]
            out.append("| " + " | ".join(cells) + " |")
        out.append("")
    return "\n".join(out)


def majority(students: Path) -> str:
    """Per run (a line each): the share of dev predictions that are the majority class."""
    out = ["| run | dev majority share | student predicts it | teacher predicts it | "
           "student accuracy |", "|---|---|---|---|---|"]
    for path in sorted(students.glob("*/predictions.npz")):
        z = np.load(path)
        for split in (k.split(".", 1)[1] for k in z if k.startswith("labels.")):
            labels, student = z[f"labels.{split}"], z[f"student.{split}"]
            if student.ndim != 2 or student.shape[1] < 2:
                continue  # regression: no classes
            top = np.bincount(labels.astype(int)).argmax()
            share = [float((z[f"{who}.{split}"].argmax(-1) == top).mean())
                     for who in ("student", "teacher")]
            out.append(f"| {path.parent.name} | {float((labels == top).mean()):.3f} | "
                       f"{share[0]:.3f} | {share[1]:.3f} | "
                       f"{float((student.argmax(-1) == labels).mean()):.3f} |")
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", type=Path, default=Path(__file__).parent)
    parser.add_argument("--majority", type=Path, help="a study's students/ folder")
    args = parser.parse_args()
    print(majority(args.majority) if args.majority else tables(args.dir))


if __name__ == "__main__":
    main()
