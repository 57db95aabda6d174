"""``litdistill-report``: one table, CSV and set of plots for one or more finished sweeps.

Reads every ``results.json`` under the given sweep (or job) folders, merges jobs that differ
only in ``seed`` into one configuration (mean ± sample std over seeds), times every exported
model itself, one at a time with fixed threads (jobs of a parallel sweep disturb each other's
timings), and writes ``report.md``, ``report.csv`` and PNG plots (:mod:`litdistill.plots`)::

    litdistill-report multirun/2025-01-01_12-00-00 [more sweeps...] [--out DIR] [--no-latency]
"""

from __future__ import annotations

import argparse
import datetime
import logging
import math
import re
import shlex
import statistics
import sys
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from litdistill import atomic
from litdistill import latency as timing
from litdistill.errors import LitDistillError, cli_main
from litdistill.intervals import add_intervals, render_intervals, render_intervals_csv
from litdistill.plots import write_plots
from litdistill.rundir import ONNX_FP32, ONNX_INT8, RunDir
from litdistill.runs import config_key
from litdistill.sweeps import ReportError, find_jobs, read_json
from litdistill.tables import PLOTS, render_csv, render_markdown

__all__ = ["PLOTS", "ReportCallback", "ReportError", "build_rows", "config_key", "find_jobs",
           "main", "report"]
log = logging.getLogger(__name__)


# Override roots a KD configuration may differ in from its no-KD baseline.
PAIR_FREE = ("distill", "transfer", "augment")


def _root(override: str) -> str:
    return re.split(r"[./]", override.lstrip("+~").split("=", 1)[0])[0]


def pair_key(job: dict[str, Any]) -> tuple[str, ...]:
    """What a KD job shares with its baseline: its configuration minus the objective,
    transfer set and augmentation (same task, student, labelled rows, teacher, budget)."""
    return tuple(o for o in config_key(job.get("overrides") or []) if _root(o) not in PAIR_FREE)


def recipe_key(key: tuple[str, ...]) -> tuple[str, ...]:
    """A configuration across tasks: without the task and the per-task teacher folder."""
    return tuple(o for o in key if _root(o) != "task"
                 and not o.lstrip("+~").startswith("teacher.name_or_path"))


def is_baseline(job: dict[str, Any]) -> bool:
    """No distillation at all: ``distill=none``, no transfer set, no augmentation."""
    chosen = job.get("choices") or {}
    return _objective(job) == "none" and chosen.get("transfer", "none") == "none" \
        and chosen.get("augment", "none") == "none"


def _stats(values: Any) -> tuple[float | None, float | None, int]:
    vals = [float(v) for v in values if v is not None and not math.isnan(float(v))]
    if not vals:
        return None, None, 0
    return statistics.mean(vals), statistics.stdev(vals) if len(vals) > 1 else None, len(vals)


def _objective(job: dict[str, Any]) -> str:
    if (job.get("choices") or {}).get("distill"):
        return str(job["choices"]["distill"])
    distill = job.get("distill") or {}
    if not distill:
        return "?"
    if distill.get("phases"):
        return "phased"
    if distill.get("terms"):
        return "kd+" + "+".join(sorted(distill["terms"]))
    return "kd" if distill.get("alpha_kd") else "none"


def _choice(job: dict[str, Any], group: str) -> str:
    """The job's option of a config group; ``none`` for runs from before the group existed."""
    return str((job.get("choices") or {}).get(group) or "none")


def _student_dir(job: dict[str, Any]) -> str | None:
    # A sweep folder copied elsewhere still holds its students under <job>/student.
    recorded = job.get("student_dir")
    for candidate in (recorded, Path(job["job_dir"]) / "student"):
        if candidate and Path(candidate).is_dir():
            return str(candidate)
    return recorded


