"""Callbacks: the training epoch stopwatch, the phase log, and the sweep report.

:class:`EpochTimer` and :class:`PhaseLog` are added to every run by ``train()`` (their
records go into ``results.json``); :class:`ReportCallback` is a Hydra callback that writes
``litdistill-report``'s output when a ``--multirun`` ends; :class:`RunDirCheck`, a Hydra
callback too, refuses a run folder that cannot be written.
"""

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path
from typing import Any

import lightning as L
import torch
from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from litdistill.errors import ConfigError, LitDistillError
from litdistill.objective import Objective
from litdistill.settings import check_writable

log = logging.getLogger(__name__)


class EpochTimer(L.Callback):
    """Wall time of each training epoch, validation excluded (``epoch_seconds``)."""

    def __init__(self) -> None:
        self.epoch_seconds: list[float] = []
        self._start: float | None = None

    def on_train_epoch_start(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        self._start = time.perf_counter()

    def _stop(self, module: L.LightningModule) -> None:
        if self._start is not None:
            if module.device.type == "cuda":
                torch.cuda.synchronize(module.device)  # kernels still queued are this epoch's
            self.epoch_seconds.append(round(time.perf_counter() - self._start, 3))
            self._start = None

    def on_validation_epoch_start(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        if not trainer.sanity_checking:
            self._stop(module)  # validation inside a training epoch is not training time

    def on_train_epoch_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        self._stop(module)


class PhaseLog(L.Callback):
    """``(global step, phase name)`` each time a phased objective enters a phase.

    Args:
        objective: The run's objective (no phases: nothing is logged).
    """

    def __init__(self, objective: Objective) -> None:
        self.objective = objective
        self.starts: list[tuple[int, str]] = []

    def on_train_epoch_start(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        phase = self.objective.phase_at(trainer.current_epoch)
        if phase and (not self.starts or self.starts[-1][1] != phase.name):
            self.starts.append((trainer.global_step, phase.name))


class ReportCallback(Callback):
    """Hydra callback: write the sweep's report when a ``--multirun`` ends (see
    ``conf/experiment/student_sizes.yaml``), so one command gives jobs and report.

    Args:
        latency: Measure every model's CPU latency.
        threads: torch threads while timing.
    """

    def __init__(self, latency: bool = True, threads: int = 1) -> None:
        self.latency, self.threads = latency, threads

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        from litdistill.report import report  # the report imports matplotlib: only here

        sweep = Path(config.hydra.sweep.dir)
        try:
            result = report([sweep], sweep, latency=self.latency, threads=self.threads,
                            command=f"litdistill-report {sweep}")
        except LitDistillError as err:
            log.error("no report for %s: %s", sweep, err)
            return
        log.info("report of %d jobs: %s", len(result["jobs"]), sweep / "report.md")


class RunDirCheck(Callback):
    """Hydra callback: a run (or sweep) folder that cannot be written is a one-line
    ``error:`` and exit 2 before Hydra itself writes there (its log file and ``.hydra/``
    would otherwise fail with a traceback before ``train`` runs)."""

    def _check(self, folder: str, where: str) -> None:
        try:
            check_writable(Path(folder), where)
        except ConfigError as err:
            print(f"error: {err}", file=sys.stderr)
            sys.exit(2)

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        self._check(config.hydra.run.dir, "run dir (hydra.run.dir)")

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        self._check(config.hydra.sweep.dir, "sweep dir (hydra.sweep.dir)")
