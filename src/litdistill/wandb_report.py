"""A sweep's report in W&B: one run of job type ``report`` in the sweep's group.

:func:`log_report` reads what ``litdistill-report`` wrote into a folder (``report.csv``,
``report.md``, the PNG plots) and logs it: the table as a W&B Table (``report/table``), the
students' Pareto fronts as native scatter plots (``report/score_vs_params``,
``report/score_vs_latency``: hover a point to see its configuration), every PNG as an image
(``plots/<name>``) and ``report.md`` as a file. Offline without a key or a network, like every
W&B run of litdistill (``wandb sync`` later). Called by ``litdistill-report --wandb``; a
sweep's report callback can call it at the end of a multirun.
"""

from __future__ import annotations

import csv
import logging
from pathlib import Path
from typing import Any

from litdistill.loggers import wandb_mode

log = logging.getLogger(__name__)

# (plot key, x column, y column, title): what a researcher reads a sweep for.
SCATTERS = (("score_vs_params", "params", "score_mean", "dev score vs parameters"),
            ("score_vs_latency", "latency_ms_b1", "score_mean",
             "dev score vs CPU latency (ms/example, batch 1)"))


def _number(text: str) -> Any:
    try:
        value = float(text)
    except ValueError:
        return text
    return int(value) if value.is_integer() and "." not in text else value


def read_csv(path: Path) -> tuple[list[str], list[list[Any]]]:
    """``report.csv`` as (columns, rows), numbers as numbers, blanks as None."""
    with path.open(newline="") as fh:
        reader = csv.reader(fh)
        columns = next(reader)
        rows = [[None if cell == "" else _number(cell) for cell in row] for row in reader]
    return columns, rows


def log_report(out: str | Path, group: str | None = None, project: str = "litdistill",
               mode: str = "auto", name: str | None = None) -> str | None:
    """Log the report in ``out`` into one W&B run of job type ``report``.

    Args:
        out: The folder ``litdistill-report`` wrote (report.csv, report.md, PNGs).
        group: The W&B group: the sweep's (default: the folder's name, as the sweep's jobs
            are grouped by ``runs.run_group``).
        project: W&B project.
        mode: ``auto``, ``online``, ``offline`` or ``disabled``.
        name: Run name (default ``report <group>``).

    Returns:
        The run's local folder (None when W&B is disabled).

    Raises:
        FileNotFoundError: ``out`` holds no report.csv.
    """
    import wandb

    out = Path(out)
    path = out / "report.csv"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: run litdistill-report first")
    columns, rows = read_csv(path)
    group = group or out.resolve().name
    run = wandb.init(project=project, group=group, job_type="report", dir=str(out),
                     name=name or f"report {group}", mode=wandb_mode(mode),
                     tags=["report"], reinit="create_new")
    try:
        table = wandb.Table(columns=columns, data=rows)
        logged: dict[str, Any] = {"report/table": table}
        students = [r for r in rows if r[columns.index("kind")] == "student"]
        for key, x, y, title in SCATTERS:
            if x not in columns or y not in columns:
                continue
            points = [[r[columns.index("config")], r[columns.index(x)], r[columns.index(y)]]
                      for r in students
                      if isinstance(r[columns.index(x)], int | float)
                      and isinstance(r[columns.index(y)], int | float)]
            if points:
                data = wandb.Table(columns=["config", x, y], data=points)
                logged[f"report/{key}"] = wandb.plot.scatter(data, x, y, title=title)
        for png in sorted(out.glob("*.png")):
            logged[f"plots/{png.stem}"] = wandb.Image(str(png), caption=png.stem)
        run.log(logged)
        run.summary.update({"jobs_rows": len(rows), "configurations": len(students)})
        if (out / "report.md").is_file():
            run.save(str(out / "report.md"), base_path=str(out), policy="now")
        folder = run.dir and str(Path(run.dir).parent)
    finally:
        run.finish()
    log.info("W&B: report logged to group %s (%s)", group, folder)
    return folder if mode != "disabled" else None
