"""How a run reports progress: a live bar on a terminal, plain log lines anywhere else.

``progress`` (``conf/train.yaml``): ``auto`` (default: the rich bar when stdout is a
terminal, else :class:`LogLines`), ``rich``, ``tqdm``, ``log`` or ``none``. :func:`apply`
runs first in ``train()`` (before tokenizing) and switches the libraries' own bars
(datasets' map/save, transformers/hub downloads and shard writes) to match: off a terminal
they would write each redraw into the log as ``\\r`` frames. It also filters library noise
that tells a user nothing (Lightning's product tips, known deprecation warnings of the
libraries' internals). :func:`progress_bar` builds the training bar
(``conf/callbacks/default.yaml``).
"""

from __future__ import annotations

import datetime
import logging
import sys
import time
import warnings
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import ProgressBar, RichProgressBar, TQDMProgressBar

from litdistill.errors import ConfigError

log = logging.getLogger("litdistill")

MODES = ("auto", "rich", "tqdm", "log", "none")

# Library messages that say nothing about this run.
_NOISE_WARNINGS = (r".*isinstance\(treespec, LeafSpec\).*",  # lightning vs torch's pytree
                   r".*`torch\.jit\.script` is deprecated.*")
_NOISE_LOGS = ("💡 Tip:",)


class _DropNoise(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(_NOISE_LOGS)


def resolve(mode: str) -> str:
    """``auto`` -> ``rich`` on a terminal (stdout is a TTY), else ``log``.

    Raises:
        ConfigError: Not one of :data:`MODES`.
    """
    mode = str(mode)
    if mode not in MODES:
        raise ConfigError(f"progress={mode}: must be one of {', '.join(MODES)}")
    if mode == "auto":
        return "rich" if sys.stdout.isatty() else "log"
    return mode


def apply(mode: str) -> str:
    """Set the libraries' progress bars for ``mode``, filter their noise; return the mode
    :func:`resolve` picks. Call before any tokenizing or loading.

    Raises:
        ConfigError: ``mode`` is not one of :data:`MODES`.
    """
    import datasets
    import huggingface_hub.utils
    import transformers

    mode = resolve(mode)
    bars = mode in ("rich", "tqdm")
    (datasets.enable_progress_bars if bars else datasets.disable_progress_bars)()
    tf = transformers.utils.logging
    (tf.enable_progress_bar if bars else tf.disable_progress_bar)()
    hub = huggingface_hub.utils
    (hub.enable_progress_bars if bars else hub.disable_progress_bars)()
    for pattern in _NOISE_WARNINGS:
        warnings.filterwarnings("ignore", message=pattern)
    for name in ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero"):
        target = logging.getLogger(name)
        if not any(isinstance(f, _DropNoise) for f in target.filters):
            target.addFilter(_DropNoise())
    return mode


def progress_bar(mode: str = "auto", every_seconds: float = 30.0) -> ProgressBar:
    """The training progress bar for ``mode`` (``none``: a silent one, so Lightning adds
    none of its own).

    Args:
        mode: One of :data:`MODES`.
        every_seconds: ``log`` mode: at most one line per this many seconds (plus one at
            each epoch's end and after each validation).
    """
    mode = resolve(mode)
    if mode == "rich":
        return RichProgressBar()
    if mode == "tqdm":
        return TQDMProgressBar()
    return LogLines(every_seconds, enabled=mode == "log")


def _duration(seconds: float) -> str:
    return str(datetime.timedelta(seconds=int(max(seconds, 0))))


class LogLines(ProgressBar):
    """Progress as plain log lines (``litdistill`` logger): step, loss, samples/s, ETA; and
    each validation's scores. No ``\\r``, no redraws: readable in files, CI and SLURM logs.

    Args:
        every_seconds: At most one step line per this many seconds (plus each epoch's last).
        enabled: False: print nothing (``progress=none``).
    """

    def __init__(self, every_seconds: float = 30.0, enabled: bool = True) -> None:
        super().__init__()
        if every_seconds < 0:
            raise ConfigError(f"every_seconds={every_seconds}: must be >= 0")
        self.every_seconds, self._enabled = every_seconds, enabled
        self._start = self._last = 0.0
        self._first_step = 0
        self._samples = 0

    @property
    def is_enabled(self) -> bool:
        return self._enabled

    def disable(self) -> None:
        self._enabled = False

    def enable(self) -> None:
        self._enabled = True

    def on_train_start(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        self._start = self._last = time.perf_counter()
        self._first_step, self._samples = trainer.global_step, 0

    def on_train_batch_start(self, trainer: L.Trainer, module: L.LightningModule, batch: Any,
                             batch_idx: int) -> None:
        if self._enabled and isinstance(batch, dict) and "input_ids" in batch:
            self._samples += int(batch["input_ids"].shape[0])

    def on_train_batch_end(self, trainer: L.Trainer, module: L.LightningModule, outputs: Any,
                           batch: Any, batch_idx: int) -> None:
        now = time.perf_counter()
        last = batch_idx + 1 >= self.total_train_batches
        if not self._enabled or not (last or now - self._last >= self.every_seconds):
            return
        self._last = now
        elapsed = max(now - self._start, 1e-9)
        step, total = trainer.global_step, int(trainer.estimated_stepping_batches)
        done = max(step - self._first_step, 1)
        loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
        parts = [f"epoch {trainer.current_epoch + 1}/{trainer.max_epochs}",
                 f"step {step}/{total}"]
        if loss is not None:
            parts.append(f"loss {float(loss):.4f}")  # one host sync per printed line
        parts += [f"{self._samples / elapsed:.1f} samples/s",
                  f"ETA {_duration(elapsed / done * max(total - step, 0))}"]
        log.info("  ".join(parts))

    def on_validation_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        if not self._enabled or trainer.sanity_checking:
            return
        values = {k: float(v) for k, v in trainer.callback_metrics.items()
                  if k.startswith("val/") and v.numel() == 1}
        text = "  ".join(f"{k} {v:.4f}" for k, v in sorted(values.items())[:8])
        log.info("epoch %d validation (step %d): %s", trainer.current_epoch + 1,
                 trainer.global_step, text)
