"""The model spec interface: what a model will be, known before any weights load.

:class:`ModelSpec` also applies the ``vocab`` option every spec takes (``full``, or ``task``:
only the word pieces of the run's text, :mod:`litdistill.vocab`): subclasses implement
``full_tokenizer``, ``full_hf_config`` and ``build_full``. :mod:`litdistill.models` holds the
specs and re-exports this one.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from pathlib import Path

from transformers import PretrainedConfig, PreTrainedModel, PreTrainedTokenizerBase

from litdistill import vocab
from litdistill.errors import ConfigError
from litdistill.pruning import Calibration

log = logging.getLogger(__name__)

VOCABS = ("full", "task")


class ModelSpec:
    """What a model will be, known cheaply; :meth:`build` makes it.

    Attributes:
        name: Human-readable name for logs and results.json.
        vocab: ``full`` (the tokenizer's whole vocabulary) or ``task`` (the pieces
            :meth:`fit_vocab` found in the run's text).
        kept_ids: With ``vocab=task`` once fitted: the kept piece ids of the full vocabulary,
            in their new order.
    """

    name: str
    vocab: str = "full"
    vocab_extra: int = 0
    vocab_corpus: tuple[str, ...] = ()
    kept_ids: list[int] | None = None
    _pruned_tokenizer: PreTrainedTokenizerBase | None = None

    def set_vocab(self, vocab: str = "full", vocab_extra: int = 0,
                  vocab_corpus: Sequence[str] | None = None) -> None:
        """Validate and store the vocabulary options (every spec's ``__init__`` calls it)."""
        if vocab not in VOCABS:
            raise ConfigError(f"student.vocab={vocab}: choose one of {', '.join(VOCABS)}")
        if vocab_extra < 0 or (vocab_extra and vocab == "full"):
            raise ConfigError(f"student.vocab_extra={vocab_extra}: a count >= 0, used with "
                              "student.vocab=task")
        if vocab_extra and not vocab_corpus:
            raise ConfigError("student.vocab_extra needs student.vocab_corpus=[file.txt, ...] "
                              "(text files, a text per line) to count piece frequencies in")
        for file in vocab_corpus or ():
            if not Path(file).is_file():
                raise ConfigError(f"student.vocab_corpus: no such file {file}")
        self.vocab, self.vocab_extra = vocab, int(vocab_extra)
        self.vocab_corpus = tuple(str(f) for f in vocab_corpus or ())

    def fit_vocab(self, texts: Iterable[str], teacher: ModelSpec | None) -> None:
        """With ``vocab=task``: keep the pieces of ``texts`` (the run's training, transfer and
        augmented text), the special tokens and ``vocab_extra`` frequent corpus pieces."""
        if self.vocab == "full":
            return
        full = self.full_tokenizer(teacher)
        self.kept_ids = vocab.kept_pieces(full, texts, self.vocab_extra,
                                          vocab.read_corpus(self.vocab_corpus))
        self._pruned_tokenizer = vocab.pruned_tokenizer(full, self.kept_ids)
        log.info("%s: vocabulary pruned to %d of %d pieces", self.name, len(self.kept_ids),
                 len(full))

    def tokenizer(self, teacher: ModelSpec | None) -> PreTrainedTokenizerBase:
        """The tokenizer matching the model's vocabulary."""
        if self.vocab == "full":
            return self.full_tokenizer(teacher)
        if self._pruned_tokenizer is None:
            raise RuntimeError(f"{self.name}: vocab=task needs fit_vocab(texts) first")
        return self._pruned_tokenizer

    def hf_config(self, teacher: ModelSpec | None) -> PretrainedConfig | None:
        """The transformers config the model will have (None when not known up front)."""
        config = self.full_hf_config(teacher)
        if config is None or self.kept_ids is None:
            return config
        config = config.__class__.from_dict(config.to_dict())
        vocab.restrict_config(config, self.kept_ids)
        return config

    def build(self, num_labels: int, regression: bool, teacher: ModelSpec | None = None,
              teacher_model: PreTrainedModel | None = None,
              calibration: Calibration | None = None) -> PreTrainedModel:
        """Create the model with its weights.

        Args:
            num_labels: Outputs of the classification head (1 for regression).
            regression: Whether the task is regression.
            teacher: The run's teacher spec (students may take its tokenizer or layers).
            teacher_model: The teacher, already loaded, so its weights are not read twice.
            calibration: Rows for the importance pass of a width-pruned student.
        """
        model = self.build_full(num_labels, regression, teacher, teacher_model, calibration)
        if self.kept_ids is not None:
            model, _ = vocab.prune_vocab(model, self.full_tokenizer(teacher), self.kept_ids)
        return model

    def full_tokenizer(self, teacher: ModelSpec | None) -> PreTrainedTokenizerBase:
        """The tokenizer before any vocabulary pruning."""
        raise NotImplementedError

    def full_hf_config(self, teacher: ModelSpec | None) -> PretrainedConfig | None:
        """The config before any vocabulary pruning."""
        raise NotImplementedError

    def build_full(self, num_labels: int, regression: bool, teacher: ModelSpec | None,
                   teacher_model: PreTrainedModel | None,
                   calibration: Calibration | None) -> PreTrainedModel:
        """The model before any vocabulary pruning (arguments as :meth:`build`)."""
        raise NotImplementedError

    @property
    def has_classifier(self) -> bool:
        """Whether the weights include a trained sequence-classification head."""
        return False
