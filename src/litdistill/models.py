"""Teachers and students: pretrained, built from sizes, or cut from a teacher's layers/width.

Each model config group file names one of the classes below with ``_target_``. Building is
two-phase: instantiating a spec reads only small files (config.json, tokenizer), so train()
can validate vocabularies and label counts before :meth:`ModelSpec.build` loads any weights.

Every spec takes ``vocab`` (``full``, or ``task``: only the word pieces of the run's text,
:mod:`litdistill.vocab`), applied by :class:`~litdistill.model_spec.ModelSpec`. Files and
loading live in :mod:`litdistill.model_files`, the depth cut in :mod:`litdistill.cutting`,
the width cut in :mod:`litdistill.pruning`; their public names are re-exported here.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from functools import cached_property
from pathlib import Path

import torch
from huggingface_hub.errors import StrictDataclassError
from torch import nn
from transformers import (
    AutoConfig,
    AutoModelForSequenceClassification,
    BertConfig,
    PretrainedConfig,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from litdistill import pruning
from litdistill.cutting import cut_layers, layer_list_name
from litdistill.errors import ConfigError
from litdistill.model_files import (
    char_tokenizer,
    check_weight_files,
    config_problem,
    fix_hint,
    load_tokenizer,
    resolve_path,
)
from litdistill.model_spec import ModelSpec
from litdistill.pruning import Calibration

__all__ = ["Calibration", "FromTeacher", "ModelSpec", "Pretrained", "Pruned", "Sized",
           "char_tokenizer", "count_params", "cut_layers", "freeze", "layer_list_name",
           "load_tokenizer", "resolve_path"]

log = logging.getLogger(__name__)


def _problem_type(regression: bool) -> str:
    return "regression" if regression else "single_label_classification"


class Pretrained(ModelSpec):
    """A local folder, zoo name or hub name loaded with ``AutoModelForSequenceClassification``.

    Args:
        name_or_path: Folder with config.json + weights, a zoo name, or a hub id.
        attn_implementation: ``sdpa`` (fast) or ``eager`` (needed to return attention maps).
        name: Display name (default: ``name_or_path``).
        vocab: ``full`` or ``task`` (only the pieces of the run's text; see
            :mod:`litdistill.vocab`).
        vocab_extra: With ``vocab=task``: also keep this many of the most frequent pieces of
            ``vocab_corpus`` (text files, a text per line).
        vocab_corpus: Files ``vocab_extra`` counts pieces in.
    """

    def __init__(self, name_or_path: str, attn_implementation: str | None = None,
                 name: str | None = None,
                 vocab: str = "full", vocab_extra: int = 0,
                 vocab_corpus: Sequence[str] | None = None) -> None:
        self.set_vocab(vocab, vocab_extra, vocab_corpus)
        if not name_or_path:
            raise ConfigError("set the model's name_or_path (a folder, zoo name or hub id)")
        self.name_or_path = str(name_or_path)
        self.name = name or self.name_or_path
        self.attn_implementation = attn_implementation

    @cached_property
    def path(self) -> str:
        return resolve_path(self.name_or_path)

    @cached_property
    def _config(self) -> PretrainedConfig:
        try:
            return AutoConfig.from_pretrained(self.path)
        # TypeError: transformers < 5.18 indexes a config.json that holds a JSON list.
        except (OSError, ValueError, TypeError, StrictDataclassError) as e:
            folder = Path(self.path)
            if not folder.is_dir():
                raise  # a hub id: transformers' message names the repository
            file = folder / "config.json"
            raise ConfigError(f"{file} is not a usable model config "
                              f"({config_problem(file, e)}); {fix_hint(folder)}") from e

    def full_hf_config(self, teacher: ModelSpec | None) -> PretrainedConfig:
        return self._config

    def full_tokenizer(self, teacher: ModelSpec | None) -> PreTrainedTokenizerBase:
        return self._tokenizer

    @cached_property
    def _tokenizer(self) -> PreTrainedTokenizerBase:
        return load_tokenizer(self.path)

    @property
    def has_classifier(self) -> bool:
        return any(a.endswith("ForSequenceClassification")
                   for a in self._config.architectures or ())

    def build_full(self, num_labels: int, regression: bool, teacher: ModelSpec | None,
                   teacher_model: PreTrainedModel | None,
                   calibration: Calibration | None) -> PreTrainedModel:
        kwargs = {"attn_implementation": self.attn_implementation} if self.attn_implementation \
            else {}
        if not self.has_classifier:
            log.info("%s has no sequence-classification head: adding a freshly initialised "
                     "one with %d output(s) (fine-tune it before using it as a teacher)",
                     self.name, num_labels)
        if Path(self.path).is_dir():
            check_weight_files(Path(self.path))
        # fp32 master weights whatever the checkpoint's dtype (transformers 5 would keep an
        # fp16/bf16 checkpoint in half precision); autocast handles mixed precision.
        model = AutoModelForSequenceClassification.from_pretrained(
            self.path, num_labels=num_labels, problem_type=_problem_type(regression),
            dtype=torch.float32, **kwargs)
        return model


class Sized(ModelSpec):
    """A randomly initialised BERT of the given size (BertConfig fields).

    Args:
        num_layers: Transformer layers.
        hidden: Hidden width.
        heads: Attention heads (must divide ``hidden``).
        intermediate: FFN width.
        tokenizer_name: Tokenizer folder/zoo/hub name; None uses the teacher's tokenizer, or
            the built-in character tokenizer when there is no teacher.
        max_position: Maximum sequence length.
        name: Display name.
        attn_implementation: ``sdpa`` or ``eager``.
        vocab: ``full`` or ``task`` (only the pieces of the run's text; see
            :mod:`litdistill.vocab`).
        vocab_extra: With ``vocab=task``: also keep this many of the most frequent pieces of
            ``vocab_corpus`` (text files, a text per line).
        vocab_corpus: Files ``vocab_extra`` counts pieces in.
    """

    def __init__(self, num_layers: int, hidden: int, heads: int, intermediate: int,
                 tokenizer_name: str | None = None, max_position: int = 512,
                 name: str | None = None, attn_implementation: str | None = None,
                 vocab: str = "full", vocab_extra: int = 0,
                 vocab_corpus: Sequence[str] | None = None) -> None:
        self.set_vocab(vocab, vocab_extra, vocab_corpus)
        if hidden % heads:
            raise ConfigError(f"hidden size {hidden} is not divisible by {heads} heads")
        self.sizes = dict(num_hidden_layers=num_layers, hidden_size=hidden,
                          num_attention_heads=heads, intermediate_size=intermediate,
                          max_position_embeddings=max_position)
        self.tokenizer_name = tokenizer_name
        self.attn_implementation = attn_implementation
        self.name = name or f"bert-{num_layers}x{hidden}"

    def full_tokenizer(self, teacher: ModelSpec | None) -> PreTrainedTokenizerBase:
        if self.tokenizer_name:
            return load_tokenizer(resolve_path(self.tokenizer_name, need_config=False))
        if teacher is not None:
            return teacher.tokenizer(None)
        return char_tokenizer()

    def full_hf_config(self, teacher: ModelSpec | None) -> PretrainedConfig:
        tokenizer = self.full_tokenizer(teacher)
        base = teacher.hf_config(None) if teacher is not None and not self.tokenizer_name \
            else None
        if base is None:
            return BertConfig(vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id,
                              **self.sizes)
        # Keep the teacher's architecture (BERT, MPNet, ...) and vocabulary; change the sizes.
        config = base.__class__.from_dict(base.to_dict())
        for key, value in self.sizes.items():
            if key != "max_position_embeddings":  # MPNet's positions are offset by its pad id
                setattr(config, key, value)
        config.architectures = None
        return config

    def build_full(self, num_labels: int, regression: bool, teacher: ModelSpec | None,
                   teacher_model: PreTrainedModel | None,
                   calibration: Calibration | None) -> PreTrainedModel:
        config = self.full_hf_config(teacher)
        config.num_labels = num_labels
        config.problem_type = _problem_type(regression)
        if self.attn_implementation:
            config._attn_implementation = self.attn_implementation
        return AutoModelForSequenceClassification.from_config(config)


class FromTeacher(ModelSpec):
    """DistilBERT-style student: the teacher's embeddings, head and a subset of its layers.

    Args:
        layers: Teacher layer indices (0-based) copied in order, e.g. ``[0, 2, 4]``.
        source: Model to cut from; defaults to the run's teacher. Needed with ``teacher=none``
            (the no-KD baseline of the same student).
        vocab: ``full`` or ``task`` (only the pieces of the run's text; see
            :mod:`litdistill.vocab`).
        vocab_extra: With ``vocab=task``: also keep this many of the most frequent pieces of
            ``vocab_corpus`` (text files, a text per line).
        vocab_corpus: Files ``vocab_extra`` counts pieces in.
    """

    def __init__(self, layers: Sequence[int], source: str | None = None,
                 vocab: str = "full", vocab_extra: int = 0,
                 vocab_corpus: Sequence[str] | None = None) -> None:
        self.set_vocab(vocab, vocab_extra, vocab_corpus)
        self.layers = [int(i) for i in layers]
        if not self.layers:
            raise ConfigError("student=from_teacher needs a non-empty student.layers list")
        self.source = Pretrained(source) if source else None
        self.name = f"{source or 'teacher'}[layers={','.join(map(str, self.layers))}]"

    def _origin(self, teacher: ModelSpec | None) -> ModelSpec:
        origin = self.source or teacher
        if origin is None:
            raise ConfigError("student=from_teacher needs a teacher, or student.source=<model> "
                              "when teacher=none (the no-KD baseline)")
        return origin

    def full_tokenizer(self, teacher: ModelSpec | None) -> PreTrainedTokenizerBase:
        return self._origin(teacher).tokenizer(None)

    def full_hf_config(self, teacher: ModelSpec | None) -> PretrainedConfig | None:
        origin = self._origin(teacher)
        config = origin.hf_config(None)
        if config is None:
            return None
        if bad := [i for i in self.layers if not 0 <= i < config.num_hidden_layers]:
            n = config.num_hidden_layers
            raise ConfigError(f"student.layers {bad} out of range: the source has {n} layers "
                              f"(0..{n - 1})")
        config = config.__class__.from_dict(config.to_dict())
        config.num_hidden_layers = len(self.layers)
        return config

    def _source_model(self, num_labels: int, regression: bool, teacher: ModelSpec | None,
                      teacher_model: PreTrainedModel | None) -> PreTrainedModel:
        """What is cut: the run's loaded teacher, else ``source`` (or the teacher) loaded."""
        if self.source is None and teacher_model is not None:
            return teacher_model
        return self._origin(teacher).build(num_labels, regression)

    def build_full(self, num_labels: int, regression: bool, teacher: ModelSpec | None,
                   teacher_model: PreTrainedModel | None,
                   calibration: Calibration | None) -> PreTrainedModel:
        return cut_layers(self._source_model(num_labels, regression, teacher, teacher_model),
                          self.layers)



