"""The job's numeric and path settings, checked first and in one place.

:func:`validate_settings` runs before any file, tokenizer or weight is read: batch sizes,
sample caps, lengths and learning rate in range, the cache folders writable, a GPU where one is
asked for. :func:`check_max_length` needs the models' configs (not their weights). Loss
weights and temperatures are checked by :class:`~litdistill.objective.Objective` itself.
"""

from __future__ import annotations

import math
import tempfile
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig
from transformers import PretrainedConfig

from litdistill.errors import ConfigError
from litdistill.models import ModelSpec

# Model types whose position ids start after the padding index (fairseq's convention), so
# that padding_idx + 1 of their max_position_embeddings can never hold a token.
_OFFSET_POSITIONS = ("roberta", "xlm-roberta", "camembert", "mpnet", "longformer",
                     "data2vec-text", "xlm-roberta-xl")


def _integer(where: str, value: Any, minimum: int, hint: str = "") -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"{where}={value!r}: must be an integer >= {minimum}{hint}")
    return value


def _learning_rate(where: str, value: Any) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{where}={value!r} is not a number") from None
    # 0 is allowed on purpose: the weights stay as they are (tests compare DDP with one
    # process that way); a negative rate climbs the loss.
    if not (number >= 0 and math.isfinite(number)):
        raise ConfigError(f"{where}={value!r}: must be a finite number > 0 (0: weights "
                          "never change)")
    return number


def _trainer_settings(trainer: DictConfig) -> None:
    """The Trainer settings litdistill computes with before Lightning sees them (the run's
    epochs) or that Lightning itself accepts unchecked and trips over mid-run."""
    if trainer.get("max_epochs") != -1:
        _integer("trainer.max_epochs", trainer.get("max_epochs"), 1,
                 " (-1: until trainer.max_steps)")
    if trainer.get("min_epochs") is not None:
        _integer("trainer.min_epochs", trainer.get("min_epochs"), 0)
    _integer("trainer.accumulate_grad_batches", trainer.get("accumulate_grad_batches", 1), 1)
    clip = trainer.get("gradient_clip_val")
    if clip is not None and (isinstance(clip, bool) or not isinstance(clip, int | float)
                             or not 0 <= clip < math.inf):
        raise ConfigError(f"trainer.gradient_clip_val={clip!r}: must be a finite number >= 0 "
                          "(null: no clipping)")


def check_writable(folder: Path, where: str, hint: str = "") -> None:
    """Create ``folder`` if needed and write a probe file in it (``os.access`` says yes to
    root on a read-only mount; a real write is the only proof).

    Raises:
        ConfigError: The folder cannot be created or written, with its path.
    """
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as err:
        raise ConfigError(f"{where} {folder} is not writable ({err.strerror or err}){hint}"
                          ) from None


def check_device(cfg: DictConfig) -> None:
    """``trainer.accelerator=gpu``/``cuda`` needs a visible CUDA device (Lightning would fail
    only after the teacher ran)."""
    accelerator = str(cfg.trainer.get("accelerator", "auto"))
    if accelerator in ("gpu", "cuda") and not torch.cuda.is_available():
        raise ConfigError(f"trainer.accelerator={accelerator} but this machine has no usable "
                          "CUDA GPU; use hardware=cpu, or check CUDA_VISIBLE_DEVICES and the "
                          "driver (nvidia-smi)")


def validate_settings(cfg: DictConfig) -> None:
    """Every numeric and path setting of the job, before any file, tokenizer or weight.

    Loss weights and temperatures are :class:`~litdistill.objective.Objective`'s own checks;
    ``data.max_length`` against the models' positions is :func:`check_max_length`'s; the
    optimizer, scheduler, loggers, callbacks and Trainer are built (and so checked) by
    :func:`litdistill.builders.build_setup`, still before any weights load.

    Raises:
        ConfigError: The first bad setting, named by its key.
    """
    data = cfg.data
    for key in ("batch_size", "eval_batch_size", "max_length"):
        _integer(f"data.{key}", data.get(key), 1)
    for key in ("max_train_samples", "max_eval_samples"):
        if data.get(key) is not None:
            _integer(f"data.{key}", data.get(key), 1, " (null: every row)")
    _integer("data.num_workers", data.get("num_workers", 0), 0)
    _trainer_settings(cfg.trainer)
    if cfg.get("optimizer") and cfg.optimizer.get("lr") is not None:
        _learning_rate("optimizer.lr", cfg.optimizer.lr)
    resume = (cfg.get("callbacks") or {}).get("last_checkpoint")
    if resume:
        _integer("callbacks.last_checkpoint.every_n_train_steps",
                 resume.get("every_n_train_steps", 0), 0, " (0: at epoch ends only)")
    check_device(cfg)
    hint = "; point LITDISTILL_HOME (or paths.cache_dir) at a writable folder"
    folders: dict[Path, str] = {}  # folder -> the first key naming it
    for key, folder in (("paths.cache_dir", cfg.paths.cache_dir),
                        ("data.cache_dir", data.get("cache_dir"))):
        if folder:
            folders.setdefault(Path(folder).expanduser(), key)
    for folder, key in folders.items():
        check_writable(folder, key, hint)


def position_limit(config: PretrainedConfig | None) -> int | None:
    """Tokens a model can take (None: unknown, e.g. relative positions)."""
    limit = getattr(config, "max_position_embeddings", None)
    if limit is None:
        return None
    if config.model_type in _OFFSET_POSITIONS:
        limit -= (config.pad_token_id or 0) + 1
    return int(limit)


def check_max_length(max_length: int, teacher: ModelSpec | None, student: ModelSpec) -> None:
    """``data.max_length`` must fit the position embeddings of both models (a longer row
    would crash in the embedding layer, after the weights loaded).

    Raises:
        ConfigError: It exceeds the teacher's or the student's limit.
    """
    models = [("teacher", teacher, teacher.hf_config(None))] if teacher is not None else []
    models.append(("student", student, student.hf_config(teacher)))
    for role, spec, config in models:
        limit = position_limit(config)
        if limit is not None and max_length > limit:
            raise ConfigError(f"data.max_length={max_length} exceeds the {limit} positions of "
                              f"the {role} {spec.name}; set data.max_length <= {limit}")


