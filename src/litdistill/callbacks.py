"""Callbacks: the training epoch stopwatch, the phase log, resume state, the sweep report.

:class:`EpochTimer`, :class:`PhaseLog` and :class:`RngState` are added to every run by
``train()`` (the first two records go into ``results.json``; all three are saved in
checkpoints, so a resumed run carries on with them); :class:`ResumeCheckpoint`
(``conf/callbacks/default.yaml``) writes ``last.ckpt``; :class:`RunDirCheck` is a Hydra
callback (the report's, ``ReportCallback``, lives with the report in :mod:`litdistill.report`).
"""

from __future__ import annotations

import logging
import random
import sys
import time
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from hydra.experimental.callback import Callback
from lightning.pytorch.callbacks import Checkpoint
from omegaconf import DictConfig

from litdistill.errors import ConfigError, fail
from litdistill.objective import Objective
from litdistill.settings import check_writable

log = logging.getLogger(__name__)


class EpochTimer(L.Callback):
    """Wall time of each training epoch, validation excluded (``epoch_seconds``)."""

    def __init__(self) -> None:
        self.epoch_seconds: list[float] = []
        self._start: float | None = None

    def on_train_start(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        # A run resumed mid-epoch gets no on_train_epoch_start for that epoch: time the rest.
        self._start = time.perf_counter()

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

    def state_dict(self) -> dict[str, Any]:
        return {"epoch_seconds": list(self.epoch_seconds)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.epoch_seconds = list(state["epoch_seconds"])


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

    def state_dict(self) -> dict[str, Any]:
        return {"starts": [list(start) for start in self.starts]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.starts = [(int(step), str(name)) for step, name in state["starts"]]


def rng_states() -> dict[str, Any]:
    """Python, NumPy, torch (and CUDA) generator states as tensors and plain lists, which a
    ``torch.load(weights_only=True)`` reads back (NumPy's own state holds an ndarray)."""
    version, internal, gauss = random.getstate()
    name, keys, pos, has_gauss, cached = np.random.get_state()
    states: dict[str, Any] = {
        "python": [version, list(internal), gauss],
        "numpy": [name, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, cached],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def set_rng_states(states: dict[str, Any]) -> None:
    """Put back what :func:`rng_states` returned."""
    version, internal, gauss = states["python"]
    random.setstate((version, tuple(internal), gauss))
    name, keys, pos, has_gauss, cached = states["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(states["torch"])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


class RngState(L.Callback):
    """Random generator states in every checkpoint, put back when a resumed run starts
    training, so it draws the dropout masks the uninterrupted run drew.

    Put back in ``on_train_start``, not while the checkpoint loads: between the two Lightning
    still sets up the loops, and nothing in between may count. The data loaders have their
    own generators (:meth:`litdistill.data.GlueDataModule._loader`), so from a checkpoint on
    only the training steps draw from these generators. Under DDP only rank zero writes the
    checkpoint: every rank gets its states back (exact for one process).
    """

    def __init__(self) -> None:
        self._pending: dict[str, Any] | None = None

    def state_dict(self) -> dict[str, Any]:
        return rng_states()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._pending = state

    def on_train_start(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        if self._pending is not None:
            set_rng_states(self._pending)
            self._pending = None


class ResumeCheckpoint(Checkpoint):
    """``<dirpath>/last.ckpt``, the state a run resumes from, rewritten at the end of every
    epoch (after its validation) and every ``every_n_train_steps`` optimizer steps.

    Lightning 2.6's ``ModelCheckpoint(save_last=True)`` rewrites ``last.ckpt`` only when it
    saves a top-k checkpoint too, i.e. when the monitored score improved: a finished run's
    ``last.ckpt`` could be epochs old. An epoch's last step is saved after the epoch's
    validation, never before it (a resume from there would skip that validation).

    Args:
        dirpath: The run's checkpoint folder.
        every_n_train_steps: Also save every this many optimizer steps (0: at epoch ends).
        filename: The file's name.
    """

    def __init__(self, dirpath: str, every_n_train_steps: int = 0,
                 filename: str = "last.ckpt") -> None:
        if every_n_train_steps < 0:
            raise ConfigError(f"every_n_train_steps={every_n_train_steps}: must be >= 0")
        self.path = Path(dirpath) / filename
        self.every = every_n_train_steps
        self._saved_step = -1

    def _save(self, trainer: L.Trainer) -> None:
        if trainer.fast_dev_run or trainer.sanity_checking or trainer.state.fn != "fit":
            return
        trainer.save_checkpoint(self.path, weights_only=False)  # the full training state
        self._saved_step = trainer.global_step

    def on_train_batch_end(self, trainer: L.Trainer, module: L.LightningModule, outputs: Any,
                           batch: Any, batch_idx: int) -> None:
        step = trainer.global_step
        last = trainer.fit_loop.epoch_loop.batch_progress.is_last_batch
        # step != saved: once per optimizer step (gradient accumulation repeats a step).
        if self.every and step % self.every == 0 and step != self._saved_step and not last:
            self._save(trainer)

    def on_train_epoch_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        self._save(trainer)


class RunDirCheck(Callback):
    """Hydra callback: a run (or sweep) folder that cannot be written is a one-line
    ``error:`` and exit 2 before Hydra itself writes there (its log file and ``.hydra/``
    would otherwise fail with a traceback before ``train`` runs)."""

    def _check(self, folder: str, where: str) -> None:
        try:
            check_writable(Path(folder), where)
        except ConfigError as err:
            sys.exit(fail(err))

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        self._check(config.hydra.run.dir, "run dir (hydra.run.dir)")

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        self._check(config.hydra.sweep.dir, "sweep dir (hydra.sweep.dir)")


def __getattr__(name: str) -> Any:
    # ``_target_: litdistill.callbacks.ReportCallback`` of configs written before the report's
    # callback moved next to the report; imported on demand (the report imports matplotlib).
    if name == "ReportCallback":
        from litdistill.report import ReportCallback

        return ReportCallback
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
