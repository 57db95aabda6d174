"""The ``data`` options and the LightningDataModule over a run's finished splits.

Reading, validating, subsetting and tokenizing happen in :mod:`litdistill.reader` (no
Lightning); :class:`GlueDataModule` is assembled once from the tokenized splits (plus the
teacher's logits and the unlabelled ``transfer`` split) and only batches them: samplers,
collators, and the loader position that a checkpoint saves for an exact mid-epoch resume.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import datasets
import lightning as L
import numpy as np
import torch
import torch.distributed as dist
from lightning.pytorch.overrides.distributed import UnrepeatedDistributedSampler
from torch.utils.data import DataLoader, RandomSampler, Sampler
from transformers import DataCollatorWithPadding, PreTrainedTokenizerBase
from transformers.trainer_pt_utils import LengthGroupedSampler

from litdistill.batching import (
    LABELLED,
    TEACHER_LOGITS,
    DualCollator,
    EpochSeededSampler,
    LoaderPosition,
    LogitsCollator,
    ResumableLoader,
)
from litdistill.errors import ConfigError
from litdistill.reader import Splits, TokenizedSplit, read_splits, tokenize_split
from litdistill.tasks import TaskSpec


@dataclass(frozen=True)
class DataOptions:
    """How a run reads, tokenizes and batches its data (``cfg.data``).

    Attributes:
        glue_dir: Folder in the standard GLUE layout (``<glue_dir>/<TASK>/{train,dev}.tsv``);
            defaults to ``$GLUE_DIR`` in the config. When unset, the Hub copy is used.
        max_length: Truncation length in tokens.
        batch_size: Training batch size per device.
        eval_batch_size: Evaluation batch size per device.
        max_train_samples: Keep a seeded random subset of this many training rows.
        max_eval_samples: Same for each eval split.
        group_by_length: Batch similar lengths together (less padding, same epoch contents).
        num_workers: DataLoader worker processes.
        pin_memory: Pin host memory (for GPU training).
        seed: Seed of shuffling (and of subsampling unless ``subset_seed`` is set).
        subset_seed: Seed of the ``max_train_samples``/``max_eval_samples`` subsets and of
            the transfer-row cap (None: ``seed``). A study fixes it so that the teacher and
            every student seed share one labelled subset.
        cache_dir: Where tokenized splits are cached (None: no cache).
        separate_tokenizers: Allow a teacher whose vocabulary differs from the student's:
            each example is tokenized twice (logit-level KD only).
        padding: ``longest`` (dynamic: each batch to its longest row) or ``max_length``
            (every batch to ``max_length``, as TinyBERT's and HF run_glue's scripts do; only
            for comparisons, see benchmarks/padding.py).

    Raises:
        ConfigError: An unknown ``padding``.
    """

    glue_dir: str | None = None
    max_length: int = 128
    batch_size: int = 32
    eval_batch_size: int = 64
    max_train_samples: int | None = None
    max_eval_samples: int | None = None
    group_by_length: bool = True
    num_workers: int = 0
    pin_memory: bool = False
    seed: int = 42
    subset_seed: int | None = None
    cache_dir: str | None = None
    separate_tokenizers: bool = False
    padding: str = "longest"

    def __post_init__(self) -> None:
        if self.padding not in ("longest", "max_length"):
            raise ConfigError(f"data.padding={self.padding!r}: use longest or max_length")
        if self.subset_seed is None:
            object.__setattr__(self, "subset_seed", self.seed)

    def read(self, task: TaskSpec, data_files: Mapping[str, str] | None = None) -> Splits:
        """The task's validated raw splits, cut to these options' seeded subsets."""
        return read_splits(task, glue_dir=self.glue_dir, data_files=data_files,
                           max_train_samples=self.max_train_samples,
                           max_eval_samples=self.max_eval_samples, subset_seed=self.subset_seed)

    def tokenize(self, splits: Splits, tokenizer: PreTrainedTokenizerBase,
                 teacher_tokenizer: PreTrainedTokenizerBase | None = None
                 ) -> dict[str, TokenizedSplit]:
        """Every split tokenized (through the cache under ``cache_dir``)."""
        return {s: tokenize_split(splits, s, tokenizer, max_length=self.max_length,
                                  teacher_tokenizer=teacher_tokenizer,
                                  cache_dir=self.cache_dir or None)
                for s in splits.raw}


class GlueDataModule(L.LightningDataModule):
    """Batches of a task's finished splits, dynamically padded; assembled once.

    Args:
        task: The resolved task.
        splits: ``{split: tokenized Dataset}`` (:func:`litdistill.reader.tokenize_split`):
            ``train``, the task's eval splits, and ``transfer`` when the run has unlabelled
            rows.
        tokenizer: The student's tokenizer (pads the batches).
        options: Batch sizes, length grouping, workers, seed, padding.
        teacher_tokenizer: The teacher's, only when its vocabulary differs: batches then also
            carry ``teacher_input_ids`` etc.
        teacher_logits: ``{split: [rows, num_labels]}`` precomputed teacher logits in the
            split's row order: batches then carry ``teacher_logits`` (float32).
    """

    def __init__(self, task: TaskSpec, splits: Mapping[str, datasets.Dataset],
                 tokenizer: PreTrainedTokenizerBase, options: DataOptions,
                 teacher_tokenizer: PreTrainedTokenizerBase | None = None,
                 teacher_logits: Mapping[str, np.ndarray] | None = None) -> None:
        super().__init__()
        self.task, self.options = task, options
        self.tokenizer, self.teacher_tokenizer = tokenizer, teacher_tokenizer
        self.batch_size, self.eval_batch_size = options.batch_size, options.eval_batch_size
        self.has_transfer = "transfer" in splits
        logits = dict(teacher_logits or {})
        self.splits = {s: self._finished(s, ds, logits.get(s)) for s, ds in splits.items()}
        self.train_position = LoaderPosition()  # checkpointed: a resumed run skips what was done

    def _finished(self, split: str, ds: datasets.Dataset,
                  logits: np.ndarray | None) -> datasets.Dataset:
        if logits is not None:
            ds = ds.add_column(TEACHER_LOGITS, list(logits))
        if self.has_transfer and split in ("train", "transfer"):
            # Which rows have a label: the task term averages over those only.
            ds = ds.add_column(LABELLED, [int(split == "train")] * len(ds))
        if split in self.task.eval_splits:
            # Eval batches of similar lengths pad less; metrics ignore order and the idx
            # column keeps each row's identity.
            ds = ds.select(sorted(range(len(ds)), key=ds["length"].__getitem__))
        return ds

    def _collate(self) -> LogitsCollator:
        # Dynamic padding: each batch is padded to its own longest sequence only.
        pad = {"padding": self.options.padding, "max_length": self.options.max_length}
        if self.teacher_tokenizer is not None:
            return LogitsCollator(DualCollator(self.tokenizer, self.teacher_tokenizer, **pad))
        return LogitsCollator(DataCollatorWithPadding(self.tokenizer, return_tensors="pt", **pad))

    def _sampler(self, ds: datasets.Dataset, lengths: list[int],
                 train: bool) -> Sampler[int] | None:
        if train:

            def order(generator: torch.Generator) -> Sampler[int]:
                if self.options.group_by_length:
                    # Shuffled mega-batches sorted by length: similar lengths, random order.
                    return LengthGroupedSampler(self.batch_size, lengths=lengths,
                                                generator=generator)
                return RandomSampler(ds, generator=generator)

            return EpochSeededSampler(order, self.options.seed, len(ds))
        if dist.is_available() and dist.is_initialized():
            # Lightning's default DistributedSampler pads an eval set that does not split
            # evenly across ranks with repeated rows, which then count twice in the metrics;
            # this one gives ranks unequal shares instead, so every dev row counts once.
            return UnrepeatedDistributedSampler(ds, shuffle=False)
        return None

    def _loader(self, split: str, batch_size: int, train: bool) -> DataLoader:
        ds = self.splits[split]
        if train and self.has_transfer:
            # One epoch = one pass over labelled + transfer rows, shuffled together.
            ds = datasets.concatenate_datasets([ds, self.splits["transfer"]])
        lengths = list(ds["length"]) if train else []
        ds = ds.remove_columns(["length"])
        # A loader of its own generator: otherwise each new iterator draws its workers' base
        # seed from the global torch RNG, which dropout uses, and a resumed run (which creates
        # its iterators at other moments) would get other dropout masks.
        kwargs = {"position": self.train_position} if train else {}
        workers = self.options.num_workers
        return (ResumableLoader if train else DataLoader)(
            ds, batch_size=batch_size, sampler=self._sampler(ds, lengths, train),
            collate_fn=self._collate(), num_workers=workers,
            pin_memory=self.options.pin_memory, persistent_workers=workers > 0,
            generator=torch.Generator().manual_seed(self.options.seed), **kwargs,
        )

    def state_dict(self) -> dict[str, int]:
        """Saved in checkpoints: training batches done in the current epoch."""
        return {"train_batches": self.train_position.done}

    def load_state_dict(self, state: dict[str, int]) -> None:
        """Lightning restores this before it creates the training loader (a whole epoch done:
        the loader ignores it)."""
        self.train_position.skip = int(state["train_batches"])

    def train_dataloader(self) -> DataLoader:
        """Shuffled (optionally length-grouped) training batches."""
        return self._loader("train", self.batch_size, train=True)

    def val_dataloader(self) -> DataLoader | list[DataLoader]:
        """One loader per eval split (MNLI: matched, mismatched)."""
        loaders = [self._loader(s, self.eval_batch_size, False) for s in self.task.eval_splits]
        return loaders[0] if len(loaders) == 1 else loaders



def build_datamodule(options: DataOptions, splits: Splits, tokenizer: PreTrainedTokenizerBase,
                     teacher_tokenizer: PreTrainedTokenizerBase | None = None) -> GlueDataModule:
    """The DataModule of read splits without teacher logits (tokenized through the cache)."""
    tokenized = options.tokenize(splits, tokenizer, teacher_tokenizer)
    return GlueDataModule(splits.task, {s: t.data for s, t in tokenized.items()}, tokenizer,
                          options, teacher_tokenizer)
