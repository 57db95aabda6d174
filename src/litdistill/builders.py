"""Hydra nodes -> objects: one ``instantiate`` whose errors read as one line, the
``_partial_`` factories, and :class:`Setup`, everything that drives training built from the
job config before any weights load (task and general distillation alike)."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import lightning as L
import torch
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from litdistill import runs
from litdistill.callbacks import EpochTimer, PhaseLog, RngState
from litdistill.errors import ConfigError, LitDistillError
from litdistill.loggers import keep_logged_rows
from litdistill.objective import Objective
from litdistill.optim import probe_factories


def build(node: Any, **kwargs: Any) -> Any:
    """``hydra.utils.instantiate`` that lets our own errors through unwrapped (Hydra wraps
    every exception of a ``_target_`` in an InstantiationException, losing the one-line
    message and the exit code 2)."""
    try:
        return instantiate(node, **kwargs)
    except InstantiationException as err:
        if isinstance(err.__cause__, LitDistillError):
            raise err.__cause__ from None
        raise


def build_option(where: str, node: Any, **kwargs: Any) -> Any:
    """:func:`build` for a group the user edits: Hydra's own errors (no such ``_target_``, a
    keyword or value the target refuses) become one :class:`ConfigError` line naming the
    group."""
    try:
        return build(node, **kwargs)
    except InstantiationException as err:
        text = str(err.__cause__) if str(err).startswith("Error in call to target") \
            and err.__cause__ is not None else str(err)
        text = re.sub(r",? set env var HYDRA_FULL_ERROR=1 .*|\s*full_key: .*", "", text,
                      flags=re.S)
        raise ConfigError(f"{where}: {' '.join(text.split())}") from None


def factory(job: DictConfig, group: str) -> Any:
    """The ``_partial_`` factory of ``group`` (optimizer, scheduler), or None."""
    node = job.get(group)
    if node is None:
        return None
    if not node.get("_partial_"):
        raise ConfigError(f"{group}: set {group}._partial_=true (it is called later with the "
                          "student's parameters)")
    return build_option(group, node)


@dataclass(frozen=True)
class Setup:
    """What drives training, built before any weights load (a typo costs nothing): the
    optimizer and scheduler factories (probed), the Trainer with its loggers and callbacks,
    and the callbacks ``results.json`` reads (``epoch_seconds``, ``phase_starts``)."""

    optimizer: Callable[..., torch.optim.Optimizer]
    scheduler: Callable[..., Any] | None
    trainer: L.Trainer
    loggers: list[Any]
    timer: EpochTimer
    phases: PhaseLog

    def log_config(self, job: DictConfig) -> None:
        """The job's resolved config as every logger's hyper-parameters."""
        for logger in self.loggers:
            logger.log_hyperparams(runs.flatten(OmegaConf.to_container(job, resolve=True)))


def build_setup(job: DictConfig, objective: Objective, ckpt_path: str | None,
                max_epochs: int) -> Setup:
    """Optimizer and scheduler factories, loggers, callbacks (plus the epoch timer, phase log
    and RNG states) and the Trainer from the job's config: everything, before any weights.

    Raises:
        ConfigError: A bad ``optimizer.*``, ``scheduler.*``, ``logger.*``, ``callbacks.*`` or
            ``trainer.*`` value, naming the group.
    """
    optimizer, scheduler = factory(job, "optimizer"), factory(job, "scheduler")
    probe_factories(optimizer, scheduler)
    loggers = [build_option(f"logger.{k}", c) for k, c in (job.get("logger") or {}).items()
               if c]
    if ckpt_path:
        keep_logged_rows(loggers, int(runs.read_checkpoint(ckpt_path)["global_step"]))
    timer, phases = EpochTimer(), PhaseLog(objective)
    callbacks = [build_option(f"callbacks.{k}", c)
                 for k, c in (job.get("callbacks") or {}).items() if c]
    trainer = build_option("trainer", job.trainer, max_epochs=max_epochs,
                           logger=loggers or False,
                           callbacks=[*callbacks, timer, phases, RngState()])
    return Setup(optimizer, scheduler, trainer, loggers, timer, phases)
