"""The report's table as Markdown and CSV (:mod:`litdistill.report` builds the rows)."""

from __future__ import annotations

import csv
import io
from typing import Any

PLOTS = {"score_vs_params": "student score vs parameters",
         "score_vs_latency": "student score vs CPU latency (batch 1)",
         "retention_vs_params": "retention of the teacher's score vs parameters",
         "objectives": "mean score by objective (and temperature)"}


def config_label(job: dict[str, Any], common: set[str]) -> str:
    """A failed job's own overrides (what it does not share with every finished job)."""
    from litdistill.report import config_key

    own = " ".join(o for o in config_key(job.get("overrides") or []) if o not in common)
    return own or "(defaults)"


def _fmt(value: Any, spec: str) -> str:
    return "" if value is None else format(value, spec)


def _pm(row: dict[str, Any], key: str, spec: str) -> str:
    mean, std = row.get(f"{key}_mean"), row.get(f"{key}_std")
    if mean is None:
        return ""
    return f"{mean:{spec}} ± {std:{spec}}" if std is not None else format(mean, spec)


def _params(n: int | None) -> str:
    return "" if n is None else f"{n / 1e6:.1f}M" if n >= 1e5 else f"{n / 1e3:.1f}k"


_COLUMNS = [("config", lambda r: r["config"]), ("task", lambda r: r["task"] or ""),
            ("student", lambda r: r["model"] or ""), ("params", lambda r: _params(r["params"])),
            ("objective", lambda r: r["objective"]),
            ("T", lambda r: _fmt(r.get("temperature"), "g")),
            ("α_kd", lambda r: _fmt(r.get("alpha_kd"), "g")),
            ("score", lambda r: _pm(r, "score", ".4f")), ("n", lambda r: str(r["score_n"])),
            ("retention", lambda r: _pm(r, "retention", ".3f")),
            ("agreement", lambda r: _pm(r, "agreement", ".3f")),
            ("ms/ex b=1", lambda r: _fmt(r.get("latency_ms_b1"), ".2f")),
            ("ex/s b=32", lambda r: _fmt(r.get("throughput_b32"), ".1f")),
            ("train s", lambda r: _fmt(r.get("train_seconds_mean"), ".0f"))]
CSV_FIELDS = ["kind", "config", "task", "model", "params", "objective", "temperature",
              "alpha_kd", *(f"{k}_{s}" for k in ("score", "retention", "agreement",
                                                "train_seconds") for s in ("mean", "std", "n")),
              "latency_ms_b1", "throughput_b32", "seeds", "model_dir", "jobs"]


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


