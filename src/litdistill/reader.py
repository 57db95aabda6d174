"""Task text without Lightning: read and validate splits, take seeded subsets, tokenize through
a content-keyed disk cache, batch for evaluation, and compute a model's logits over a split.

Training (:mod:`litdistill.train`), the teacher pass (:mod:`litdistill.teachers`), the
unlabelled rows (:mod:`litdistill.unlabelled`) and the export all read text here; the
:class:`~litdistill.data.GlueDataModule` only batches the finished splits. Nothing here
imports Lightning.

API:

- ``read_splits(task, *, glue_dir=None, data_files=None, max_train_samples=None,
  max_eval_samples=None, subset_seed=42) -> Splits``: the training split and the task's eval
  splits from task files (csv/tsv/json/jsonl/parquet), a GLUE folder, a zoo dataset or the Hub,
  every label checked; cheap (no tokenizer, no model). :class:`Splits` holds the task (a
  custom task's classes inferred from its training file), the raw splits (text fields,
  ``label``, ``idx``), what each was read from, and the subsets drawn.
- ``seeded_rows(total, limit, seed) -> list[int]``: the one seeded subset (and cap) of rows.
- ``tokenize_split(splits, split, tokenizer, *, max_length, teacher_tokenizer=None,
  cache_dir=None) -> TokenizedSplit``: the tokenized split (``input_ids``... ``length``,
  ``label``, ``idx``; ``teacher_*`` columns with a separate teacher tokenizer) and its cache
  key, which also keys the split's teacher logits.
- ``eval_batches(data, tokenizer, batch_size, *, prefix="", longest_first=True,
  return_tensors="pt") -> Iterator[(rows, inputs)]``: padded batches of a tokenized split,
  sorted by length, each with the row positions it holds.
- ``split_logits(model, batches, rows=None, device="cpu") -> np.ndarray``: ``[rows,
  num_labels]`` float32 logits in row order (eval mode, ``inference_mode``).
- ``cached_dataset(path, build)``: a dataset saved atomically under a content key.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import random
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import datasets
import numpy as np
import torch
from torch import nn
from transformers import PreTrainedTokenizerBase

from litdistill import atomic
from litdistill.batching import TEACHER_PREFIX
from litdistill.errors import ConfigError
from litdistill.network import offline
from litdistill.readers import check_rows, parse_float, parse_label, read_glue_tsv
from litdistill.tasks import TaskSpec, with_labels_from

# Bump when the tokenized layout changes so old cache entries are never read.
CACHE_FORMAT = 1
FILE_FORMATS = {".csv": "csv", ".tsv": "csv", ".json": "json", ".jsonl": "json",
                ".parquet": "parquet"}
_MODEL_INPUTS = ("input_ids", "attention_mask", "token_type_ids")
Batch = tuple[list[int], dict[str, Any]]  # (row positions, padded inputs)


@dataclass(frozen=True)
class Splits:
    """A task's validated raw splits.

    Attributes:
        task: The task (a custom task's classes may come from its training file).
        raw: ``{split: Dataset}`` of the text fields, ``label`` and ``idx``.
        sources: What each split was read from (``path#sha256=...``, a Hub fingerprint,
            the transfer rows' sources): part of its cache key.
        subsets: ``[limit, seed]`` of each split cut to a seeded subset, else None.
        rest: The training rows the labelled subset left out (None: all were kept).
    """

    task: TaskSpec
    raw: Mapping[str, datasets.Dataset]
    sources: Mapping[str, str]
    subsets: Mapping[str, list[int] | None]
    rest: datasets.Dataset | None = None

    def train_rest(self, max_train_samples: int | None) -> datasets.Dataset:
        """The text of the training rows outside the labelled subset (labels dropped).

        Raises:
            ConfigError: The training split was not subsampled, so no rows are left.
        """
        if self.rest is None or len(self.rest) == 0:
            raise ConfigError(
                f"transfer=train_rest takes the training rows outside the labelled subset, but "
                f"data.max_train_samples={max_train_samples} keeps all "
                f"{len(self.raw['train'])} rows of {self.task.name}; set it below that")
        return self.rest.select_columns(list(self.task.text_fields))

    def with_transfer(self, rows: datasets.Dataset, source_id: str) -> Splits:
        """These splits plus unlabelled ``rows`` (text fields only) as the ``transfer`` split.

        Args:
            rows: The rows' text fields.
            source_id: Everything the rows depend on (files' sha256, subset, cap,
                augmentation key): part of the split's cache key, and so of its teacher
                logits' key.
        """
        placeholder = 0.0 if self.task.is_regression else 0  # never read: rows are unlabelled
        rows = rows.select_columns(list(self.task.text_fields)).add_column(
            "label", [placeholder] * len(rows)).add_column("idx", list(range(len(rows))))
        return dataclasses.replace(self, raw={**self.raw, "transfer": rows},
                                   sources={**self.sources, "transfer": source_id},
                                   subsets={**self.subsets, "transfer": None})


@dataclass(frozen=True)
class TokenizedSplit:
    """A tokenized split in its stored row order (the order teacher logits follow), and the
    hash of everything its tokens depend on (which also keys its teacher logits)."""

    key: str
    data: datasets.Dataset


def seeded_rows(total: int, limit: int | None, seed: int) -> list[int]:
    """Positions of a seeded random subset of at most ``limit`` of ``total`` rows, in order:
    every subset and cap of the project (random, not the first rows: several GLUE files are
    ordered by source)."""
    if limit is None or limit >= total:
        return list(range(total))
    return sorted(random.Random(seed).sample(range(total), int(limit)))


def read_splits(task: TaskSpec, *, glue_dir: str | Path | None = None,
                data_files: Mapping[str, str] | None = None,
                max_train_samples: int | None = None, max_eval_samples: int | None = None,
                subset_seed: int = 42) -> Splits:
    """Read and validate the training split and the task's eval splits.

    Args:
        task: The resolved task.
        glue_dir: A folder in the GLUE layout (``<glue_dir>/<TASK>/{train,dev}.tsv``).
        data_files: ``{"train": path, "validation": path}`` of csv/tsv/json/jsonl/parquet
            files (a custom task); a zoo dataset fills it. Neither: the Hub copy.
        max_train_samples: Keep a seeded random subset of this many training rows.
        max_eval_samples: Same for each eval split.
        subset_seed: Seed of those subsets.

    Raises:
        ConfigError: Missing files, bad labels, or an empty split.
    """
    files = dict(data_files or {})
    if task.zoo and not files:
        from litdistill import zoo

        folder = zoo.resolve(task.zoo)
        files = {s: str(folder / f) for s, f in task.split_files.items()}
    if files:
        task, raw, sources = _read_files(task, files)
    elif glue_dir:
        raw, sources = _read_glue_dir(task, Path(glue_dir).expanduser())
    else:
        raw, sources = _read_hub(task)
    for split, ds in raw.items():
        if len(ds) == 0:
            raise ConfigError(f"split {split!r} of task {task.name!r} is empty "
                              f"({sources[split]}); point the task at real data")
    subsets, rest = {}, None
    for split, ds in raw.items():
        limit = max_train_samples if split == "train" else max_eval_samples
        keep = seeded_rows(len(ds), limit, subset_seed)
        subsets[split] = [limit, subset_seed] if len(keep) < len(ds) else None
        if subsets[split] is not None:
            if split == "train":
                chosen = set(keep)
                rest = ds.select([i for i in range(len(ds)) if i not in chosen])
            raw[split] = ds.select(keep)
    return Splits(task, raw, sources, subsets, rest)


def _read_glue_dir(task: TaskSpec, glue_dir: Path) -> tuple[dict, dict]:
    if task.glue_dir_name is None:
        raise ConfigError(f"task {task.name!r} is not a GLUE task; give it data files")
    folder = glue_dir / task.glue_dir_name
    paths = {s: folder / task.split_files[s] for s in ["train", *task.eval_splits]}
    if missing := [str(p) for p in paths.values() if not p.is_file()]:
        raise ConfigError(
            f"missing data file(s) for {task.name}: {', '.join(missing)}; set GLUE_DIR "
            f"(or data.glue_dir) to a folder in the GLUE layout <dir>/{task.glue_dir_name}/"
            "train.tsv, e.g. GLUE_DIR=../shared/data/glue"
        )
    raw = {s: datasets.Dataset.from_dict(read_glue_tsv(p, task)) for s, p in paths.items()}
    return raw, {s: f"{p}#sha256={atomic.sha256_file(p)}" for s, p in paths.items()}


def _read_files(task: TaskSpec, files: Mapping[str, str]) -> tuple[TaskSpec, dict, dict]:
    wanted = {"train": "train", **{s: s for s in task.eval_splits}}
    if "validation" in files and len(task.eval_splits) == 1:
        wanted[task.eval_splits[0]] = "validation"
    raw, sources = {}, {}
    for split, key in wanted.items():
        path = Path(str(files.get(key, ""))).expanduser()
        if not path.is_file():
            raise ConfigError(
                f"missing data file for split {key!r} of task {task.name!r}: {str(path)!r}; "
                f"set task.data_files.{key} to an existing csv/tsv/json/jsonl/parquet file"
            )
        fmt = FILE_FORMATS.get(path.suffix.lower())
        if fmt is None:
            raise ConfigError(f"{path}: unsupported file type; use one of {FILE_FORMATS}")
        check_rows(path, fmt)
        kwargs = {"delimiter": "\t"} if path.suffix.lower() == ".tsv" else {}
        ds = datasets.load_dataset(fmt, data_files=str(path), split="train", **kwargs)
        need = [*task.text_fields, task.label_field]
        if missing := [c for c in need if c not in ds.column_names]:
            raise ConfigError(f"{path}: missing column(s) {missing}; it has {ds.column_names}"
                              "; set task.text_fields / task.label_field")
        if split == "train" and task.infer_labels:
            # The classes are whatever the training file says (results.json and the
            # exported model's id2label record them); dev labels must be among them.
            task = with_labels_from(task, ds[task.label_field], str(path))
        raw[split] = validated(ds, task, str(path))
        sources[split] = f"{path}#sha256={atomic.sha256_file(path)}"
    return task, raw, sources


def _read_hub(task: TaskSpec) -> tuple[dict, dict]:
    if task.hub is None:
        raise ConfigError(f"task {task.name!r} has no Hub copy; give it local data files")
    if offline():
        raise ConfigError(
            f"no local data for {task.name} and the Hub is offline: set GLUE_DIR (or "
            "data.glue_dir) to a folder in the GLUE layout, e.g. GLUE_DIR=../shared/data/glue"
        )
    raw, sources = {}, {}
    for split in ["train", *task.eval_splits]:
        ds = datasets.load_dataset(*task.hub, split=split)
        raw[split] = validated(ds, task, f"hub:{'/'.join(task.hub)}[{split}]")
        sources[split] = f"hub:{'/'.join(task.hub)}@{ds._fingerprint}"
    return raw, sources


def validated(ds: datasets.Dataset, task: TaskSpec, where: str) -> datasets.Dataset:
    """Map labels to ids/floats, check their range, keep text + label + idx columns."""
    values = ds[task.label_field]
    rows = list(range(len(ds)))
    if task.binarize_at is not None:
        real = [parse_float(values[i], f"{where}: row {i + 1}") for i in rows]
        rows = [i for i in rows if real[i] != task.binarize_at]
        labels = [int(real[i] > task.binarize_at) for i in rows]
    else:
        labels = [parse_label(values[i], task, f"{where}: row {i + 1}") for i in rows]
    columns = {}
    for f in task.text_fields:
        column = ds[f]  # materialise once: indexing ds[f] per row would copy it each time
        columns[f] = ["" if column[i] is None else str(column[i]) for i in rows]
    return datasets.Dataset.from_dict(columns | {"label": labels, "idx": rows})


def tokenizer_fingerprint(tokenizer: PreTrainedTokenizerBase) -> str:
    """A hash that changes whenever the tokenizer would produce different ids."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        state = json.loads(backend.to_str())
        # Calling the tokenizer stores its last truncation/padding settings in this state;
        # they are per-call arguments (covered by max_length), not part of the vocabulary.
        state.pop("truncation", None)
        state.pop("padding", None)
        text = json.dumps(state, sort_keys=True)
    else:
        text = json.dumps(tokenizer.get_vocab(), sort_keys=True)
    payload = f"{type(tokenizer).__name__}|{text}|{tokenizer.padding_side}"
    return hashlib.sha256(payload.encode()).hexdigest()


def split_key(splits: Splits, split: str, tokenizer: PreTrainedTokenizerBase, max_length: int,
              teacher_tokenizer: PreTrainedTokenizerBase | None = None) -> str:
    """Hash of everything a tokenized split depends on (also keys its teacher logits)."""
    task = splits.task
    parts = {
        "format": CACHE_FORMAT, "task": task.name, "split": split, "fields": task.text_fields,
        "source": splits.sources[split], "tokenizer": tokenizer_fingerprint(tokenizer),
        "max_length": max_length,
        "teacher_tokenizer": tokenizer_fingerprint(teacher_tokenizer)
        if teacher_tokenizer is not None else None,
        # The seed matters only when a subset is drawn: the seeds of a sweep over a full
        # split share one tokenized split and one set of teacher logits.
        "subsample": splits.subsets.get(split), "labels": task.label_names,
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:24]


def tokenize_split(splits: Splits, split: str, tokenizer: PreTrainedTokenizerBase, *,
                   max_length: int, teacher_tokenizer: PreTrainedTokenizerBase | None = None,
                   cache_dir: str | Path | None = None) -> TokenizedSplit:
    """Tokenize one split (truncated to ``max_length``), through the cache when given.

    Args:
        splits: From :func:`read_splits`.
        split: Which split.
        tokenizer: The student's tokenizer.
        max_length: Truncation length in tokens.
        teacher_tokenizer: The teacher's, only when its vocabulary differs: rows then also
            carry ``teacher_input_ids`` etc. (logit-level KD only).
        cache_dir: Where tokenized splits are cached (None: no cache).
    """
    key = split_key(splits, split, tokenizer, max_length, teacher_tokenizer)
    fields, task = splits.task.text_fields, splits.task

    def encode(batch: dict[str, list]) -> dict[str, list]:
        texts = [batch[f] for f in fields]
        enc = dict(tokenizer(*texts, truncation=True, max_length=max_length))
        enc["length"] = [len(ids) for ids in enc["input_ids"]]
        if teacher_tokenizer is not None:
            # Separate vocabularies: the teacher reads its own tokenization of the text.
            t_enc = teacher_tokenizer(*texts, truncation=True, max_length=max_length)
            enc.update({f"{TEACHER_PREFIX}{k}": v for k, v in t_enc.items()})
        return enc

    def build() -> datasets.Dataset:
        return splits.raw[split].map(encode, batched=True, batch_size=1000,
                                     remove_columns=list(fields),
                                     desc=f"tokenize {task.name}/{split}")

    if cache_dir is None:
        return TokenizedSplit(key, build())
    return TokenizedSplit(key, cached_dataset(Path(cache_dir).expanduser() / key, build))


def cached_dataset(path: Path, build: Callable[[], datasets.Dataset]) -> datasets.Dataset:
    """The dataset saved at ``path``, else ``build()`` saved there atomically (a concurrent
    writer of the same key, e.g. another DDP rank, may win: its copy is as good) and
    memory-mapped."""
    if not (path / "dataset_info.json").is_file():
        ds = build()
        try:
            atomic.write_dir(path, lambda tmp: ds.save_to_disk(str(tmp)), replace=False)
        except OSError:  # the other writer renamed its copy in between
            if not (path / "dataset_info.json").is_file():
                raise
    return datasets.load_from_disk(str(path))



def eval_batches(data: datasets.Dataset, tokenizer: PreTrainedTokenizerBase, batch_size: int,
                 *, prefix: str = "", longest_first: bool = True,
                 return_tensors: str = "pt") -> Iterator[Batch]:
    """``(row positions, padded inputs)`` over a tokenized split, sorted by length (each
    batch pads little; the positions put results back in row order).

    Args:
        data: A tokenized split.
        tokenizer: Pads the batches (its pad id and side).
        batch_size: Rows per batch.
        prefix: ``teacher_``: the teacher's own tokenization (separate vocabularies).
        longest_first: Longest rows first (a memory error shows at once), else shortest.
        return_tensors: ``pt`` (torch tensors) or ``np`` (int64 arrays, e.g. for ONNX).
    """
    # Materialized once: indexing a datasets column row by row reads Arrow each time.
    columns = {name: list(data[prefix + name]) for name in _MODEL_INPUTS
               if prefix + name in data.column_names}
    lengths = [len(ids) for ids in columns["input_ids"]]
    order = sorted(range(len(data)), key=lambda i: -lengths[i] if longest_first else lengths[i])
    for start in range(0, len(order), batch_size):
        rows = order[start:start + batch_size]
        features = [{k: v[i] for k, v in columns.items()} for i in rows]
        padded = dict(tokenizer.pad(features, return_tensors=return_tensors))
        if return_tensors == "np":
            padded = {k: np.asarray(v, dtype=np.int64) for k, v in padded.items()}
        yield rows, padded


def split_logits(model: nn.Module, batches: Iterable[Batch | Mapping[str, Any]],
                 rows: int | None = None, device: torch.device | str = "cpu") -> np.ndarray:
    """A model's logits for every row of a split, in row order.

    Args:
        model: A sequence classifier (put in eval mode and on ``device`` here).
        batches: ``(row positions, inputs)`` covering every row once (:func:`eval_batches`),
            or bare inputs (rows in batch order); inputs are tensors or arrays.
        rows: Rows in the split (None: as many as the batches hold).
        device: Where to run it.

    Returns:
        ``[rows, num_labels]`` float32 logits.

    Raises:
        ValueError: No batches.
    """
    model.eval().to(device)  # moved outside inference mode: the weights stay normal tensors
    positions, parts = [], []
    with torch.inference_mode():
        for item in batches:
            at, inputs = (None, item) if isinstance(item, Mapping) else item
            tensors = {k: torch.as_tensor(v).to(device) for k, v in inputs.items()}
            parts.append(model(**tensors).logits.float().cpu().numpy())
            positions.extend(range(len(positions), len(positions) + len(parts[-1]))
                             if at is None else at)
    if not parts:
        raise ValueError("no rows to compute logits on")
    out = np.zeros((len(positions) if rows is None else rows, parts[0].shape[-1]), np.float32)
    out[positions] = np.concatenate(parts)
    return out

