"""The teacher before training: built lazily, its dev (and train) logits precomputed or read
from the cache, and its quality checked against the majority-class baseline."""

from __future__ import annotations

import logging
import warnings
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers import PreTrainedModel

from litdistill.data import GlueDataModule
from litdistill.errors import ConfigError
from litdistill.models import ModelSpec, Pretrained, count_params
from litdistill.module import evaluate
from litdistill.tasks import TaskSpec
from litdistill.teacher_cache import TeacherCache, entry_key, run_teacher, weights_fingerprint

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
            self._model = model.requires_grad_(False).eval()
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


def teacher_outputs(datamodule: GlueDataModule, builder: TeacherBuilder, cache: TeacherCache,
                    splits: list[str], device: torch.device, batch_size: int
                    ) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Teacher logits for ``splits``: read from the cache, or computed (and stored).

    Returns:
        ``{split: [rows, num_labels] logits}`` and what results.json records about it.
    """
    logits, info = {}, {"mode": cache.mode, "splits": {}}
    for split in splits:
        rows = len(datamodule.tokenized(split))
        key = entry_key(builder.fingerprint(), datamodule.cache_key(split))
        computed = []

        def compute(split: str = split, rows: int = rows) -> np.ndarray:
            computed.append(split)
            log.info("computing teacher logits on %s/%s (%d rows)", datamodule.task.name,
                     split, rows)
            return run_teacher(builder.model(), datamodule.teacher_batches(split, batch_size),
                               rows, device)

        meta = {"teacher": builder.spec.name, "task": datamodule.task.name, "split": split}
        if builder.built:
            meta["params"] = builder.params()
        logits[split] = cache.get(key, rows, compute, meta)
        builder.note_params(cache.meta(key))
        info["splits"][split] = {"key": key, "hit": not computed and cache.mode != "off"}
    if builder.built:
        builder.model().to("cpu")  # the trainer moves it back if it is used live
    return logits, info


def check_teacher(task: TaskSpec, name: str, datamodule: GlueDataModule,
                  logits: dict[str, np.ndarray], min_gain: float | None) -> dict[str, Any]:
    """Stop a distillation run whose teacher is no better than predicting the majority class.

    Args:
        min_gain: Score points (fractions) the teacher must beat the baseline by; None
            skips the check (random test teachers).

    Returns:
        ``{"teacher_score", "majority_score"}`` for results.json.

    Raises:
        ConfigError: The teacher scores at most the majority baseline + ``min_gain``.
    """
    labels = [torch.tensor(datamodule.tokenized(s)["label"]) for s in task.eval_splits]
    teacher = evaluate(task, [torch.from_numpy(np.asarray(logits[s], dtype=np.float32))
                              for s in task.eval_splits], labels)
    train_labels = datamodule.tokenized("train")["label"]
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
        baseline = evaluate(task, baseline_logits, labels)
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
    return gate
