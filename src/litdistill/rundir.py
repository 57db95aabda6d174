"""A run directory: the one place that knows its layout and reads/writes ``results.json``.

``litdistill-train`` writes one folder per job::

    results.json            ok or failed, the schema of :class:`Results`
    results.failed.json     a failure that must not replace an ok results.json
    .hydra/config.yaml      the job config (absent for ``train(cfg)`` called from Python)
    student/                the best student, ``save_pretrained``
    checkpoints/last.ckpt   what ``resume=true`` continues
    export/                 ``litdistill-export``: model.onnx, model.int8.onnx, export.json
    csv/ train.log          logs
    predictions.npz         per-row dev predictions (when recorded)

Every reader (skip/resume, report, export, demo) goes through :class:`RunDir`, so a missing
or damaged file is the same :class:`RunDirError` everywhere.
"""

from __future__ import annotations

import json
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypedDict

import numpy as np
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from litdistill import atomic
from litdistill.errors import LitDistillError
from litdistill.tasks import TaskSpec, get_task, with_labels_from

# Version 1 added ``schema_version``; files without it (version 0) hold the same keys.
SCHEMA_VERSION = 1
RESULTS = "results.json"
RESULTS_FAILED = "results.failed.json"
# What litdistill-export writes into ``export/`` (or ``--out``).
ONNX_FP32 = "model.onnx"
ONNX_INT8 = "model.int8.onnx"
EXPORT_JSON = "export.json"
STATUSES = ("ok", "failed")


class RunDirError(LitDistillError):
    """A run dir's results.json or config is missing or damaged."""


class ModelEntry(TypedDict, total=False):
    """``results.json``'s ``student`` / ``teacher``."""

    name: str
    params: int | None
    score: float | None
    metrics: dict[str, float]
    agreement: float | None  # student: agreement with the teacher on dev
    path: str | None  # teacher: its weights


class Results(TypedDict, total=False):
    """``results.json``: every key the README lists, in the order a run writes them.

    A failed run holds the keys up to ``config_sha`` plus ``student``, ``teacher``,
    ``error``, ``retention`` and ``train_seconds``; an ok run all of them.
    """

    schema_version: int
    status: Literal["ok", "failed"]
    task: str | None
    overrides: list[str]
    run_dir: str
    choices: dict[str, str]
    config_sha: str
    metric_names: list[str]
    label_names: list[str] | None
    transfer: dict[str, Any] | None
    teacher_gate: dict[str, Any] | None
    teacher_cache: dict[str, Any] | None
    error: str | None
    student: ModelEntry | None
    teacher: ModelEntry | None
    retention: float | None
    train_seconds: float
    distill: dict[str, Any]
    seed: int
    best_checkpoint: str | None
    student_dir: str
    global_step: int
    epochs: int
    phase_starts: list[list[Any]]
    epoch_seconds: list[float]


def check_results(obj: Any, where: Path) -> Results:
    """``obj`` as :class:`Results` once its shape is checked.

    Raises:
        RunDirError: Not a litdistill results dict (no or unknown ``status``, a newer
            ``schema_version``, a ``student``/``teacher`` that is no mapping).
    """
    problem = None
    if not isinstance(obj, dict):
        problem = f"holds a {type(obj).__name__}, not a mapping"
    elif obj.get("status") not in STATUSES:
        problem = f"status {obj.get('status')!r} is none of {', '.join(STATUSES)}"
    elif not isinstance(obj.get("schema_version", 0), int) \
            or obj.get("schema_version", 0) > SCHEMA_VERSION:
        problem = (f"schema_version {obj.get('schema_version')!r} is newer than this "
                   f"litdistill's ({SCHEMA_VERSION}); upgrade litdistill")
    elif any(obj.get(k) is not None and not isinstance(obj[k], dict)
             for k in ("student", "teacher")):
        problem = "its student/teacher entry is no mapping"
    if problem:
        raise RunDirError(f"{where}: results.json is damaged ({problem}); rerun the job or "
                          "delete the folder")
    return obj  # type: ignore[return-value]


