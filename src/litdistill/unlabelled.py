"""A run's unlabelled rows: the transfer set and the augmented copies, as one ``transfer`` split.

:func:`check` and :func:`transfer_rows` run with the other validation, before any weights
load (bad options, missing files and fields, a transfer set without a teacher term);
:func:`attach` runs once the tokenizers are known: it augments (or reads the augmentation
cache), hands the rows to the DataModule and returns ``results.json``'s ``transfer`` entry.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import datasets
import torch

from litdistill import augment as aug_lib
from litdistill.augment import Augment, TinyBertAugment
from litdistill.candidates import embedding_neighbours, mlm_candidates, whole_word_mask
from litdistill.data import GlueDataModule, cached_dataset, tokenizer_fingerprint
from litdistill.errors import ConfigError
from litdistill.models import load_tokenizer, resolve_path
from litdistill.objective import Objective
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


def transfer_rows(dm: GlueDataModule, transfer: TransferSet
                  ) -> tuple[datasets.Dataset | None, str | None]:
    """The transfer rows (text fields only, capped) and a description of their source.

    Raises:
        ConfigError: ``train_rest`` without a labelled subset; unreadable files.
    """
    if not transfer.enabled:
        return None, None
    seed = dm.subset_seed
    if transfer.source == "train_rest":
        rows = dm.train_rest()
        source: dict[str, Any] = {"train": dm.split_source("train"),
                                  "subset": [dm.max_train_samples, seed]}
    else:
        rows, ids = read_files(dm.task, transfer.files)
        source = {"files": ids}
    source |= {"kind": transfer.source, "max_rows": transfer.max_rows, "seed": seed}
    return cap(rows, transfer.max_rows, seed), json.dumps(source, sort_keys=True)


def attach(dm: GlueDataModule, transfer: TransferSet, augment: Augment,
           rows: datasets.Dataset | None, source: str | None, builder: TeacherBuilder,
           cache_root: Path) -> dict[str, Any] | None:
    """Augment, attach the ``transfer`` split to ``dm``, return results.json's entry."""
    if rows is None and not augment.enabled:
        return None
    fields = dm.task.text_fields
    parts, ids = ([rows], [source]) if rows is not None else ([], [])
    augmented = None
    if augment.enabled:
        inputs = dm.raw["train"].select_columns(list(fields))
        inputs_id = json.dumps({"labelled": dm.split_source("train"),
                                "subset": [dm.max_train_samples, dm.subset_seed]})
        if augment.from_transfer and rows is not None:
            inputs = datasets.concatenate_datasets([inputs, rows])
            inputs_id += f"+{source}"
        augmented = augmented_rows(augment, inputs, inputs_id, dm, builder, cache_root)
        parts.append(augmented.select_columns(list(fields)))
        ids.append(f"augment:{augment.method}:{_key(augment, inputs_id, dm, builder)}")
    combined = datasets.concatenate_datasets(parts) if len(parts) > 1 else parts[0]
    dm.set_transfer(combined, json.dumps(ids))
    log.info("transfer split: %d rows (%d transfer, %d augmented) next to %d labelled",
             len(combined), len(rows or []), len(augmented or []), len(dm.raw["train"]))
    return {"source": transfer.describe(), "augment": augment.params() if augment.enabled
            else None, "labelled_rows": len(dm.raw["train"]), "transfer_rows": len(rows or []),
            "augmented_rows": len(augmented or [])}


def _teacher_tokenizer(dm: GlueDataModule) -> Any:
    # Candidates are pieces of the teacher's vocabulary (its embedding matrix's rows).
    return dm.teacher_tokenizer or dm.tokenizer


def _key(augment: Augment, inputs_id: str, dm: GlueDataModule, builder: TeacherBuilder) -> str:
    mlm = getattr(augment, "mlm", None)
    if not isinstance(augment, TinyBertAugment):
        model_id = None
    elif mlm:
        model_id = weights_fingerprint(resolve_path(str(mlm)))
    else:
        model_id = builder.fingerprint()
    return aug_lib.cache_key(augment, inputs_id, dm.task.text_fields,
                             tokenizer_fingerprint(_teacher_tokenizer(dm)), model_id)


def augmented_rows(augment: Augment, inputs: datasets.Dataset, inputs_id: str,
                   dm: GlueDataModule, builder: TeacherBuilder,
                   cache_root: Path) -> datasets.Dataset:
    """The augmented rows of ``inputs``, from the cache or generated (and stored)."""
    key = _key(augment, inputs_id, dm, builder)
    tokenizer, fields = _teacher_tokenizer(dm), dm.task.text_fields

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
