"""Optimizer and learning-rate schedule of the student, decided up front.

The optimizer factory (``conf/optimizer/*.yaml``, ``_partial_: true``) receives the student's
parameter groups only; the frozen teacher is never in them.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import nn
from transformers import get_linear_schedule_with_warmup

from litdistill.errors import ConfigError
from litdistill.objective import Objective, phase_lr_factor

# Weight decay skips biases and norms, as BERT's original optimizer does.
NO_DECAY = ("bias", "LayerNorm.weight", "layer_norm.weight", "norm.weight")


def param_groups(named: Iterable[tuple[str, nn.Parameter]]) -> list[dict[str, Any]]:
    """Two groups: decayed weights, and biases/norms with ``weight_decay=0``."""
    named = list(named)
    groups = [{"params": [p for n, p in named if not n.endswith(NO_DECAY)]},
              {"params": [p for n, p in named if n.endswith(NO_DECAY)], "weight_decay": 0.0}]
    return [g for g in groups if g["params"]]


def kernel_options(factory: Callable[..., torch.optim.Optimizer], clips: bool,
                   mixed: bool) -> dict[str, bool]:
    """``fused=True`` where the optimizer has fused kernels, ``foreach=True`` instead when
    Lightning will clip gradients under mixed precision ({} when it has neither option).

    Fused AdamW is one kernel per step instead of a loop over parameter tensors (the step
    fell from 12-16% to 3.7% of a CPU KD step, ``benchmarks/profile_step.py``). Lightning
    refuses to clip the gradients of an optimizer that unscales them itself (fused) under
    mixed precision, even bf16: foreach kernels then.
    """
    target = getattr(factory, "func", factory)  # a functools.partial from Hydra
    try:
        accepted = inspect.signature(target).parameters
    except (TypeError, ValueError):  # a builtin without a signature: leave it as it is
        return {}
    key = "foreach" if clips and mixed else "fused"
    return {key: True} if key in accepted else {}


def build_optimizer(factory: Callable[..., torch.optim.Optimizer],
                    named: Iterable[tuple[str, nn.Parameter]], *, clips: bool = False,
                    mixed: bool = False) -> torch.optim.Optimizer:
    """The optimizer over ``named`` parameters, with the fastest kernels it supports."""
    return factory(param_groups(named), **kernel_options(factory, clips, mixed))


def linear_warmup_decay(optimizer: torch.optim.Optimizer, num_training_steps: int,
                        warmup_ratio: float = 0.1) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up over ``warmup_ratio`` of the steps, then linear decay to zero (BERT).

    Raises:
        ConfigError: ``warmup_ratio`` outside [0, 1].
    """
    if isinstance(warmup_ratio, bool) or not isinstance(warmup_ratio, int | float) \
            or not 0 <= warmup_ratio <= 1:
        raise ConfigError(f"scheduler.warmup_ratio={warmup_ratio!r}: must be a number in "
                          "[0, 1] (the share of steps spent warming up)")
    warmup = int(warmup_ratio * num_training_steps)
    return get_linear_schedule_with_warmup(optimizer, warmup, num_training_steps)


def build_scheduler(optimizer: torch.optim.Optimizer, objective: Objective,
                    factory: Callable[..., Any] | None, total_steps: int,
                    epochs: int) -> Any | None:
    """The per-step LR schedule: the phases' own (a phased objective), else ``factory``'s.

    Args:
        optimizer: The student's optimizer.
        objective: The run's objective.
        factory: Partial scheduler taking ``(optimizer, num_training_steps)``, or None.
        total_steps: Optimizer steps of the whole run.
        epochs: Epochs of the run.
    """
    if objective.phases:
        factor = phase_lr_factor(objective, max(total_steps, 1) // max(epochs, 1),
                                 optimizer.param_groups[0]["lr"])
        return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
    if factory is None:
        return None
    return factory(optimizer, num_training_steps=max(total_steps, 1))


def probe_factories(optimizer: Callable[..., torch.optim.Optimizer],
                    scheduler: Callable[..., Any] | None) -> None:
    """Build the optimizer and the scheduler once over a one-element dummy parameter.

    Hydra's ``_partial_`` factories accept any keyword until they are called; calling them
    here (before any weights load) makes the optimizer class and the schedule reject what
    they reject (an unknown keyword, ``betas`` of the wrong length, a negative ``eps``) at
    once instead of after a teacher load.

    Raises:
        ConfigError: What the optimizer or the scheduler refused, naming its group.
    """
    named = [(f"probe.{n}", nn.Parameter(torch.zeros(1))) for n in ("weight", "bias")]
    try:  # both groups, as the student's: decayed weights and biases without decay
        built = optimizer(param_groups(named))
    except (TypeError, ValueError) as err:  # what torch.optim raises for bad arguments
        raise ConfigError(f"optimizer: {err}") from None
    if not isinstance(built, torch.optim.Optimizer):
        raise ConfigError(f"optimizer: the factory made a {type(built).__name__}, not a "
                          "torch.optim.Optimizer (is _partial_: true set?)")
    if scheduler is None:
        return
    try:
        scheduler(built, num_training_steps=1)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"scheduler: {err}") from None