@dataclass(frozen=True)
class RunDir:
    """One job's folder (see the module docstring for the layout).

    Args:
        path: The run dir (``paths.output_dir`` of the job).
    """

    path: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "path", Path(self.path))  # a str from a caller or a config

    @property
    def results_path(self) -> Path:
        return self.path / RESULTS

    @property
    def failed_path(self) -> Path:
        return self.path / RESULTS_FAILED

    @property
    def config_path(self) -> Path:
        return self.path / ".hydra" / "config.yaml"

    @property
    def overrides_path(self) -> Path:
        return self.path / ".hydra" / "overrides.yaml"

    @property
    def hydra_path(self) -> Path:
        return self.path / ".hydra" / "hydra.yaml"

    @property
    def student_dir(self) -> Path:
        return self.path / "student"

    @property
    def checkpoints_dir(self) -> Path:
        return self.path / "checkpoints"

    @property
    def last_checkpoint(self) -> Path:
        return self.checkpoints_dir / "last.ckpt"

    @property
    def export_dir(self) -> Path:
        return self.path / "export"

    @property
    def predictions_path(self) -> Path:
        return self.path / "predictions.npz"

    @property
    def log_path(self) -> Path:
        return self.path / "train.log"

    def onnx_path(self, quantize: str | None = None, folder: Path | None = None) -> Path:
        """The exported graph (``quantize="int8"``: the quantized one) in ``export/``
        or ``folder``."""
        return (folder or self.export_dir) / (ONNX_INT8 if quantize == "int8" else ONNX_FP32)

    @property
    def export_json(self) -> Path:
        return self.export_dir / EXPORT_JSON

    def has_results(self) -> bool:
        return self.results_path.is_file()

    def has_student(self) -> bool:
        return (self.student_dir / "config.json").is_file()

    def read_results(self) -> Results:
        """``results.json``, checked (:func:`check_results`).

        Raises:
            RunDirError: Missing, unreadable, not JSON, or not a litdistill results file.
        """
        path = self.results_path
        if not path.is_file():
            raise RunDirError(f"{self.path}: no results.json (not a litdistill-train run dir, "
                              "or the job is still running or was killed)")
        try:
            obj = json.loads(path.read_text())
        except (OSError, ValueError) as err:
            reason = str(err).splitlines()[0] if str(err) else type(err).__name__
            raise RunDirError(f"{self.path}: results.json is damaged ({reason}); rerun the "
                              "job or delete the folder") from None
        return check_results(obj, self.path)

    def ok_results(self) -> Results | None:
        """``results.json`` of an ok run; None when absent, failed or damaged (what
        ``skip_done`` treats as "not done")."""
        try:
            results = self.read_results()
        except RunDirError:
            return None
        return results if results["status"] == "ok" else None

    def write_results(self, results: Results | dict[str, Any], *, failed: bool = False
                      ) -> Path:
        """Write ``results`` atomically, to ``results.failed.json`` when ``failed``."""
        return atomic.write_json(self.failed_path if failed else self.results_path, results)

    def read_predictions(self) -> dict[str, np.ndarray] | None:
        """``predictions.npz`` (:mod:`litdistill.outputs`), or None for a run without one
        (recorded before litdistill 0.2, or a failed run).

        Raises:
            RunDirError: The file is damaged.
        """
        if not self.predictions_path.is_file():
            return None
        try:
            with np.load(self.predictions_path, allow_pickle=False) as npz:
                return {key: npz[key] for key in npz.files}
        except (OSError, ValueError, zipfile.BadZipFile) as err:
            raise RunDirError(f"{self.path}: predictions.npz is damaged ({err}); delete it "
                              "(the report then leaves this run out of its intervals)") from None

    def read_config(self) -> DictConfig:
        """The job config Hydra saved (``.hydra/config.yaml``).

        Raises:
            RunDirError: Missing or not a YAML mapping.
        """
        path = self.config_path
        if not path.is_file():
            raise RunDirError(f"{self.path}: no .hydra/config.yaml (a run of train(cfg) from "
                              "Python saves none)")
        try:
            cfg = OmegaConf.load(path)
        except (OSError, ValueError, OmegaConfBaseException) as err:
            reason = str(err).splitlines()[0] if str(err) else type(err).__name__
            raise RunDirError(f"{path} is damaged ({reason}); rerun the job or delete the "
                              "folder") from None
        if not isinstance(cfg, DictConfig):
            raise RunDirError(f"{path} is damaged (not a mapping); rerun the job or delete "
                              "the folder")
        return cfg


def run_task(cfg: DictConfig, results: Results, where: Path) -> TaskSpec:
    """The task a finished run trained on: its config's task, and for a custom task that
    inferred its classes from the training file (its config names none) the label names
    the run recorded.

    Raises:
        RunDirError: Such a task, but results.json records no label names.
    """
    task = get_task(cfg.task)
    if not task.infer_labels:
        return task
    recorded = results.get("label_names")
    if not recorded:
        raise RunDirError(f"{where}: results.json records no label_names for task "
                          f"{task.name!r}, whose classes were read from its training file; "
                          "set task.label_names (or rerun the job)")
    return with_labels_from(task, recorded, f"{where / RESULTS} label_names")
