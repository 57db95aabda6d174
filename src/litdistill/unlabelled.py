"""A run's unlabelled rows: the transfer set and the augmented copies, as one ``transfer`` split.

:func:`check` and :func:`transfer_rows` run with the other validation, before any weights
load (bad options, missing files and fields, a transfer set without a teacher term);
:func:`with_unlabelled` runs once the tokenizers are known: it augments (or reads the
augmentation cache), adds the rows to the splits as ``transfer`` and returns
``results.json``'s ``transfer`` entry.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import datasets
import torch

from litdistill import augment as aug_lib
from litdistill.augment import Augment, TinyBertAugment
from litdistill.candidates import embedding_neighbours, mlm_candidates, whole_word_mask
from litdistill.errors import ConfigError
from litdistill.models import load_tokenizer, resolve_path
from litdistill.objective import Objective
from litdistill.reader import Splits, cached_dataset, tokenizer_fingerprint
from litdistill.teacher_cache import weights_fingerprint
from litdistill.teachers import TeacherBuilder
from litdistill.transfer import TransferSet, cap, read_files

log = logging.getLogger(__name__)


def check(transfer: TransferSet, augment: Augment, objective: Objective,
          student_vocab: Callable[[], dict[str, int]]) -> None:
    """Refuse unlabelled rows that nothing would learn from, and a foreign masked LM.

    Raises:
        ConfigError: A transfer set or augmentation with an objective that has no teacher
            term, or ``augment.mlm`` with another vocabulary than the student's.
    """
    if (transfer.enabled or augment.enabled) and not objective.needs_teacher:
        what = f"transfer={transfer.source}" if transfer.enabled else f"augment={augment.method}"
        raise ConfigError(
            f"{what} adds rows without labels, which a student learns from through the "
            "teacher only, but this objective has no teacher term (distill=none): use "
            "distill=kd (or another KD preset) with a teacher, or drop the transfer rows")
    mlm = getattr(augment, "mlm", None)
    if mlm:
        try:
            theirs = load_tokenizer(resolve_path(str(mlm), need_config=False)).get_vocab()
        except ConfigError as err:  # name the setting: the message alone says only the folder
            raise ConfigError(f"augment.mlm={mlm}: {err}") from err
        if theirs != student_vocab():
            raise ConfigError(
                f"augment.mlm={mlm} has a vocabulary of {len(theirs)} pieces that differs "
                "from the student's; its candidates must be the student's (and teacher's) "
                "word pieces: use a masked LM of the same vocabulary, or augment.mlm=null "
                "(neighbours in the teacher's embeddings)")


def transfer_rows(splits: Splits, transfer: TransferSet, subset: list[int | None]
                  ) -> tuple[datasets.Dataset | None, str | None]:
    """The transfer rows (text fields only, capped) and a description of their source.

    Args:
        splits: The run's raw splits.
        transfer: The transfer set.
        subset: ``[data.max_train_samples, data.subset_seed]`` (the seed also draws the cap).

    Raises:
        ConfigError: ``train_rest`` without a labelled subset; unreadable files.
    """
    if not transfer.enabled:
        return None, None
    seed = subset[1]
    if transfer.source == "train_rest":
        rows = splits.train_rest(subset[0])
        source: dict[str, Any] = {"train": splits.sources["train"], "subset": list(subset)}
    else:
        rows, ids = read_files(splits.task, transfer.files)
        source = {"files": ids}
    source |= {"kind": transfer.source, "max_rows": transfer.max_rows, "seed": seed}
    return cap(rows, transfer.max_rows, seed), json.dumps(source, sort_keys=True)


@dataclass(frozen=True)
class Unlabelled:
    """What :func:`with_unlabelled` needs besides the splits."""

    transfer: TransferSet
    augment: Augment
    rows: datasets.Dataset | None  # from :func:`transfer_rows`
    source: str | None
    subset: list[int | None]  # [data.max_train_samples, data.subset_seed]


def with_unlabelled(splits: Splits, unlabelled: Unlabelled, builder: TeacherBuilder,
                    tokenizer: Any, cache_root: Path) -> tuple[Splits, dict[str, Any] | None]:
    """The splits plus the ``transfer`` split (transfer rows and augmented copies), and
    results.json's ``transfer`` entry (None: the run has no unlabelled rows).

    Args:
        splits: The run's raw splits.
        unlabelled: The transfer set, the augmentation and the transfer rows.
        builder: The teacher (augmentation candidates come from its embeddings).
        tokenizer: The teacher's tokenizer (candidates are pieces of its vocabulary).
        cache_root: The cache folder (augmented rows are stored under ``augment/``).
    """
    rows, source, augment = unlabelled.rows, unlabelled.source, unlabelled.augment
    if rows is None and not augment.enabled:
        return splits, None
    fields, labelled = splits.task.text_fields, len(splits.raw["train"])
    parts, ids = ([rows], [source]) if rows is not None else ([], [])
    augmented = None
    if augment.enabled:
        inputs = splits.raw["train"].select_columns(list(fields))
        inputs_id = json.dumps({"labelled": splits.sources["train"],
                                "subset": list(unlabelled.subset)})
        if augment.from_transfer and rows is not None:
            inputs = datasets.concatenate_datasets([inputs, rows])
            inputs_id += f"+{source}"
        key = _key(augment, inputs_id, fields, tokenizer, builder)
        augmented = augmented_rows(augment, inputs, key, fields, tokenizer, builder, cache_root)
        parts.append(augmented.select_columns(list(fields)))
        ids.append(f"augment:{augment.method}:{key}")
    combined = datasets.concatenate_datasets(parts) if len(parts) > 1 else parts[0]
    log.info("transfer split: %d rows (%d transfer, %d augmented) next to %d labelled",
             len(combined), len(rows or []), len(augmented or []), labelled)
    entry = {"source": unlabelled.transfer.describe(),
             "augment": augment.params() if augment.enabled else None,
             "labelled_rows": labelled, "transfer_rows": len(rows or []),
             "augmented_rows": len(augmented or [])}
    return splits.with_transfer(combined, json.dumps(ids)), entry


def _key(augment: Augment, inputs_id: str, fields: Sequence[str], tokenizer: Any,
         builder: TeacherBuilder) -> str:
    mlm = getattr(augment, "mlm", None)
    if not isinstance(augment, TinyBertAugment):
        model_id = None
    elif mlm:
        model_id = weights_fingerprint(resolve_path(str(mlm)))
    else:
        model_id = builder.fingerprint()
    return aug_lib.cache_key(augment, inputs_id, fields, tokenizer_fingerprint(tokenizer),
                             model_id)


def augmented_rows(augment: Augment, inputs: datasets.Dataset, key: str, fields: Sequence[str],
                   tokenizer: Any, builder: TeacherBuilder, cache_root: Path
                   ) -> datasets.Dataset:
    """The augmented rows of ``inputs``, from the cache (under ``key``) or generated."""

    def generate() -> datasets.Dataset:
        log.info("augment: %s on %d rows (%s), cache key %s", augment.method, len(inputs),
                 augment.params(), key)
        prepared = augment.prepare(inputs, fields, tokenizer)
        if isinstance(augment, TinyBertAugment):
            prepared = aug_lib.attach_candidates(augment, prepared, fields, tokenizer,
                                                 candidate_finder(augment, tokenizer, builder))
        return aug_lib.sample(augment, prepared, fields, tokenizer.mask_token)

    return cached_dataset(cache_root / "augment" / key, generate)


def candidate_finder(augment: TinyBertAugment, tokenizer: Any, builder: TeacherBuilder
                     ) -> Callable[[list[tuple[list[str], int]], list[list[int]]],
                                   list[list[int]]]:
    """Candidates of eligible words: the masked LM's for single-piece words when
    ``augment.mlm`` is set, else (and for multi-piece words) embedding neighbours."""
    allowed = whole_word_mask(tokenizer)
    embeddings = builder.model().get_input_embeddings().weight.detach()
    mlm = None
    if augment.mlm:
        from transformers import AutoModelForMaskedLM

        mlm = AutoModelForMaskedLM.from_pretrained(resolve_path(str(augment.mlm)),
                                                   dtype=torch.float32)

    def find(masked: list[tuple[list[str], int]], pieces: list[list[int]]) -> list[list[int]]:
        found: list[list[int] | None] = [None] * len(masked)
        usable = [i for i, p in enumerate(pieces) if p and tokenizer.unk_token_id not in p]
        if mlm is not None:
            single = [i for i in usable if len(pieces[i]) == 1]
            for i, ids in zip(single, mlm_candidates(mlm, tokenizer, [masked[i] for i in single],
                                                     allowed, augment.top_k,
                                                     augment.batch_size), strict=True):
                found[i] = ids
        rest = [i for i in usable if found[i] is None]
        for i, ids in zip(rest, embedding_neighbours(embeddings, [pieces[i] for i in rest],
                                                     allowed, augment.top_k), strict=True):
            found[i] = ids
        return [ids or [] for ids in found]

    return find
