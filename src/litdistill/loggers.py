"""Experiment loggers that never block on the network, and that a resumed run continues."""

from __future__ import annotations

import csv
import logging
import netrc
import os
import uuid
from pathlib import Path
from typing import Any

from lightning.pytorch.loggers import CSVLogger, Logger, WandbLogger

from litdistill.network import reachable

log = logging.getLogger(__name__)


def _wandb_key_configured() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        return netrc.netrc().authenticators("api.wandb.ai") is not None
    except (OSError, netrc.NetrcParseError):
        return False


def wandb_mode(mode: str = "auto") -> str:
    """Decide ``online`` or ``offline`` without ever waiting on a dead network.

    ``auto`` is online only when ``WANDB_MODE`` does not say otherwise, an API key is
    configured, and the W&B host answers within 3 s (wandb.init would otherwise block for
    about 100 s with a key and no network). Offline runs sync later with ``wandb sync``.
    """
    env = os.environ.get("WANDB_MODE", "").lower()
    if mode == "auto":
        mode = env if env in {"offline", "disabled", "dryrun"} else "auto"
    if mode == "auto":
        host = os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai").split("//")[-1]
        online = _wandb_key_configured() and reachable(host.split("/")[0].split(":")[0])
        mode = "online" if online else "offline"
        if not online:
            log.info("W&B: no API key or no route to W&B, logging offline (wandb sync later)")
    return "offline" if mode == "dryrun" else mode


def wandb_run_id(save_dir: str, resume: bool) -> str:
    """The W&B run id of this run dir: the stored one when resuming, else a new one (stored
    in ``<save_dir>/wandb_id``, so a later ``resume=true`` continues the same W&B run)."""
    path = Path(save_dir) / "wandb_id"
    if resume and path.is_file() and (stored := path.read_text().strip()):
        return stored
    run_id = uuid.uuid4().hex[:12]
    path.write_text(run_id + "\n")
    return run_id


# Config groups a W&B user filters and groups runs by (tags ``<group>:<option>``).
TAG_GROUPS = {"task": "task", "distill": "objective", "student": "student",
              "transfer": "transfer", "augment": "augment"}


def pick_job_type(teacher: bool, general: bool = False) -> str:
    """``general`` (task-agnostic distillation on a corpus), ``teacher`` (no teacher:
    fine-tuning, how teachers are trained) or ``student`` (a student run beside a teacher:
    distilled, or the no-KD baseline the report pairs it with)."""
    if general:
        return "general"
    return "student" if teacher else "teacher"


def run_tags(facts: dict[str, Any], choices: dict[str, str]) -> list[str]:
    """``task:sst2``, ``objective:kd``, ``student:minilm_3l``, ``transfer:none``,
    ``augment:none``: the option each group runs (Hydra's choices; ``facts`` outside a Hydra
    app, e.g. a composed config)."""
    tags = []
    for group, tag in TAG_GROUPS.items():
        value = choices.get(group) or facts.get(tag)
        if value not in (None, ""):
            tags.append(f"{tag}:{value}"[:64])  # W&B's limit per tag
    return tags


def wandb_logger(project: str, save_dir: str, name: str | None = None,
                 group: str | None = None, mode: str = "auto", resume: Any = False,
                 job_type: str = "auto", tags: Any = "auto",
                 facts: dict[str, Any] | None = None, log_student: bool = False,
                 **kwargs: Any) -> WandbLogger:
    """Lightning's WandbLogger with the run's name, group, job type and tags and a
    network-safe mode.

    Args:
        project: W&B project.
        save_dir: Folder for the local run files (the job's run dir).
        name: Run name (from the job's overrides).
        group: Group (the sweep or experiment) so jobs of one sweep sit together.
        mode: ``auto``, ``online``, ``offline`` or ``disabled``.
        resume: The job's ``resume`` (true or a checkpoint path: continue this run dir's W&B
            run, whose id ``wandb_id`` holds).
        job_type: ``auto`` (:func:`pick_job_type`) or a name.
        tags: ``auto`` (:func:`run_tags`) or a list.
        facts: What ``auto`` reads from the job config: ``task``, ``teacher`` (any value: a
            teacher is given), ``objective_target`` (the distill ``_target_``: a general
            objective), and option names outside a Hydra app (``student``...).
        log_student: At the end, log the exported student (and ONNX graphs) as an artifact
            (:func:`litdistill.monitors.finish_run`).
        **kwargs: Passed to :class:`WandbLogger` (entity, ...).
    """
    from litdistill.runs import choices  # runs imports this module's neighbours

    facts = dict(facts or {})
    picked = choices()
    if job_type == "auto":
        general = str(facts.get("objective_target") or "").endswith("GeneralObjective")
        job_type = pick_job_type(facts.get("teacher") is not None, general)
    if tags == "auto":
        tags = run_tags(facts, picked)
    mode = wandb_mode(mode)
    os.makedirs(save_dir, exist_ok=True)
    run_id = wandb_run_id(save_dir, resume not in (None, False, "false"))
    logger = WandbLogger(project=project, save_dir=save_dir, name=name, group=group,
                         offline=mode == "offline", mode=mode, id=run_id, resume="allow",
                         job_type=job_type, tags=list(tags or []), **kwargs)
    logger.log_student = bool(log_student)
    return logger


def keep_logged_rows(loggers: list[Logger], step: int) -> None:
    """A resumed run's CSV logs keep what the interrupted run logged before ``step`` (the
    checkpoint's global step); what it logged from there on is logged again.

    Call before anything is logged: Lightning's CSV writer deletes ``metrics.csv`` when it
    starts, so the rows are read first and handed to the new writer.
    """
    for logger in loggers:
        if not isinstance(logger, CSVLogger):
            continue
        path = Path(logger.log_dir) / "metrics.csv"
        rows = []
        if path.is_file():
            with path.open(newline="") as fh:
                rows = [r for r in csv.DictReader(fh) if r.get("step") and int(r["step"]) < step]
        for row in rows:  # values stay the strings they were, so they are written as read
            values = {k: v for k, v in row.items() if k != "step" and v != ""}
            logger.experiment.log_metrics(values, int(row["step"]))
