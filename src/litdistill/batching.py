"""Batching pieces: epoch-seeded shuffling, a resumable training loader, two-tokenizer
padding."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch.utils.data import DataLoader, Sampler
from transformers import DataCollatorWithPadding, PreTrainedTokenizerBase

TEACHER_PREFIX = "teacher_"
TEACHER_LOGITS = "teacher_logits"  # precomputed (cached) teacher logits, [batch, num_labels]
LABELLED = "labelled"  # 1 for a labelled row, 0 for a transfer row (only with a transfer set)


class EpochSeededSampler(Sampler[int]):
    """A shuffled order that depends only on (seed, epoch).

    Lightning calls ``set_epoch`` every epoch (through its DistributedSamplerWrapper under
    DDP too), so a run resumed from a checkpoint replays exactly the orders the uninterrupted
    run would have seen, instead of restarting a generator seeded once at construction.

    Args:
        order: Builds the epoch's sampler from a seeded generator.
        seed: Base seed.
        length: Number of indices per epoch.
    """

    def __init__(self, order: Callable[[torch.Generator], Sampler[int]], seed: int,
                 length: int) -> None:
        self.order, self.seed, self.length, self.epoch = order, seed, length, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[int]:
        return iter(self.order(torch.Generator().manual_seed(self.seed + self.epoch)))

    def __len__(self) -> int:
        return self.length


@dataclass
class LoaderPosition:
    """Where the training loader is within its epoch, shared by every copy of the loader
    (Lightning re-creates it with the same arguments, e.g. to add DDP's sampler).

    Attributes:
        done: Batches handed out in the current pass.
        skip: Batches to pass over at the start of the next pass (set when resuming).
    """

    done: int = 0
    skip: int = 0


class ResumableLoader(DataLoader):
    """A DataLoader that knows how far into its epoch it is, so a checkpoint taken mid-epoch
    resumes at the next batch instead of replaying the epoch from its start.

    The position lives in a :class:`LoaderPosition` that the DataModule owns and checkpoints
    (Lightning 2.6 saves a loader's own ``state_dict`` but does not load it back when
    ``configure_optimizers`` asked for ``estimated_stepping_batches``, as ours does:
    Lightning issue #20550); ``state_dict`` here only tells Lightning the loader resumes.
    Skipping happens after batching, so it is right whatever sampler Lightning wraps around
    ours (DDP shards the full epoch order); skipped batches are collated and dropped (a few ms
    each, no forward pass). ``__iter__`` is a generator: nothing, not even worker start-up,
    reads the sampler or the position before the first batch is asked for.

    Args:
        *args: DataLoader arguments.
        position: The shared position.
        **kwargs: DataLoader arguments.
    """

    def __init__(self, *args: Any, position: LoaderPosition, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.position = position

    def __iter__(self) -> Iterator[Any]:
        pos = self.position
        skip = pos.skip if pos.skip < len(self) else 0  # a whole pass done: the next epoch
        pos.skip, pos.done = 0, 0
        for index, batch in enumerate(super().__iter__()):
            # Lightning fetches without prefetching (the loader has a length), so the batches
            # handed out are the batches trained on when a checkpoint is written.
            pos.done = index + 1
            if index >= skip:
                yield batch

    def state_dict(self) -> dict[str, int]:
        """The position within the current pass (batches already handed out)."""
        return {"batches": self.position.done}

    def load_state_dict(self, state: dict[str, int]) -> None:
        """Resume the next pass after ``state["batches"]`` batches."""
        self.position.skip = int(state["batches"])


class DualCollator:
    """Pads the student's and the teacher's tokenizations of a batch, each with its own pad id.

    Args:
        tokenizer: The student's tokenizer.
        teacher_tokenizer: The teacher's tokenizer.
        **padding: ``padding``/``max_length`` of both collators.
    """

    def __init__(self, tokenizer: PreTrainedTokenizerBase,
                 teacher_tokenizer: PreTrainedTokenizerBase, **padding: Any) -> None:
        self.student = DataCollatorWithPadding(tokenizer, return_tensors="pt", **padding)
        self.teacher = DataCollatorWithPadding(teacher_tokenizer, return_tensors="pt",
                                               **padding)

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        n = len(TEACHER_PREFIX)
        student = [{k: v for k, v in f.items() if not k.startswith(TEACHER_PREFIX)}
                   for f in features]
        teacher = [{k[n:]: v for k, v in f.items() if k.startswith(TEACHER_PREFIX)}
                   for f in features]
        batch = dict(self.student(student))
        batch.update({f"{TEACHER_PREFIX}{k}": v for k, v in self.teacher(teacher).items()})
        return batch




class LogitsCollator:
    """Stacks precomputed ``teacher_logits`` rows (fp16 on disk) into a float32 tensor and
    lets ``base`` pad the rest.

    Args:
        base: The collator of the token fields.
    """

    def __init__(self, base: Callable[[list[dict[str, Any]]], dict[str, torch.Tensor]]) -> None:
        self.base = base

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        if TEACHER_LOGITS not in features[0]:
            return dict(self.base(features))
        logits = torch.tensor([f[TEACHER_LOGITS] for f in features], dtype=torch.float32)
        batch = dict(self.base([{k: v for k, v in f.items() if k != TEACHER_LOGITS}
                                for f in features]))
        batch[TEACHER_LOGITS] = logits
        return batch
