"""The teacher before training: built lazily, its dev (and train) logits precomputed or read
from the cache, and its quality checked against the majority-class baseline.

The caller hands over each split as a :class:`SplitSource` (cache key, row count, batches), so
neither this module nor :mod:`litdistill.teacher_cache` knows the DataModule.
"""

from __future__ import annotations

import logging
import warnings
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers import PreTrainedModel

from litdistill.errors import ConfigError
from litdistill.metrics import evaluate
from litdistill.models import ModelSpec, Pretrained, count_params, freeze
from litdistill.reader import Batch, split_logits
from litdistill.tasks import TaskSpec
from litdistill.teacher_cache import TeacherCache, entry_key, weights_fingerprint

log = logging.getLogger(__name__)

# A random test teacher draws its weights from its own stream, so the student's
# initialisation does not depend on whether the teacher had to be built (cache miss) or not.
_TEACHER_SEED_OFFSET = 7919


class TeacherBuilder:
    """Builds the frozen teacher at most once, and only when something needs its weights.

    Args:
        spec: The teacher's spec.
        task: The task (label count, regression).
        seed: The run's seed (random test teachers are built from it).
    """

    def __init__(self, spec: ModelSpec, task: TaskSpec, seed: int) -> None:
        self.spec, self.task, self.seed = spec, task, seed
        self._model: PreTrainedModel | None = None
        self._fingerprint: str | None = None
        self._params: int | None = None

    @property
    def folder(self) -> str | None:
        """Local folder of the teacher's weights (None: built from a config)."""
        if isinstance(self.spec, Pretrained):
            return self.spec.path if Path(self.spec.path).is_dir() else None
        return None

    def model(self) -> PreTrainedModel:
        """The teacher, frozen; built on first use."""
        if self._model is None:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(self.seed + _TEACHER_SEED_OFFSET)
                model = self.spec.build(self.task.num_labels, self.task.is_regression)
            self._model = freeze(model)
            self._params = count_params(self._model)
        return self._model

    def fingerprint(self) -> str:
        """Hash of the weights: files when there is a folder (no load), else the tensors."""
        if self._fingerprint is None:
            folder = self.folder
            self._fingerprint = weights_fingerprint(folder, None if folder else self.model())
        return self._fingerprint

    def params(self) -> int | None:
        """Parameter count (of the built model, else as a cache entry recorded it)."""
        return self._params

    def note_params(self, meta: dict[str, Any]) -> None:
        """Take the parameter count from a cache entry's meta when the model is not built."""
        if self._params is None:
            self._params = meta.get("params")

    @property
    def built(self) -> bool:
        return self._model is not None


@dataclass(frozen=True)
class SplitSource:
    """What the teacher needs of one tokenized split, handed over by the caller.

    Attributes:
        key: The tokenized split's cache key (task, split, file sha256, tokenizer, max
            length, subsampling, ...): with the teacher's hash it keys the cache entry.
        rows: Rows in the split.
        batches: Yields ``(row positions, padded teacher inputs)`` covering every row once;
            called only when the teacher must run.
    """

    key: str
    rows: int
    batches: Callable[[], Iterable[Batch]]


def teacher_outputs(builder: TeacherBuilder, cache: TeacherCache,
                    sources: Mapping[str, SplitSource], device: torch.device
                    ) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Teacher logits per split: read from the cache, or computed (and stored).

    Returns:
        ``{split: [rows, num_labels] logits}`` and what results.json records about it
        (``{"mode", "splits": {split: {"key", "hit"}}}``).
    """
    logits, info = {}, {"mode": cache.mode, "splits": {}}
    for split, source in sources.items():
        key = entry_key(builder.fingerprint(), source.key)
        computed = []

        def compute(split: str = split, source: SplitSource = source) -> np.ndarray:
            computed.append(split)
            log.info("computing teacher logits on %s/%s (%d rows)", builder.task.name,
                     split, source.rows)
            return split_logits(builder.model(), source.batches(), source.rows, device)

        meta = {"teacher": builder.spec.name, "task": builder.task.name, "split": split}
        if builder.built:
            meta["params"] = builder.params()
        logits[split] = cache.get(key, source.rows, compute, meta)
        builder.note_params(cache.meta(key))
        info["splits"][split] = {"key": key, "hit": not computed and cache.mode != "off"}
    if builder.built:
        builder.model().to("cpu")  # the trainer moves it back if it is used live
    return logits, info


def _as_tensors(arrays: Sequence[Any], dtype: torch.dtype | None = None) -> list[torch.Tensor]:
    return [torch.tensor(np.asarray(a), dtype=dtype) for a in arrays]


def check_teacher(task: TaskSpec, name: str, dev_logits: Sequence[np.ndarray],
                  dev_labels: Sequence[Sequence[float]], train_labels: Sequence[float],
                  min_gain: float | None) -> tuple[dict[str, float], dict[str, Any]]:
    """Score the teacher on dev and stop a run whose teacher is no better than predicting
    the majority class.

    Args:
        task: The task.
        name: The teacher's name (for the message).
        dev_logits: The teacher's logits on each eval split.
        dev_labels: The labels of each eval split.
        train_labels: The training labels (the majority class / mean comes from them).
        min_gain: Score points (fractions) the teacher must beat the baseline by; None
            skips the check (random test teachers).

    Returns:
        The teacher's dev metrics (with ``score``) and ``{"teacher_score",
        "majority_score", "min_gain"}`` for results.json.

    Raises:
        ConfigError: The teacher scores at most the majority baseline + ``min_gain``.
    """
    labels = _as_tensors(dev_labels)
    teacher = evaluate(task, _as_tensors(dev_logits, torch.float32), labels)
    if task.is_regression:
        constant = float(np.mean(train_labels))
        baseline_logits = [torch.full((len(y), 1), constant) for y in labels]
    else:
        majority = Counter(train_labels).most_common(1)[0][0]
        baseline_logits = [torch.nn.functional.one_hot(torch.full((len(y),), majority),
                                                       task.num_labels).float()
                           for y in labels]
    with warnings.catch_warnings():  # Pearson of a constant prediction: NaN, counted as 0
        warnings.simplefilter("ignore")
        baseline = evaluate(task, baseline_logits, labels, nan_as_zero=True)
    gate = {"teacher_score": teacher["score"], "majority_score": baseline["score"],
            "min_gain": min_gain}
    if min_gain is not None and teacher["score"] <= baseline["score"] + float(min_gain):
        raise ConfigError(
            f"teacher {name} scores {teacher['score']:.4f} on {task.name} dev, no better than "
            f"always predicting the majority class ({baseline['score']:.4f}, margin "
            f"{min_gain}): fine-tune the teacher first (teacher=none student=pretrained "
            f"student.name_or_path=<teacher> distill=none) and distill from its run's "
            "student/ folder; teacher_gate=null skips this check"
        )
    return teacher, gate