def build_rows(jobs: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], set[str]]:
    """Teacher reference rows, then one row per configuration (best mean score first).

    Returns:
        The rows and the overrides common to every finished job (left out of the labels).
    """
    ok = [j for j in jobs if j.get("status") == "ok" and j.get("student")]
    keys = [set(config_key(j.get("overrides") or [])) for j in ok or jobs]
    common = set.intersection(*keys) if keys else set()
    groups: dict[tuple[str, ...], list[dict[str, Any]]] = {}
    for job in ok:
        groups.setdefault(config_key(job.get("overrides") or []), []).append(job)
    rows, teachers = [], {}
    for key, group in groups.items():
        first, distill = group[0], group[0].get("distill") or {}
        row = {"kind": "student", "task": first.get("task"),
               "config": " ".join(o for o in key if o not in common) or "(defaults)",
               "model": first["student"].get("name"), "params": first["student"].get("params"),
               "vocab": first["student"].get("vocab_size"), "objective": _objective(first),
               "transfer": _choice(first, "transfer"),
               "augment": _choice(first, "augment"), "temperature": distill.get("temperature"),
               "alpha_kd": distill.get("alpha_kd"), "seeds": [j.get("seed") for j in group],
               "jobs": [j["job_dir"] for j in group],
               "scores": [j["student"].get("score") for j in group],
               "by_seed": {j.get("seed"): j["student"].get("score") for j in group},
               "pair_key": pair_key(first), "baseline": is_baseline(first),
               "recipe": recipe_key(key),
               "model_dir": next((d for d in map(_student_dir, group) if d and Path(d).is_dir()),
                                 _student_dir(first))}
        for name, get in (("score", lambda j: j["student"].get("score")),
                          ("retention", lambda j: j.get("retention")),
                          ("agreement", lambda j: j["student"].get("agreement")),
                          ("train_seconds", lambda j: j.get("train_seconds"))):
            row[f"{name}_mean"], row[f"{name}_std"], row[f"{name}_n"] = _stats(map(get, group))
        rows.append(row)
        for job in group:
            if t := job.get("teacher"):
                score = t.get("score")
                tkey = (job.get("task"), t.get("path") or t.get("name"),
                        None if score is None else round(score, 6))
                teachers.setdefault(tkey, {
                    "kind": "teacher", "task": job.get("task"), "config": "teacher (reference)",
                    "model": t.get("name"), "params": t.get("params"),
                    "vocab": t.get("vocab_size"), "objective": "teacher",
                    "score_mean": score, "score_n": int(score is not None), "jobs": [],
                    "model_dir": t.get("path")})
                teachers[tkey]["jobs"].append(job["job_dir"])
                for key, field in (("params", "params"), ("vocab", "vocab_size")):
                    if teachers[tkey][key] is None:  # a no-KD job may not have loaded it
                        teachers[tkey][key] = t.get(field)
    rows.sort(key=lambda r: (str(r["task"]), r["score_mean"] is None, -(r["score_mean"] or 0)))
    paired_gains(rows)
    return list(teachers.values()) + rows, common


def paired_gains(rows: list[dict[str, Any]]) -> None:
    """Give every KD configuration its gain over the baseline of the same task and
    :func:`pair_key`, paired by seed: ``gain_mean``/``gain_std``/``gain_n`` (score units)."""
    baselines = {(r["task"], r["pair_key"]): r for r in rows if r["baseline"]}
    for row in rows:
        base = baselines.get((row["task"], row["pair_key"]))
        if row["baseline"] or base is None:
            continue
        seeds = [s for s in row["by_seed"] if s in base["by_seed"]]
        diffs = [row["by_seed"][s] - base["by_seed"][s] for s in seeds
                 if row["by_seed"][s] is not None and base["by_seed"][s] is not None]
        row["gain_mean"], row["gain_std"], row["gain_n"] = _stats(diffs)
        row["baseline_score"] = statistics.mean(base["by_seed"][s] for s in seeds) \
            if diffs else None


# Graphs litdistill-export writes into a job's export/ folder (see litdistill.export).
EXPORTED = {"onnx fp32": ("fp32", ONNX_FP32), "onnx int8": ("int8", ONNX_INT8)}


