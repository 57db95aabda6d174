"""Typed options of the intermediate distillation terms, checked where they are declared.

Each term of ``distill.terms`` is one frozen dataclass: its fields are the only options it
takes (a misspelled key is an error naming the valid ones), kinds and projections are
``Literal`` values checked in ``__post_init__``, and :func:`check_terms` checks what needs the
two models' configs (layer maps against both depths, heads and widths) before any weights
load. :class:`~litdistill.intermediate.IntermediateTerms` reads these fields to compute the
losses of :mod:`litdistill.losses`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from typing import Any, ClassVar, Literal, get_args

from transformers import PretrainedConfig

from litdistill.errors import ConfigError
from litdistill.losses import layer_mapping

MapName = Literal["uniform", "skip", "last"]
LayerMap = MapName | tuple[int, ...]  # a named map, or one teacher layer per student layer
Projection = Literal["shared", "per_layer"]
AttentionKind = Literal["mse", "kl", "scores"]


def check_weight(where: str, value: Any) -> float:
    """A loss weight as a float.

    Raises:
        ConfigError: Not a number, negative, NaN or infinite.
    """
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{where}={value!r} is not a number") from None
    if not value >= 0 or value == float("inf"):  # also rejects NaN
        raise ConfigError(f"{where}={value}: loss weights must be finite and >= 0")
    return value


def _choice(where: str, value: Any, kind: Any) -> str:
    options = get_args(kind)
    if value not in options:
        raise ConfigError(f"{where}={value!r}: must be one of {', '.join(options)}")
    return value


def _layer_map(where: str, value: Any) -> MapName | tuple[int, ...]:
    if isinstance(value, str):
        return _choice(where, value, MapName)  # type: ignore[return-value]
    if isinstance(value, Sequence) and value and all(
            isinstance(t, int) and not isinstance(t, bool) and t >= 0 for t in value):
        return tuple(value)
    raise ConfigError(f"{where}={value!r}: must be uniform, skip, last or a list of teacher "
                      "layers (0 = embeddings), one per student layer")


@dataclass(frozen=True)
class Term:
    """Options every term has.

    Attributes:
        weight: The term's loss weight (finite, >= 0).
    """

    name: ClassVar[str] = ""
    output: ClassVar[str] = "hidden"  # what the forward passes must return for it
    weight: float = 1.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "weight", check_weight(self.where("weight"), self.weight))

    def where(self, key: str) -> str:
        return f"distill.terms.{self.name}.{key}"

    def check(self, student: PretrainedConfig, teacher: PretrainedConfig) -> None:
        """What needs both models' configs (not their weights); nothing for most terms."""

    def as_dict(self) -> dict[str, Any]:
        """The options as written in a config (a layer list as a list)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}


@dataclass(frozen=True)
class MappedTerm(Term):
    """A term over pairs of (student, teacher) layers chosen by ``mapping``."""

    mapping: LayerMap = "uniform"

    def __post_init__(self) -> None:
        super().__post_init__()
        object.__setattr__(self, "mapping", _layer_map(self.where("mapping"), self.mapping))

    def pairs(self, student_layers: int, teacher_layers: int) -> list[tuple[int, int]]:
        """The (student, teacher) layer pairs for these depths.

        Raises:
            ConfigError: The map does not fit the depths (see :func:`layer_mapping`).
        """
        try:
            return layer_mapping(student_layers, teacher_layers, self.mapping)
        except ValueError as err:
            raise ConfigError(f"distill.terms.{self.name}: {err}") from None

    def check(self, student: PretrainedConfig, teacher: PretrainedConfig) -> None:
        self.pairs(student.num_hidden_layers, teacher.num_hidden_layers)


@dataclass(frozen=True)
class EmbeddingTerm(Term):
    """MSE between the embedding outputs (TinyBERT), projected when widths differ."""

    name: ClassVar[str] = "embedding"


@dataclass(frozen=True)
class HiddenTerm(MappedTerm):
    """MSE between mapped layers' hidden states (TinyBERT).

    Attributes:
        projection: ``shared`` (one learned W_h when widths differ) or ``per_layer``.
    """

    name: ClassVar[str] = "hidden"
    projection: Projection = "shared"

    def __post_init__(self) -> None:
        super().__post_init__()
        _choice(self.where("projection"), self.projection, Projection)


@dataclass(frozen=True)
class AttentionTerm(MappedTerm):
    """MSE/KL between mapped layers' attention maps, head by head (TinyBERT).

    Attributes:
        kind: ``scores`` (MSE of raw pre-softmax scores, TinyBERT), ``mse`` or ``kl`` (of
            attention probabilities).
    """

    name: ClassVar[str] = "attention"
    output: ClassVar[str] = "attention"
    kind: AttentionKind = "mse"

    def __post_init__(self) -> None:
        super().__post_init__()
        _choice(self.where("kind"), self.kind, AttentionKind)

    def check(self, student: PretrainedConfig, teacher: PretrainedConfig) -> None:
        pairs = self.pairs(student.num_hidden_layers, teacher.num_hidden_layers)
        if all(t == 0 for _, t in pairs):
            raise ConfigError(f"{self.where('mapping')}: every student layer maps to the "
                              "embeddings (layer 0), which have no attention to match")
        if student.num_attention_heads != teacher.num_attention_heads:
            raise ConfigError(
                f"attention transfer compares heads one to one, but the student has "
                f"{student.num_attention_heads} heads and the teacher "
                f"{teacher.num_attention_heads}; give the student the teacher's head count or "
                "use the relation term (MiniLM relation heads)")


@dataclass(frozen=True)
class PatientTerm(MappedTerm):
    """MSE between L2-normalised [CLS] states of mapped layers (Patient KD)."""

    name: ClassVar[str] = "patient"
    mapping: LayerMap = "skip"


@dataclass(frozen=True)
class CosineTerm(Term):
    """Cosine loss between the last hidden states (DistilBERT), projected when widths
    differ."""

    name: ClassVar[str] = "cosine"


@dataclass(frozen=True)
class RelationTerm(Term):
    """MiniLM self-attention (Q-K) and value (V-V) relation KL of the last layers.

    Attributes:
        relation_heads: Heads both widths are split into (None: the teacher's head count);
            must divide the student's and the teacher's hidden sizes.
    """

    name: ClassVar[str] = "relation"
    relation_heads: int | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        heads = self.relation_heads
        if heads is not None and (isinstance(heads, bool) or not isinstance(heads, int)
                                  or heads < 1):
            raise ConfigError(f"{self.where('relation_heads')}={heads!r}: must be an integer "
                              ">= 1 (null: the teacher's head count)")

    def heads(self, teacher: PretrainedConfig) -> int:
        return self.relation_heads or int(teacher.num_attention_heads)

    def check(self, student: PretrainedConfig, teacher: PretrainedConfig) -> None:
        heads = self.heads(teacher)
        for role, config in (("student", student), ("teacher", teacher)):
            if config.hidden_size % heads:
                raise ConfigError(
                    f"{self.where('relation_heads')}={heads}: the {role}'s hidden size "
                    f"{config.hidden_size} is not divisible by it; choose a count dividing "
                    f"both {student.hidden_size} and {teacher.hidden_size}")


TERM_TYPES: dict[str, type[Term]] = {t.name: t for t in (
    EmbeddingTerm, HiddenTerm, AttentionTerm, RelationTerm, CosineTerm, PatientTerm)}


def make_term(name: str, options: Term | Mapping[str, Any] | None) -> Term:
    """The typed term ``name`` from its config options.

    Raises:
        ConfigError: An unknown term or option (naming the valid ones), or a bad value.
    """
    if name not in TERM_TYPES:
        raise ConfigError(f"unknown distillation terms {[name]}; known: {sorted(TERM_TYPES)}")
    cls = TERM_TYPES[name]
    if isinstance(options, cls):
        return options
    if options is not None and not isinstance(options, Mapping):
        raise ConfigError(f"distill.terms.{name} must be a mapping of options, got {options!r}")
    valid = [f.name for f in fields(cls)]
    for key in options or {}:
        if key not in valid:
            raise ConfigError(f"distill.terms.{name}: unknown option {key!r}; valid: "
                              f"{', '.join(valid)}")
    return cls(**dict(options or {}))


def check_terms(terms: Mapping[str, Term], student: PretrainedConfig,
                teacher: PretrainedConfig) -> None:
    """Check every term against both models' configs (depths, heads, widths), no weights.

    Raises:
        ConfigError: The first term that cannot apply to these two models.
    """
    for term in terms.values():
        term.check(student, teacher)
