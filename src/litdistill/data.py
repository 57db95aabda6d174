"""GLUE (and custom) data as a LightningDataModule: read, validate, tokenize once, batch tightly.

Reading is split from tokenizing so that :meth:`GlueDataModule.load_raw` can validate files,
labels and splits before any model weights load. Tokenized splits are cached on disk under a
key that covers every input (file bytes, tokenizer, max length, subsampling), written
atomically, and memory-mapped by every later run and DDP rank.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import shutil
import tempfile
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

import datasets
import lightning as L
import numpy as np
import torch
import torch.distributed as dist
from lightning.pytorch.overrides.distributed import UnrepeatedDistributedSampler
from torch.utils.data import DataLoader, RandomSampler, Sampler
from transformers import DataCollatorWithPadding, PreTrainedTokenizerBase
from transformers.trainer_pt_utils import LengthGroupedSampler

from litdistill.atomic import sha256_file
from litdistill.batching import (
    LABELLED,
    TEACHER_LOGITS,
    TEACHER_PREFIX,
    DualCollator,
    EpochSeededSampler,
    LoaderPosition,
    LogitsCollator,
    ResumableLoader,
)
from litdistill.errors import ConfigError
from litdistill.network import offline
from litdistill.readers import check_rows, parse_float, parse_label, read_glue_tsv
from litdistill.tasks import TaskSpec, with_labels_from

log = logging.getLogger(__name__)

# Bump when the tokenized layout changes so old cache entries are never read.
CACHE_FORMAT = 1
_FILE_FORMATS = {".csv": "csv", ".tsv": "csv", ".json": "json", ".jsonl": "json",
                 ".parquet": "parquet"}


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


def cached_dataset(path: Path, build: Callable[[], datasets.Dataset]) -> datasets.Dataset:
    """The dataset saved at ``path``, else ``build()`` saved there atomically (a temp folder
    renamed into place; a concurrent writer of the same key may win) and memory-mapped."""
    if (path / "dataset_info.json").is_file():
        return datasets.load_from_disk(str(path))
    ds = build()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        ds.save_to_disk(str(tmp))
        os.replace(tmp, path)
    except OSError:
        if not (path / "dataset_info.json").is_file():
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return datasets.load_from_disk(str(path))


class GlueDataModule(L.LightningDataModule):
    """Train and eval splits of one task, tokenized once, dynamically padded.

    Args:
        task: The resolved task.
        glue_dir: Folder in the standard GLUE layout (``<glue_dir>/<TASK>/{train,dev}.tsv``);
            defaults to ``$GLUE_DIR`` in the config. When unset, the Hub copy is used.
        data_files: For ``task=custom``: ``{"train": path, "validation": path}`` of
            csv/tsv/json/jsonl/parquet files.
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
    """

    def __init__(
        self,
        task: TaskSpec,
        glue_dir: str | None = None,
        data_files: Mapping[str, str] | None = None,
        max_length: int = 128,
        batch_size: int = 32,
        eval_batch_size: int = 64,
        max_train_samples: int | None = None,
        max_eval_samples: int | None = None,
        group_by_length: bool = True,
        num_workers: int = 0,
        pin_memory: bool = False,
        seed: int = 42,
        cache_dir: str | None = None,
        separate_tokenizers: bool = False,
        padding: str = "longest",
        subset_seed: int | None = None,
    ) -> None:
        super().__init__()
        if padding not in ("longest", "max_length"):
            raise ConfigError(f"data.padding={padding!r}: use longest or max_length")
        self.padding = padding
        self.separate_tokenizers = separate_tokenizers
        self.task = task
        self.glue_dir = Path(glue_dir).expanduser() if glue_dir else None
        self.data_files = dict(data_files or {})
        self.max_length = max_length
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size
        self.max_train_samples = max_train_samples
        self.max_eval_samples = max_eval_samples
        self.group_by_length = group_by_length
        self.num_workers = num_workers
        self.pin_memory = pin_memory
        self.seed = seed
        self.subset_seed = seed if subset_seed is None else subset_seed
        self.cache_dir = Path(cache_dir).expanduser() if cache_dir else None
        self.tokenizer: PreTrainedTokenizerBase | None = None
        self.teacher_tokenizer: PreTrainedTokenizerBase | None = None
        self.raw: dict[str, datasets.Dataset] = {}
        self._source_ids: dict[str, str] = {}
        self._subsampled: set[str] = set()  # splits cut to a seeded subset
        self._rest: datasets.Dataset | None = None  # training rows left out of the subset
        self.splits: dict[str, datasets.Dataset] = {}
        self.teacher_logits: dict[str, np.ndarray] = {}  # split -> [rows, labels] (row order)
        self.train_position = LoaderPosition()  # checkpointed: a resumed run skips what was done

    @property
    def split_names(self) -> list[str]:
        """The training split, the task's eval splits, and ``transfer`` when there is one."""
        return ["train", *self.task.eval_splits, *(["transfer"] if self.has_transfer else [])]

    @property
    def has_transfer(self) -> bool:
        """Whether unlabelled transfer rows were attached (:meth:`set_transfer`)."""
        return "transfer" in self.raw

    # ----------------------------------------------------------------- reading + validation
    def load_raw(self) -> dict[str, datasets.Dataset]:
        """Read and validate every split (cheap; no tokenizer or model needed).

        Raises:
            ConfigError: Missing files, bad labels, or an empty split.
        """
        if self.raw:
            return self.raw
        if self.task.zoo and not self.data_files:
            from litdistill import zoo

            folder = zoo.resolve(self.task.zoo)
            self.data_files = {s: str(folder / f) for s, f in self.task.split_files.items()}
        if self.data_files:
            self._load_files()
        elif self.glue_dir is not None:
            self._load_glue_dir()
        else:
            self._load_hub()
        for split, ds in self.raw.items():
            if len(ds) == 0:
                raise ConfigError(f"split {split!r} of task {self.task.name!r} is empty "
                                  f"({self._source_ids[split]}); point the task at real data")
        self.raw = {s: self._subsample(s, ds) for s, ds in self.raw.items()}
        return self.raw

    def train_rest(self) -> datasets.Dataset:
        """The text of the training rows ``max_train_samples`` left out (labels dropped).

        Raises:
            ConfigError: The training split was not subsampled, so no rows are left.
        """
        self.load_raw()
        if self._rest is None or len(self._rest) == 0:
            raise ConfigError(
                f"transfer=train_rest takes the training rows outside the labelled subset, but "
                f"data.max_train_samples={self.max_train_samples} keeps all "
                f"{len(self.raw['train'])} rows of {self.task.name}; set it below that")
        return self._rest.select_columns(list(self.task.text_fields))

    def set_transfer(self, rows: datasets.Dataset, source_id: str) -> None:
        """Attach unlabelled transfer rows (text fields only) as the ``transfer`` split.

        Args:
            rows: The rows' text fields.
            source_id: Everything the rows depend on (files' sha256, subset, cap,
                augmentation key): part of the split's cache key, and so of its teacher
                logits' cache key.
        """
        placeholder = 0.0 if self.task.is_regression else 0  # never read: rows are unlabelled
        self.raw["transfer"] = rows.select_columns(list(self.task.text_fields)).add_column(
            "label", [placeholder] * len(rows)).add_column("idx", list(range(len(rows))))
        self._source_ids["transfer"] = source_id

    def _load_glue_dir(self) -> None:
        task = self.task
        if task.glue_dir_name is None:
            raise ConfigError(f"task {task.name!r} is not a GLUE task; give it data files")
        folder = self.glue_dir / task.glue_dir_name
        paths = {s: folder / task.split_files[s] for s in self.split_names}
        if missing := [str(p) for p in paths.values() if not p.is_file()]:
            raise ConfigError(
                f"missing data file(s) for {task.name}: {', '.join(missing)}; set GLUE_DIR "
                f"(or data.glue_dir) to a folder in the GLUE layout <dir>/{task.glue_dir_name}/"
                "train.tsv, e.g. GLUE_DIR=../shared/data/glue"
            )
        for split, path in paths.items():
            self.raw[split] = datasets.Dataset.from_dict(read_glue_tsv(path, task))
            self._source_ids[split] = f"{path}#sha256={sha256_file(path)}"

    def _load_files(self) -> None:
        task = self.task
        wanted = {"train": "train", **{s: s for s in task.eval_splits}}
        if "validation" in self.data_files and len(task.eval_splits) == 1:
            wanted[task.eval_splits[0]] = "validation"
        for split, key in wanted.items():
            path = Path(str(self.data_files.get(key, ""))).expanduser()
            if not path.is_file():
                raise ConfigError(
                    f"missing data file for split {key!r} of task {task.name!r}: {str(path)!r}; "
                    f"set task.data_files.{key} to an existing csv/tsv/json/jsonl/parquet file"
                )
            fmt = _FILE_FORMATS.get(path.suffix.lower())
            if fmt is None:
                raise ConfigError(f"{path}: unsupported file type; use one of {_FILE_FORMATS}")
            check_rows(path, fmt)
            kwargs = {"delimiter": "\t"} if path.suffix.lower() == ".tsv" else {}
            ds = datasets.load_dataset(fmt, data_files=str(path), split="train", **kwargs)
            need = [*task.text_fields, task.label_field]
            if missing := [c for c in need if c not in ds.column_names]:
                raise ConfigError(f"{path}: missing column(s) {missing}; it has {ds.column_names}"
                                  "; set task.text_fields / task.label_field")
            if split == "train" and self.task.infer_labels:
                # The classes are whatever the training file says (results.json and the
                # exported model's id2label record them); dev labels must be among them.
                self.task = with_labels_from(self.task, ds[task.label_field], str(path))
            self.raw[split] = self._validated(ds, str(path))
            self._source_ids[split] = f"{path}#sha256={sha256_file(path)}"

    def _load_hub(self) -> None:
        task = self.task
        if task.hub is None:
            raise ConfigError(f"task {task.name!r} has no Hub copy; give it local data files")
        if offline():
            raise ConfigError(
                f"no local data for {task.name} and the Hub is offline: set GLUE_DIR (or "
                "data.glue_dir) to a folder in the GLUE layout, e.g. GLUE_DIR=../shared/data/glue"
            )
        hub_splits = {"train": "train", **{s: s for s in task.eval_splits}}
        for split, hub_split in hub_splits.items():
            ds = datasets.load_dataset(*task.hub, split=hub_split)
            self.raw[split] = self._validated(ds, f"hub:{'/'.join(task.hub)}[{hub_split}]")
            self._source_ids[split] = f"hub:{'/'.join(task.hub)}@{ds._fingerprint}"

    def _validated(self, ds: datasets.Dataset, where: str) -> datasets.Dataset:
        """Map labels to ids/floats, check their range, keep text + label + idx columns."""
        task = self.task
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

    def _subsample(self, split: str, ds: datasets.Dataset) -> datasets.Dataset:
        limit = self.max_train_samples if split == "train" else self.max_eval_samples
        if limit is None or limit >= len(ds):
            return ds
        self._subsampled.add(split)
        # A seeded random subset, not the first rows: several GLUE files are ordered by source.
        keep = sorted(random.Random(self.subset_seed).sample(range(len(ds)), limit))
        if split == "train":
            chosen = set(keep)
            self._rest = ds.select([i for i in range(len(ds)) if i not in chosen])
        return ds.select(keep)

    # ---------------------------------------------------------------------- tokenizing
    def set_tokenizer(self, tokenizer: PreTrainedTokenizerBase,
                      teacher_tokenizer: PreTrainedTokenizerBase | None = None) -> None:
        """Give the module the student's tokenizer (known only once models are resolved).

        Args:
            tokenizer: The student's tokenizer.
            teacher_tokenizer: The teacher's, only when its vocabulary differs: batches then
                also carry ``teacher_input_ids`` etc. (logit-level KD only).
        """
        self.tokenizer = tokenizer
        self.teacher_tokenizer = teacher_tokenizer

    def cache_key(self, split: str) -> str:
        """Hash of everything the tokenized split depends on (also keys teacher logits)."""
        limit = self.max_train_samples if split == "train" else self.max_eval_samples
        parts = {
            "format": CACHE_FORMAT, "task": self.task.name, "split": split,
            "fields": self.task.text_fields, "source": self._source_ids[split],
            "tokenizer": tokenizer_fingerprint(self.tokenizer), "max_length": self.max_length,
            "teacher_tokenizer": tokenizer_fingerprint(self.teacher_tokenizer)
            if self.teacher_tokenizer is not None else None,
            # The seed matters only when a subset is drawn: the seeds of a sweep over a full
            # split share one tokenized split and one set of teacher logits.
            "subsample": [limit, self.subset_seed] if split in self._subsampled else None,
            "labels": self.task.label_names,
        }
        return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:24]

    def _tokenize(self, split: str) -> datasets.Dataset:
        fields = self.task.text_fields
        tokenizer, teacher_tokenizer = self.tokenizer, self.teacher_tokenizer

        def encode(batch: dict[str, list]) -> dict[str, list]:
            texts = [batch[f] for f in fields]
            enc = dict(tokenizer(*texts, truncation=True, max_length=self.max_length))
            enc["length"] = [len(ids) for ids in enc["input_ids"]]
            if teacher_tokenizer is not None:
                # Separate vocabularies: the teacher reads its own tokenization of the text.
                t_enc = teacher_tokenizer(*texts, truncation=True, max_length=self.max_length)
                enc.update({f"{TEACHER_PREFIX}{k}": v for k, v in t_enc.items()})
            return enc

        return self.raw[split].map(encode, batched=True, batch_size=1000,
                                   remove_columns=list(fields),
                                   desc=f"tokenize {self.task.name}/{split}")

    def _cached_split(self, split: str) -> datasets.Dataset:
        if self.cache_dir is None:
            return self._tokenize(split)
        return cached_dataset(self.cache_dir / self.cache_key(split),
                              lambda: self._tokenize(split))

    def split_source(self, split: str) -> str:
        """What a raw split was read from (``path#sha256=...``, hub fingerprint, ...)."""
        self.load_raw()
        return self._source_ids[split]

    def tokenized(self, split: str) -> datasets.Dataset:
        """The tokenized split in its stored row order (the order teacher logits follow)."""
        self.load_raw()
        return self._cached_split(split)

    def teacher_batches(self, split: str, batch_size: int
                        ) -> Iterator[tuple[list[int], dict[str, torch.Tensor]]]:
        """``(row positions, padded teacher inputs)`` over a split, longest rows first.

        Sorted by length so each batch pads little; the positions put results back in row
        order. The teacher reads its own tokenization when the vocabularies differ.
        """
        ds = self.tokenized(split)
        prefix = TEACHER_PREFIX if self.teacher_tokenizer is not None else ""
        tokenizer = self.teacher_tokenizer or self.tokenizer
        fields = [c for c in ds.column_names if c.startswith(prefix)
                  and c[len(prefix):] in ("input_ids", "attention_mask", "token_type_ids")]
        columns = {f[len(prefix):]: ds[f] for f in fields}
        order = sorted(range(len(ds)), key=lambda i: -len(columns["input_ids"][i]))
        for start in range(0, len(order), batch_size):
            rows = order[start:start + batch_size]
            features = [{k: v[i] for k, v in columns.items()} for i in rows]
            yield rows, dict(tokenizer.pad(features, return_tensors="pt"))

    def set_teacher_logits(self, logits: Mapping[str, np.ndarray]) -> None:
        """Attach precomputed teacher logits per split: batches then carry
        ``teacher_logits`` (``[batch, num_labels]`` float32) and need no live teacher."""
        self.teacher_logits = dict(logits)
        self.splits = {s: ds for s, ds in self.splits.items() if s not in self.teacher_logits}

    def prepare_data(self) -> None:
        """Tokenize into the cache once (rank zero), so other ranks only read it."""
        if self.cache_dir is not None and self.tokenizer is not None:
            self.load_raw()
            for split in self.split_names:
                self._cached_split(split)

    def setup(self, stage: str | None = None) -> None:
        """Load raw splits and their tokenized, cached form."""
        if self.tokenizer is None:
            raise RuntimeError("GlueDataModule.set_tokenizer() must be called before setup()")
        self.load_raw()
        for split in self.split_names:
            if split not in self.splits:
                ds = self._cached_split(split)
                if split in self.teacher_logits:
                    ds = ds.add_column(TEACHER_LOGITS, list(self.teacher_logits[split]))
                if self.has_transfer and split in ("train", "transfer"):
                    # Which rows have a label: the task term averages over those only.
                    ds = ds.add_column(LABELLED, [int(split == "train")] * len(ds))
                if split in self.task.eval_splits:
                    # Eval batches of similar lengths pad less; metrics ignore order and
                    # the idx column keeps each row's identity.
                    ds = ds.select(sorted(range(len(ds)), key=ds["length"].__getitem__))
                self.splits[split] = ds

    # ---------------------------------------------------------------------- loaders
    def _collate(self) -> LogitsCollator:
        # Dynamic padding: each batch is padded to its own longest sequence only.
        pad = {"padding": self.padding, "max_length": self.max_length}
        if self.teacher_tokenizer is not None:
            return LogitsCollator(DualCollator(self.tokenizer, self.teacher_tokenizer, **pad))
        return LogitsCollator(DataCollatorWithPadding(self.tokenizer, return_tensors="pt", **pad))

    def _loader(self, split: str, batch_size: int, train: bool) -> DataLoader:
        ds = self.splits[split]
        if train and self.has_transfer:
            # One epoch = one pass over labelled + transfer rows, shuffled together.
            ds = datasets.concatenate_datasets([ds, self.splits["transfer"]])
        lengths = list(ds["length"]) if train else []
        ds = ds.remove_columns(["length"])
        sampler = None
        if train:

            def order(generator: torch.Generator) -> Sampler[int]:
                if self.group_by_length:
                    # Shuffled mega-batches sorted by length: similar lengths, random order.
                    return LengthGroupedSampler(batch_size, lengths=lengths, generator=generator)
                return RandomSampler(ds, generator=generator)

            sampler = EpochSeededSampler(order, self.seed, len(ds))
        elif dist.is_available() and dist.is_initialized():
            # Lightning's default DistributedSampler pads an eval set that does not split
            # evenly across ranks with repeated rows, which then count twice in the metrics;
            # this one gives ranks unequal shares instead, so every dev row counts once.
            sampler = UnrepeatedDistributedSampler(ds, shuffle=False)
        # A loader of its own generator: otherwise each new iterator draws its workers' base
        # seed from the global torch RNG, which dropout uses, and a resumed run (which creates
        # its iterators at other moments) would get other dropout masks.
        kwargs = {"position": self.train_position} if train else {}
        return (ResumableLoader if train else DataLoader)(
            ds, batch_size=batch_size, sampler=sampler, collate_fn=self._collate(),
            num_workers=self.num_workers, pin_memory=self.pin_memory,
            persistent_workers=self.num_workers > 0,
            generator=torch.Generator().manual_seed(self.seed), **kwargs,
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