class Pruned(FromTeacher):
    """A student cut from the teacher in depth and width (see :mod:`litdistill.pruning`).

    Layers, hidden dimensions, heads and FFN neurons with the largest activations on
    calibration rows of the run's training text are kept and the teacher's weights sliced.
    ``None`` keeps the teacher's size; with nothing pruned this is :class:`FromTeacher`.

    Args:
        layers: Teacher layers kept, in order (None: all).
        hidden: Residual width, a multiple of the teacher's head size.
        heads: Heads per layer; must be ``hidden / head_dim`` (None derives it).
        intermediate: FFN neurons per layer.
        rows: Calibration rows for the importance pass.
        seed: Which rows are drawn.
        source: Model to cut from; defaults to the run's teacher.
        name: Display name.
        importance: How heads and FFN neurons are scored: ``activation`` (Minitron's mean
            activation) or ``gradient`` (Michel et al. 2019's mean ``|dL/dmask|``).
    """

    def __init__(self, layers: Sequence[int] | None = None, hidden: int | None = None,
                 heads: int | None = None, intermediate: int | None = None, rows: int = 512,
                 seed: int = 0, source: str | None = None, name: str | None = None,
                 vocab: str = "full", vocab_extra: int = 0,
                 vocab_corpus: Sequence[str] | None = None,
                 importance: str = "activation") -> None:
        self.set_vocab(vocab, vocab_extra, vocab_corpus)
        if rows < 1:
            raise ConfigError(f"student.rows={rows}: calibration needs at least one row")
        if importance not in pruning.IMPORTANCE:
            raise ConfigError(f"student.importance={importance!r}: unknown estimator; "
                              f"valid: {', '.join(pruning.IMPORTANCE)}")
        self.importance = importance
        self.layers = None if layers is None else [int(i) for i in layers]
        self.sizes = dict(hidden=hidden, heads=heads, intermediate=intermediate)
        self.rows, self.seed = int(rows), int(seed)
        self.source = Pretrained(source) if source else None
        shown = ",".join(map(str, self.layers)) if self.layers is not None else "all"
        self.name = name or (f"{source or 'teacher'}[pruned layers={shown} "
                             f"hidden={hidden or 'full'} ffn={intermediate or 'full'}]")

    def shape(self, config: PretrainedConfig) -> pruning.Shape:
        """The checked shape against the source's config."""
        return pruning.check_shape(config, self.layers, **self.sizes)

    def full_hf_config(self, teacher: ModelSpec | None) -> PretrainedConfig | None:
        config = self._origin(teacher).hf_config(None)
        return None if config is None else pruning.pruned_config(config, self.shape(config))

    def build_full(self, num_labels: int, regression: bool, teacher: ModelSpec | None,
                   teacher_model: PreTrainedModel | None,
                   calibration: Calibration | None) -> PreTrainedModel:
        source = self._source_model(num_labels, regression, teacher, teacher_model)
        return pruning.prune(source, self.shape(source.config), calibration, self.rows,
                             self.seed, self.importance)


def count_params(model: nn.Module) -> int:
    """Parameters of a model (all of them, trainable or not)."""
    return sum(p.numel() for p in model.parameters())


@torch.no_grad()
def freeze(model: nn.Module) -> nn.Module:
    """Make a teacher read-only: no gradients, eval mode (dropout off)."""
    model.requires_grad_(False)
    return model.eval()
