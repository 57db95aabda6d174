"""What the student learns from: the distillation objective as one validated object.

An :class:`Objective` holds the temperature, the loss weights, the intermediate terms, the
phases of a run and the linear schedules, checks them beside their fields, and answers the
questions the rest of the code asks (does this run need a teacher, must the teacher run live,
how many epochs, which weights apply at a given point of the run). The ``conf/distill/*.yaml``
presets instantiate it; :class:`~litdistill.module.DistillationModule` receives it.

The loss it describes (see :mod:`litdistill.losses`)::

    loss = alpha_kd * kd + alpha_task * task + sum_term weight_term * term

where a phase may override ``temperature``, ``alpha_kd``, ``alpha_task`` and the active
terms, and a schedule ramps any of them (or a term's weight) linearly over the run.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from litdistill.errors import ConfigError
from litdistill.terms import TERM_TYPES, Term, check_weight, make_term

# Term name -> what the forward passes must return for it (see litdistill.intermediate).
TERMS = {name: cls.output for name, cls in TERM_TYPES.items()}
_SCALARS = ("temperature", "alpha_kd", "alpha_task")
# Each phase: 10% of its steps of linear warm-up to its peak lr, then linear decay to zero.
PHASE_WARMUP = 0.1


def _check_temperature(where: str, value: Any) -> float:
    value = check_weight(where, value)
    if value <= 0:
        raise ConfigError(f"{where}={value}: the temperature must be > 0 (T=1: plain softmax)")
    return value


@dataclass(frozen=True)
class Phase:
    """One sequential part of a run (TinyBERT: intermediate, then prediction).

    Attributes:
        name: Shown in logs and in ``results.json`` ``phase_starts``.
        epochs: Epochs the phase lasts (>= 1).
        lr: Peak learning rate of the phase (None: the optimizer's).
        temperature: Overrides the objective's (None: keep it).
        alpha_kd: Overrides the objective's (None: keep it).
        alpha_task: Overrides the objective's (None: keep it).
        terms: Names of the intermediate terms active in the phase (None: all of them).
    """

    name: str
    epochs: int
    lr: float | None = None
    temperature: float | None = None
    alpha_kd: float | None = None
    alpha_task: float | None = None
    terms: tuple[str, ...] | None = None

    def as_dict(self) -> dict[str, Any]:
        """The phase as written in its config (unset keys left out)."""
        out = {"name": self.name, "epochs": self.epochs}
        for key in ("lr", "temperature", "alpha_kd", "alpha_task"):
            if getattr(self, key) is not None:
                out[key] = getattr(self, key)
        if self.terms is not None:
            out["terms"] = list(self.terms)
        return out


@dataclass(frozen=True)
class Weights:
    """What applies at one training step: temperature, loss weights, active terms' weights."""

    temperature: float
    alpha_kd: float
    alpha_task: float
    terms: dict[str, float]


def _phase(index: int, raw: Mapping[str, Any], terms: Mapping[str, Any]) -> Phase:
    where = f"distill.phases.{index}"
    if not isinstance(raw, Mapping) or "epochs" not in raw:
        raise ConfigError(f"{where} needs at least {{name, epochs}}, got {raw!r}")
    if unknown := sorted(set(raw) - {"name", "epochs", "lr", *_SCALARS, "terms"}):
        raise ConfigError(f"{where}: unknown keys {unknown}; use name, epochs, lr, "
                          "temperature, alpha_kd, alpha_task, terms")
    if int(raw["epochs"]) < 1:
        raise ConfigError(f"{where}.epochs={raw['epochs']}: a phase lasts at least 1 epoch")
    if raw.get("lr") is not None and not float(raw["lr"]) > 0:
        raise ConfigError(f"{where}.lr={raw['lr']}: the learning rate must be > 0")
    active = raw.get("terms")
    if active is not None and (bad := sorted(set(active) - set(terms))):
        raise ConfigError(f"{where}.terms: {bad} are not terms of this objective "
                          f"({sorted(terms)})")
    scalars = {k: check_weight(f"{where}.{k}", raw[k]) for k in _SCALARS if k in raw}
    if "temperature" in scalars:
        _check_temperature(f"{where}.temperature", scalars["temperature"])
    return Phase(name=str(raw.get("name", f"phase{index}")), epochs=int(raw["epochs"]),
                 lr=float(raw["lr"]) if raw.get("lr") is not None else None,
                 terms=tuple(active) if active is not None else None, **scalars)


@dataclass(frozen=True)
class Objective:
    """A distillation objective (Hinton KD, intermediate terms, phases, schedules).

    Attributes:
        temperature: KD temperature T > 0.
        alpha_kd: Weight of the logit KD term (0: no soft targets).
        alpha_task: Weight of the hard-label term.
        terms: Intermediate terms ``{name: options}``, typed on construction (one
            :class:`~litdistill.terms.Term` each; see :mod:`litdistill.terms`).
        phases: Sequential phases; the run lasts the sum of their epochs.
        schedules: Linear ramps ``{start, end}`` over the run for ``temperature``,
            ``alpha_kd``, ``alpha_task`` or a term name (its weight).

    Raises:
        ConfigError: A temperature <= 0, a negative or non-finite weight, every weight zero,
            an unknown term or term option, a malformed phase or schedule.
    """

    temperature: float = 1.0
    alpha_kd: float = 0.0
    alpha_task: float = 1.0
    terms: Mapping[str, Term] = field(default_factory=dict)
    phases: Sequence[Phase] = ()
    schedules: Mapping[str, Mapping[str, float]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        set_ = object.__setattr__  # frozen: normalise once, here
        set_(self, "temperature", _check_temperature("distill.temperature", self.temperature))
        for key in ("alpha_kd", "alpha_task"):
            set_(self, key, check_weight(f"distill.{key}", getattr(self, key)))
        if unknown := sorted(set(self.terms or {}) - set(TERMS)):
            raise ConfigError(f"unknown distillation terms {unknown}; known: {sorted(TERMS)}")
        terms = {str(n): make_term(str(n), opts) for n, opts in (self.terms or {}).items()}
        set_(self, "terms", terms)
        phases = [p if isinstance(p, Phase) else _phase(i, p, terms)
                  for i, p in enumerate(self.phases or ())]
        set_(self, "phases", tuple(phases))
        set_(self, "schedules", self._checked_schedules(terms))
        for phase in self.phases or (None,):
            ends = (self.weights(phase, 0.0), self.weights(phase, 1.0))
            if not any(w.alpha_kd or w.alpha_task or any(w.terms.values()) for w in ends):
                where = f"phase {phase.name!r}" if phase else "the objective"
                raise ConfigError(f"every loss weight of {where} is zero: nothing to learn "
                                  "from; give alpha_kd, alpha_task or a term a weight > 0")

    def _checked_schedules(self, terms: Mapping[str, Any]) -> dict[str, dict[str, float]]:
        out = {}
        for key, ramp in (self.schedules or {}).items():
            where = f"distill.schedules.{key}"
            if key not in (*_SCALARS, *terms):
                raise ConfigError(f"{where}: schedule one of {[*_SCALARS, *terms]}")
            if not isinstance(ramp, Mapping) or set(ramp) != {"start", "end"}:
                raise ConfigError(f"{where} must be {{start: x, end: y}}, got {ramp!r}")
            check = _check_temperature if key == "temperature" else check_weight
            out[key] = {k: check(f"{where}.{k}", ramp[k]) for k in ("start", "end")}
        return out

    # ------------------------------------------------------------------ questions
    @property
    def max_alpha_kd(self) -> float:
        """The largest logit-KD weight of any phase (0: soft targets never used)."""
        values = [self.alpha_kd, *(p.alpha_kd for p in self.phases if p.alpha_kd is not None)]
        if "alpha_kd" in self.schedules:
            values += self.schedules["alpha_kd"].values()
        return max(values)

    @property
    def uses_logits(self) -> bool:
        """Whether any step learns from the teacher's logits."""
        return self.max_alpha_kd > 0

    @property
    def needs_teacher(self) -> bool:
        """Whether training needs a teacher at all (soft targets or intermediate terms)."""
        return self.uses_logits or bool(self.terms)

    def teacher_live(self, cache_mode: str) -> bool:
        """Whether the teacher must run during training (not only read from the cache).

        Intermediate terms need hidden states and attentions, which are never cached;
        logits come from the cache unless it is ``off``.
        """
        return bool(self.terms) or (self.uses_logits and cache_mode == "off")

    def train_logits_cached(self, cache_mode: str) -> bool:
        """Whether the training split's teacher logits come from the teacher cache."""
        return self.uses_logits and not self.teacher_live(cache_mode)

    def total_epochs(self, default: int) -> int:
        """A phased objective sets the run's length; otherwise ``default`` (the trainer's)."""
        return sum(p.epochs for p in self.phases) if self.phases else int(default)

    def phase_at(self, epoch: int) -> Phase | None:
        """The phase epoch ``epoch`` (0-based) belongs to (None without phases)."""
        end = 0
        for phase in self.phases:
            end += phase.epochs
            if epoch < end:
                return phase
        return self.phases[-1] if self.phases else None

    def weights(self, phase: Phase | None, progress: float) -> Weights:
        """Temperature, loss weights and active terms in ``phase`` at ``progress`` in [0, 1]
        of the run: the phase's values (else the objective's), then the schedules."""
        values = {}
        for key in _SCALARS:
            base = getattr(phase, key) if phase and getattr(phase, key) is not None \
                else getattr(self, key)
            values[key] = _ramp(base, self.schedules.get(key), progress)
        active = phase.terms if phase and phase.terms is not None else tuple(self.terms)
        terms = {n: _ramp(self.terms[n].weight, self.schedules.get(n),
                          progress) for n in active}
        return Weights(terms=terms, **values)

    @property
    def varies(self) -> bool:
        """Whether the weights change during the run (phases or schedules)."""
        return bool(self.phases or self.schedules)

    def as_dict(self) -> dict[str, Any]:
        """``results.json``'s ``distill`` entry: the scalars, and the rest when set."""
        out: dict[str, Any] = {k: getattr(self, k) for k in _SCALARS}
        if self.terms:
            out["terms"] = {k: v.as_dict() for k, v in self.terms.items()}
        if self.phases:
            out["phases"] = [p.as_dict() for p in self.phases]
        if self.schedules:
            out["schedules"] = {k: dict(v) for k, v in self.schedules.items()}
        return out


def _ramp(value: float, schedule: Mapping[str, float] | None, progress: float) -> float:
    """A constant, or a linear ramp ``{start, end}`` over training progress in [0, 1]
    (TextBrewer-style temperature and loss-weight schedules)."""
    if not schedule:
        return value
    start, end = float(schedule["start"]), float(schedule["end"])
    return start + (end - start) * min(max(progress, 0.0), 1.0)


def phase_lr_factor(objective: Objective, steps_per_epoch: int, base_lr: float
                    ) -> Callable[[int], float]:
    """LR multiplier per optimizer step for a phased objective (for ``LambdaLR``).

    Each phase ramps linearly to its own peak (``phase.lr``, else ``base_lr``) over
    :data:`PHASE_WARMUP` of its steps, then decays linearly to zero at its end; the last
    phase holds zero after its end.

    Args:
        objective: A phased objective.
        steps_per_epoch: Optimizer steps per epoch.
        base_lr: The optimizer's learning rate (the multiplier is relative to it).
    """
    bounds, start = [], 0
    for phase in objective.phases:
        steps = phase.epochs * max(steps_per_epoch, 1)
        bounds.append((start, steps, (phase.lr or base_lr) / base_lr))
        start += steps

    def factor(step: int) -> float:
        for i, (begin, steps, scale) in enumerate(bounds):
            if step < begin + steps or i == len(bounds) - 1:
                t, warm = step - begin, max(int(PHASE_WARMUP * steps), 1)
                ramp = t / warm if t < warm else max(steps - t, 0) / max(steps - warm, 1)
                return scale * ramp
        return 0.0

    return factor
