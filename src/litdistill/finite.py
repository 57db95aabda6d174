"""Non-finite values stop a run: a NaN or infinite loss term, prediction or weight.

Checking a value on the host costs a device sync, so :class:`FiniteWatch` only records on the
device, step by step, the first step at which one of its values was not finite; the module
asks it (:meth:`FiniteWatch.failure`) on the steps Lightning syncs to log anyway, at every
epoch end and validation, and before any checkpoint is written. A run therefore never
records ``ok``, exports a student or saves a checkpoint after its training went non-finite.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor, nn

from litdistill.errors import TrainingError


class FiniteWatch:
    """The first step at which any of a set of named scalars was NaN or infinite.

    Args:
        what: What the values are, for the message (``training``, ``validation``).
    """

    def __init__(self, what: str) -> None:
        self.what = what
        self.names: tuple[str, ...] = ()
        self._first: Tensor | None = None  # step of the first non-finite value, -1: none
        self._bad: Tensor | None = None  # which names were non-finite at that step

    def update(self, values: Mapping[str, Tensor], step: int) -> None:
        """Record one step's values (all on one device; no host sync)."""
        names = tuple(values)
        if names != self.names:  # another phase, other terms: settle the old ones first
            self.raise_if_failed()
            self.names, self._first = names, None
        bad = torch.stack([~torch.isfinite(v.detach()).all() for v in values.values()])
        if self._first is None:
            self._first = torch.full((), -1, dtype=torch.long, device=bad.device)
            self._bad = torch.zeros_like(bad)
        fresh = bad.any() & (self._first < 0)
        self._first = torch.where(fresh, step, self._first)
        self._bad = torch.where(fresh, bad, self._bad)

    def failure(self) -> str | None:
        """What went non-finite, and when (a host sync), or None."""
        if self._first is None or int(self._first) < 0:
            return None
        bad = [n for n, b in zip(self.names, self._bad.tolist(), strict=True) if b]
        parts = [n for n in bad if n != "loss"] or bad  # name the term, not only the total
        return f"{self.what} {', '.join(parts)} non-finite (NaN/inf) at step {int(self._first)}"

    def raise_if_failed(self) -> None:
        """Raise :class:`TrainingError` if a value went non-finite."""
        if (message := self.failure()) is not None:
            raise TrainingError(diverged(message))


def diverged(message: str) -> str:
    """The one-line error of a non-finite run: what happened and what to try."""
    return (f"{message}; the run stops (failed, nothing exported): lower optimizer.lr, keep "
            "trainer.gradient_clip_val, check the data, or try trainer.precision=32-true")


def check_weights(model: nn.Module, name: str) -> None:
    """Raise :class:`TrainingError` if any parameter of ``model`` is not finite."""
    if bad := [n for n, p in model.named_parameters() if not bool(torch.isfinite(p).all())]:
        raise TrainingError(diverged(f"{name} weights {bad[:3]} non-finite"))
