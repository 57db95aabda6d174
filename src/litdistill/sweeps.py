"""A sweep's job folders as the report reads them: every job under the given folders,
finished or not, each job's results read through :class:`~litdistill.rundir.RunDir`, with
the overrides and config-group choices of files written before results.json held them."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import yaml

from litdistill.errors import LitDistillError
from litdistill.rundir import RunDir, RunDirError


class ReportError(LitDistillError):
    """Bad input to ``litdistill-report``."""


def _natural(path: Path) -> list[Any]:
    # Job 10 after job 9; digit runs land at odd indices, so int and str never meet.
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", str(path))]


def _yaml(path: Path) -> Any:
    try:
        return yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError):
        return None


def read_json(path: Path) -> Any:
    """A JSON file, or None when it is missing or damaged (an optional file)."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _load_job(job_dir: Path) -> dict[str, Any]:
    """One job's results, with overrides and choices taken from ``.hydra/`` for old files
    (a damaged results.json: a failed job whose error says so)."""
    run = RunDir(job_dir)
    try:
        res: dict[str, Any] = dict(run.read_results())
    except RunDirError as err:
        res = {"status": "failed", "error": str(err)}
    if res.get("overrides") is None:
        res["overrides"] = _yaml(run.overrides_path) or []
    if not res.get("choices"):
        hydra = _yaml(run.hydra_path) or {}
        res["choices"] = (hydra.get("hydra") or {}).get("runtime", {}).get("choices") or {}
    res["job_dir"] = str(job_dir)
    return res


def find_jobs(dirs: list[Path]) -> list[dict[str, Any]]:
    """Every job under ``dirs`` (sweep or job folders), including ones that never finished.

    Raises:
        ReportError: A folder does not exist or holds no results.json at all.
    """
    jobs = []
    for folder in dirs:
        if not folder.is_dir():
            what = "not a folder" if folder.exists() else "no such folder"
            raise ReportError(f"{folder}: {what}; pass a sweep folder "
                              "(multirun/<stamp>/) or a job folder holding results.json")
        done = {p.parent for p in folder.rglob("results.json")}
        if not done:
            raise ReportError(f"{folder}: no results.json under it; pass a sweep folder "
                              "(multirun/<stamp>/) or job folder whose jobs have finished")
        started = {p.parent.parent for p in folder.rglob(".hydra/overrides.yaml")}
        for job_dir in sorted(done | started, key=_natural):
            job = _load_job(job_dir) if job_dir in done else {
                "status": "failed", "error": "no results.json (still running, or killed)",
                "overrides": _yaml(job_dir / ".hydra" / "overrides.yaml") or [],
                "job_dir": str(job_dir)}
            jobs.append(job)
    return jobs