def export_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per exported variant of a configuration (``litdistill-export`` run on its
    jobs): the graph's dev score from ``export.json``, its file as the model to time."""
    extra = []
    for row in [r for r in rows if r["kind"] == "student"]:
        exports = [e for e in (read_json(RunDir(j).export_json) for j in row["jobs"])
                   if isinstance(e, dict) and e.get("scores")]
        for label, (key, name) in EXPORTED.items():
            found = [e for e in exports if key in e["scores"] and name in e.get("files", {})]
            if not found:
                continue
            graph = RunDir(found[0]["source_run"]).export_dir / name
            variant = {k: row.get(k) for k in ("task", "params", "vocab", "objective",
                                               "transfer", "augment", "temperature",
                                               "alpha_kd", "recipe")}
            variant.update(kind="export", config=f"{row['config']} [{label}]",
                           model=f"{row['model']} ({label})", jobs=[e["source_run"] for e in found],
                           seeds=[], model_dir=str(graph), baseline=False,
                           size_mb=found[0]["files"][name]["bytes"] / 2**20)
            scores = [e["scores"][key]["score"] for e in found]
            variant["score_mean"], variant["score_std"], variant["score_n"] = _stats(scores)
            extra.append(variant)
    return extra


def _timed(path: str) -> tuple[Any, Any]:
    """A model to time: a save_pretrained folder, or an exported graph beside its tokenizer."""
    if path.endswith(".onnx"):
        from litdistill.models import load_tokenizer

        return Path(path), load_tokenizer(str(Path(path).parent))
    return timing.load(path)


def measure_rows(rows: list[dict[str, Any]], threads: int, repeats: int) -> list[str]:
    """Time each row's model folder (once per folder), one model at a time; return notes."""
    timings: dict[str, dict[str, float] | str] = {}
    notes = []
    for row in rows:
        path = row.get("model_dir")
        if not path or not Path(path).exists():
            why = "no saved weights" if not path else f"folder {path} is missing"
            notes.append(f"{row['model']} ({row['config']}): {why}; latency left blank")
            continue
        if path not in timings:
            try:
                measured = timing.measure_models([_timed(path)], threads=threads,
                                                repeats=repeats)[0]
                timings[path] = {"latency_ms_b1": measured["ms_per_example_b1"],
                                 "throughput_b32": measured["examples_per_s_b32"]}
            except (OSError, ValueError, ImportError, LitDistillError) as err:
                first = (str(err).splitlines() or [""])[0]
                timings[path] = f"could not load {path}: {type(err).__name__}: {first}"
        if isinstance(timings[path], str):
            notes.append(f"{row['model']} ({row['config']}): {timings[path]}; latency left blank")
        else:
            row.update(timings[path])
    return notes


def report(dirs: list[Path], out: Path, latency: bool = True, threads: int = 1,
           repeats: int = 20, command: str = "litdistill-report",
           reference: str | None = None) -> dict[str, Any]:
    """Read the sweeps in ``dirs``, measure latency, write report.md/csv and plots to ``out``.

    Returns:
        ``rows`` (teacher references, then configurations), ``jobs``, ``plots`` (name ->
        written) and ``notes``.

    Raises:
        ReportError: A folder is missing or holds no results.json, or bad ``threads``/``repeats``.
    """
    if threads < 1 or repeats < 1:
        raise ReportError("--threads and --repeats must be at least 1")
    jobs = find_jobs(dirs)
    rows, common = build_rows(jobs)
    add_intervals(rows, jobs, reference)
    rows += export_rows(rows)
    for row in rows:
        row.setdefault("size_mb", timing.size_mb(row.get("model_dir")))
    if latency:
        notes = measure_rows(rows, threads, repeats)
        how = (f"measured by this report, one model at a time, torch threads={threads}: "
               f"median of {repeats} batch-1 calls (after 3 warm-up) and of "
               f"{max(3, repeats // 3)} batch-32 calls, {len(timing.TEXTS)} fixed English "
               f"sentences (max_length {timing.MAX_LENGTH}); one exported student per "
               "configuration; ONNX graphs (litdistill-export) in onnxruntime")
    else:
        notes, how = [], "not measured (--no-latency)"
    out.mkdir(parents=True, exist_ok=True)
    plots = write_plots(rows, out)
    meta = {"sweeps": ", ".join(f"`{d.resolve()}`" for d in dirs),
            "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
            "machine": timing.machine(),
            "latency": how, "command": f"`{command}`",
            "jobs": f"{len(jobs)} ({sum(r['kind'] == 'student' for r in rows)} configurations)"}
    atomic.write_text(out / "report.csv", render_csv(rows))
    markdown = render_markdown(rows, jobs, common, meta, plots, notes)
    if interval_lines := render_intervals(rows):
        markdown = markdown.rstrip("\n") + "\n" + "\n".join(interval_lines) + "\n"
        atomic.write_text(out / "intervals.csv", render_intervals_csv(rows))
    atomic.write_text(out / "report.md", markdown)
    return {"rows": rows, "jobs": jobs, "plots": plots, "notes": notes}


