"""Timing pieces of the benchmark scripts: GPU sync, step and epoch timers (callbacks)."""

from __future__ import annotations

import time
from typing import Any

import lightning as L
import torch


def sync(device: str | torch.device) -> None:
    """Wait for queued GPU work, so a host clock reading covers it."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


class StepTimer(L.Callback):
    """Wall time of training batches ``first..last`` (0-based, inclusive), GPU-synchronised.

    Covers everything in between: the loop's own work, batch fetching and device copies.
    """

    def __init__(self, first: int, last: int) -> None:
        self.first, self.last = first, last
        self.start: float | None = None
        self.seconds: float | None = None

    def on_train_batch_start(self, trainer: L.Trainer, module: L.LightningModule, batch: Any,
                             batch_idx: int) -> None:
        if batch_idx == self.first:
            sync(module.device)
            self.start = time.perf_counter()

    def on_train_batch_end(self, trainer: L.Trainer, module: L.LightningModule, outputs: Any,
                           batch: Any, batch_idx: int) -> None:
        if batch_idx == self.last and self.start is not None:
            sync(module.device)
            self.seconds = time.perf_counter() - self.start


class EpochTimer(L.Callback):
    """Per-epoch seconds of ``trainer.fit``: the training part (epoch start until the
    end-of-epoch validation starts, or the epoch ends) and each validation pass.

    GPU work is synchronised only at those boundaries, never per step. Assumes validation at
    epoch ends only (``val_check_interval: 1.0``, the project default). ``train(cfg)``
    instantiates callbacks from the config, so the scripts add this one by ``_target_``
    (:func:`epoch_timer_target`) and read the figures from ``EpochTimer.last``.
    """

    last: EpochTimer | None = None

    def __init__(self) -> None:
        self.train_epochs: list[float] = []
        self.val_passes: list[float] = []
        self.steps: list[int] = []
        self._epoch_start: float | None = None
        self._val_start = 0.0
        self._first_step = 0
        EpochTimer.last = self

    def _close_epoch(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        if self._epoch_start is not None:
            sync(module.device)
            self.train_epochs.append(time.perf_counter() - self._epoch_start)
            self.steps.append(trainer.global_step - self._first_step)
            self._epoch_start = None

    def on_train_epoch_start(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        sync(module.device)
        self._epoch_start = time.perf_counter()
        self._first_step = trainer.global_step

    def on_train_epoch_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        self._close_epoch(trainer, module)

    def on_validation_start(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        self._close_epoch(trainer, module)  # the epoch's training part ends here
        self._val_start = time.perf_counter()

    def on_validation_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        if not trainer.sanity_checking:
            sync(module.device)
            self.val_passes.append(time.perf_counter() - self._val_start)


def epoch_timer_target() -> str:
    """The importable dotted name of :class:`EpochTimer` (``common.EpochTimer`` here)."""
    return f"{EpochTimer.__module__}.{EpochTimer.__qualname__}"

