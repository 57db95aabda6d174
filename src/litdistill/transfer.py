"""Transfer sets: text the student learns from through the teacher only (no label needed).

``transfer=none`` (default) trains on the labelled rows only. ``train_rest`` takes the task's
training rows that ``data.max_train_samples`` left out of the labelled subset (the same seeded
draw), labels dropped: the label-scarce setting. ``files`` reads any local csv/tsv/json/
jsonl/parquet/txt files holding the task's text field(s); label columns are ignored.
``max_rows`` caps the transfer rows with a seeded sample.

How the rows are used (see :mod:`litdistill.losses`): a transfer row gets every teacher-driven
term of the objective and no task term. An epoch is one pass over the labelled rows and the
transfer rows together: both are concatenated and shuffled as one set (length-grouped when
``data.group_by_length``), so each batch holds a random mix in proportion to their counts.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import datasets

from litdistill.atomic import sha256_file
from litdistill.errors import ConfigError
from litdistill.reader import seeded_rows
from litdistill.tasks import TaskSpec

SOURCES = ("none", "train_rest", "files")
FORMATS = {".csv": "csv", ".tsv": "csv", ".json": "json", ".jsonl": "json",
           ".parquet": "parquet", ".txt": "text"}


@dataclass(frozen=True)
class TransferSet:
    """Where a run's unlabelled transfer rows come from (``conf/transfer/*.yaml``).

    Attributes:
        source: ``none``, ``train_rest`` or ``files``.
        files: For ``files``: paths of csv/tsv/json/jsonl/parquet/txt files.
        max_rows: Keep a seeded random sample of at most this many rows (None: all).

    Raises:
        ConfigError: An unknown source, ``files`` without files, ``max_rows`` < 1.
    """

    source: str = "none"
    files: Sequence[str] = ()
    max_rows: int | None = None

    def __post_init__(self) -> None:
        if self.source not in SOURCES:
            raise ConfigError(f"transfer.source={self.source!r}: use one of {', '.join(SOURCES)}"
                              " (transfer=none|train_rest|files)")
        files = (self.files,) if isinstance(self.files, str) else tuple(self.files or ())
        object.__setattr__(self, "files", tuple(str(f) for f in files))
        if self.source == "files" and not self.files:
            raise ConfigError("transfer=files needs transfer.files=[<path>, ...] (csv, tsv, "
                              "json, jsonl, parquet or txt with the task's text fields)")
        if self.max_rows is not None and int(self.max_rows) < 1:
            raise ConfigError(f"transfer.max_rows={self.max_rows}: keep at least 1 row, or "
                              "null for all of them")

    @property
    def enabled(self) -> bool:
        """Whether the run has transfer rows of its own (augmentation aside)."""
        return self.source != "none"

    def describe(self) -> dict[str, Any]:
        """The settings as results.json records them."""
        return {"source": self.source, "files": list(self.files), "max_rows": self.max_rows}


def cap(rows: datasets.Dataset, max_rows: int | None, seed: int) -> datasets.Dataset:
    """A seeded random sample of at most ``max_rows`` rows, in their original order."""
    if max_rows is None or max_rows >= len(rows):
        return rows
    return rows.select(seeded_rows(len(rows), max_rows, seed))


def read_files(task: TaskSpec, files: Sequence[str]) -> tuple[datasets.Dataset, list[str]]:
    """The text fields of every file, concatenated, and each file's ``path#sha256=...``.

    A ``.txt`` file is one text per line, for single-text tasks only. Empty texts are kept as
    empty strings (the tokenizer gives them [CLS] [SEP]); missing values likewise.

    Raises:
        ConfigError: A missing or unreadable file, an unknown type, a missing text field
            (file and field named), a txt file for a pair task, or no rows at all.
    """
    parts, ids = [], []
    for name in files:
        path = Path(name).expanduser()
        if not path.is_file():
            raise ConfigError(f"transfer file {str(path)!r} does not exist; set "
                              "transfer.files to existing csv/tsv/json/jsonl/parquet/txt files")
        fmt = FORMATS.get(path.suffix.lower())
        if fmt is None:
            raise ConfigError(f"transfer file {path}: unsupported type {path.suffix!r}; use "
                              f"one of {', '.join(FORMATS)}")
        parts.append(_read(task, path, fmt))
        ids.append(f"{path}#sha256={sha256_file(path)}")
    rows = datasets.concatenate_datasets(parts) if len(parts) > 1 else parts[0]
    if len(rows) == 0:
        raise ConfigError(f"transfer files {list(files)} hold no rows")
    return rows, ids


def _read(task: TaskSpec, path: Path, fmt: str) -> datasets.Dataset:
    fields = list(task.text_fields)
    if fmt == "text":
        if len(fields) > 1:
            raise ConfigError(f"transfer file {path}: a .txt file holds one text per line, but "
                              f"task {task.name} reads pairs {fields}; use csv/jsonl with both "
                              "columns")
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except UnicodeDecodeError as err:
            raise ConfigError(f"transfer file {path} is not UTF-8 text ({err})") from None
        return datasets.Dataset.from_dict({fields[0]: [t for t in lines if t.strip()]})
    kwargs = {"delimiter": "\t"} if path.suffix.lower() == ".tsv" else {}
    try:
        ds = datasets.load_dataset(fmt, data_files=str(path), split="train", **kwargs)
    except (ValueError, OSError, datasets.exceptions.DatasetGenerationError) as err:
        first = (str(err).splitlines() or [""])[0]
        raise ConfigError(f"transfer file {path} cannot be read as {fmt}: {first}") from None
    if missing := [f for f in fields if f not in ds.column_names]:
        raise ConfigError(f"transfer file {path} lacks the text field(s) {missing} of task "
                          f"{task.name}; it has columns {ds.column_names}")
    columns = {f: ["" if t is None else str(t) for t in ds[f]] for f in fields}
    return datasets.Dataset.from_dict(columns)