@cli_main
def main(argv: list[str] | None = None) -> int:
    """CLI: ``litdistill-report SWEEP_DIR [SWEEP_DIR...] [--out DIR] [--no-latency]``."""
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(
        prog="litdistill-report", description="Table, CSV and plots of finished sweeps, with "
        "every model's CPU latency measured by the report itself.")
    parser.add_argument("sweep_dirs", nargs="+", type=Path,
                        help="multirun/<stamp>/ folders or single job folders")
    parser.add_argument("--out", type=Path, help="output folder (default: the first SWEEP_DIR)")
    parser.add_argument("--no-latency", action="store_true", help="skip the latency timing")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads while timing (default 1: least disturbed by load)")
    parser.add_argument("--repeats", type=int, default=20,
                        help="timed batch-1 calls per model (default 20; batch 32: a third)")
    parser.add_argument("--reference", help="overrides naming one configuration per task "
                        "(e.g. 'student=tinybert_4l'): every other one gets a paired "
                        "interval against it")
    parser.add_argument("--wandb", action="store_true", help="also log the tables and plots "
                        "into one W&B run (job type report) in the sweep's group")
    args = parser.parse_args(argv)
    out = args.out or args.sweep_dirs[0]
    result = report(args.sweep_dirs, out, latency=not args.no_latency, threads=args.threads,
                    repeats=args.repeats, command=shlex.join(["litdistill-report", *argv]),
                    reference=args.reference)
    failed = sum(not (j.get("status") == "ok" and j.get("student")) for j in result["jobs"])
    print(f"{len(result['jobs'])} jobs, {failed} failed; wrote {out}/report.md, report.csv "
          f"and {sum(result['plots'].values())} plots")
    if args.wandb:
        from litdistill.wandb_report import log_report

        log_report(out)
    return 0


class ReportCallback(Callback):
    """Hydra callback: write the sweep's report when a ``--multirun`` ends (see
    ``conf/experiment/student_sizes.yaml``), so one command gives jobs and report.

    Args:
        latency: Measure every model's CPU latency.
        threads: torch threads while timing.
        wandb: Also log the report into one W&B run of job type ``report`` in the sweep's
            group (:func:`litdistill.wandb_report.log_report`; offline without a key).
    """

    def __init__(self, latency: bool = True, threads: int = 1, wandb: bool = False) -> None:
        self.latency, self.threads, self.wandb = latency, threads, wandb

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep = Path(config.hydra.sweep.dir)
        try:
            result = report([sweep], sweep, latency=self.latency, threads=self.threads,
                            command=f"litdistill-report {sweep}")
        except LitDistillError as err:
            log.error("no report for %s: %s", sweep, err)
            return
        log.info("report of %d jobs: %s", len(result["jobs"]), sweep / "report.md")
        if self.wandb:
            from litdistill.wandb_report import log_report  # wandb only when asked

            log_report(sweep)


if __name__ == "__main__":
    sys.exit(main())

