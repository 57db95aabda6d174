"""Raw text for general (task-agnostic) distillation: the ``corpus`` config group.

A corpus is read with ``datasets`` into Arrow files that are memory-mapped, not loaded, so
memory stays flat as the corpus grows; every later step (held-out split, tokenization,
splitting or packing) is a ``datasets`` operation whose result is cached on disk too.

* :class:`FileCorpus` (``corpus=files``): txt files (a text per line), jsonl/json/csv/parquet
  files (the text in a named ``field``), or folders of them (searched recursively, sorted).
* :class:`LocalCorpus` (``corpus=local``, offline): the training text of the GLUE tasks found
  under ``$GLUE_DIR`` (every text column of each ``train.tsv``, each a row of its own) plus
  the zoo's movie sentences when that asset has been fetched (it is never downloaded here).

Long texts: by default (``pack: false``) a text longer than ``max_length`` is **split** into
consecutive chunks of whole word pieces, each wrapped in ``[CLS] ... [SEP]``; short texts stay
as they are, so every row is one text and no attention crosses from one text into an
unrelated one (the students are then task-distilled on single sentences and pairs, where that
never happens). ``pack: true`` concatenates the texts (``[SEP]`` between them) and cuts the
stream into full ``max_length`` blocks: no padding, more tokens per step, better for corpora
of long documents.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import datasets
from transformers import PreTrainedTokenizerBase

from litdistill.errors import ConfigError
from litdistill.reader import cached_dataset

# File suffix -> the ``datasets`` builder that reads it.
FORMATS = {".txt": "text", ".jsonl": "json", ".json": "json", ".csv": "csv",
           ".parquet": "parquet"}
TEXT = "text"  # the one column of a read corpus


@dataclass
class Corpus:
    """What every corpus shares: held-out slice, length handling, shuffling seed.

    Attributes:
        heldout_rows: Texts kept out of training for the validation loss: a count (>= 1),
            or a fraction in (0, 1).
        pack: Concatenate texts and cut into ``max_length`` blocks (else split long texts).
        max_length: Tokens per row, special tokens included.
        max_rows: Use at most this many texts (a seeded random subset; None: all).
        seed: Seed of the held-out split and the subset (training order: ``data.seed``).
        cache_dir: Where the Arrow files of read and tokenized corpora go (None: datasets').
    """

    heldout_rows: float = 512
    pack: bool = False
    max_length: int = 128
    max_rows: int | None = None
    seed: int = 42
    cache_dir: str | None = None

    def __post_init__(self) -> None:
        h = self.heldout_rows
        if not (0 < h < 1 or (h >= 1 and float(h).is_integer())):
            raise ConfigError(f"corpus.heldout_rows={h}: a row count >= 1 or a fraction in "
                              "(0, 1)")
        if int(self.max_length) < 8:
            raise ConfigError(f"corpus.max_length={self.max_length}: must be at least 8")
        if self.max_rows is not None and int(self.max_rows) < 2:
            raise ConfigError(f"corpus.max_rows={self.max_rows}: at least 2 (or null: all)")

    def read(self) -> datasets.Dataset:
        """The corpus as one ``text`` column (memory-mapped Arrow)."""
        raise NotImplementedError

    def describe(self) -> dict[str, Any]:
        """What the corpus is, for results.json."""
        raise NotImplementedError

    def splits(self) -> dict[str, datasets.Dataset]:
        """``{"train", "heldout"}`` raw texts: a seeded, deterministic held-out slice.

        Raises:
            ConfigError: Too few texts for the held-out slice and some training.
        """
        ds = self.read().filter(lambda b: [bool(t and t.strip()) for t in b[TEXT]],
                                batched=True)
        if self.max_rows is not None and len(ds) > self.max_rows:
            ds = ds.shuffle(seed=self.seed).select(range(int(self.max_rows)))
        held = int(self.heldout_rows) if self.heldout_rows >= 1 else self.heldout_rows
        rows = held if isinstance(held, int) else max(1, round(held * len(ds)))
        if len(ds) - rows < 1:
            raise ConfigError(f"the corpus has {len(ds)} non-empty texts: too few for "
                              f"corpus.heldout_rows={self.heldout_rows} and any training")
        parts = ds.train_test_split(test_size=rows, seed=self.seed, shuffle=True)
        return {"train": parts["train"], "heldout": parts["test"]}

    def tokenized(self, tokenizer: PreTrainedTokenizerBase) -> dict[str, datasets.Dataset]:
        """Both splits tokenized, split or packed into rows of at most ``max_length``."""
        fn = pack_rows if self.pack else split_rows
        return {name: ds.map(fn, batched=True, remove_columns=ds.column_names,
                             fn_kwargs={"tokenizer": tokenizer,
                                        "max_length": int(self.max_length)},
                             desc=f"tokenizing corpus ({name})")
                for name, ds in self.splits().items()}


def _ends(tokenizer: PreTrainedTokenizerBase) -> tuple[int, int]:
    """The ids that open and close a row: [CLS]/[SEP] (BERT), <s>/</s> (RoBERTa, MPNet)."""
    first = tokenizer.cls_token_id if tokenizer.cls_token_id is not None \
        else tokenizer.bos_token_id
    last = tokenizer.sep_token_id if tokenizer.sep_token_id is not None \
        else tokenizer.eos_token_id
    if first is None or last is None:
        raise ConfigError(f"{type(tokenizer).__name__} has no [CLS]/[SEP] (or <s>/</s>) "
                          "tokens to wrap corpus rows in")
    return first, last


def _wrap(tokenizer: PreTrainedTokenizerBase, pieces: list[int]) -> dict[str, list[int]]:
    first, last = _ends(tokenizer)
    ids = [first, *pieces, last]
    return {"input_ids": ids, "attention_mask": [1] * len(ids)}


def _chunks(ids: list[int], size: int) -> Iterator[list[int]]:
    for start in range(0, len(ids), size):
        yield ids[start:start + size]


def _columns(rows: list[dict[str, list[int]]]) -> dict[str, list[list[int]]]:
    return {"input_ids": [r["input_ids"] for r in rows],
            "attention_mask": [r["attention_mask"] for r in rows]}


def split_rows(batch: dict[str, list], tokenizer: PreTrainedTokenizerBase,
               max_length: int) -> dict[str, list[list[int]]]:
    """One row per text; a longer text becomes consecutive chunks of whole word pieces."""
    room = max_length - 2  # [CLS] ... [SEP]
    pieces = tokenizer(batch[TEXT], add_special_tokens=False)["input_ids"]
    return _columns([_wrap(tokenizer, c) for ids in pieces if ids for c in _chunks(ids, room)])


def pack_rows(batch: dict[str, list], tokenizer: PreTrainedTokenizerBase,
              max_length: int) -> dict[str, list[list[int]]]:
    """Texts joined by ``[SEP]`` and cut into blocks of exactly ``max_length`` tokens (the
    batch's incomplete last block is kept: one short row per 1,000 texts)."""
    room, sep = max_length - 2, _ends(tokenizer)[1]  # each block: [CLS] ... [SEP]
    stream: list[int] = []
    for ids in tokenizer(batch[TEXT], add_special_tokens=False)["input_ids"]:
        if ids:
            stream += [*ids, sep]
    return _columns([_wrap(tokenizer, c) for c in _chunks(stream, room)])


def expand_paths(entries: list[str]) -> list[Path]:
    """Files as given and the corpus files under given folders (recursive), sorted.

    Raises:
        ConfigError: A missing path, an unsupported suffix, or no files at all.
    """
    found: list[Path] = []
    for entry in entries:
        path = Path(str(entry)).expanduser()
        if path.is_dir():
            found += sorted(p for p in path.rglob("*") if p.is_file() and p.suffix in FORMATS)
        elif path.is_file():
            if path.suffix not in FORMATS:
                raise ConfigError(f"corpus file {str(path)!r}: unsupported suffix; use "
                                  f"{', '.join(FORMATS)}")
            found.append(path)
        else:
            raise ConfigError(f"corpus file or folder {str(path)!r} does not exist")
    if not found:
        raise ConfigError(f"no corpus files ({', '.join(FORMATS)}) in {list(entries)}")
    return found


@dataclass
class FileCorpus(Corpus):
    """Text files and folders: ``corpus=files 'corpus.files=[wiki.txt,more/]'``.

    Attributes:
        files: Files and folders (folders are searched recursively for known suffixes).
        field: The text field of jsonl/json/csv/parquet files (txt: each line is a text).
    """

    files: list[str] = field(default_factory=list)
    field: str = TEXT

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.files:
            raise ConfigError("corpus=files needs corpus.files: a list of files or folders, "
                              "e.g. 'corpus.files=[wiki.txt]'")
        self.files = [str(f) for f in self.files]
        self.paths = expand_paths(self.files)  # checked here: before any weights load

    def read(self) -> datasets.Dataset:
        parts = []
        for builder in sorted({FORMATS[p.suffix] for p in self.paths}):
            files = [str(p) for p in self.paths if FORMATS[p.suffix] == builder]
            ds = datasets.load_dataset(builder, data_files=files, split="train",
                                       cache_dir=self.cache_dir)
            parts.append(self._text_column(ds, builder, files))
        return parts[0] if len(parts) == 1 else datasets.concatenate_datasets(parts)

    def _text_column(self, ds: datasets.Dataset, builder: str,
                     files: list[str]) -> datasets.Dataset:
        name = TEXT if builder == "text" else self.field
        if name not in ds.column_names:
            raise ConfigError(f"corpus.field={name!r} is not a column of {files[0]} (columns: "
                              f"{', '.join(ds.column_names)}); set corpus.field")
        ds = ds.select_columns([name])
        return ds.rename_column(name, TEXT) if name != TEXT else ds

    def describe(self) -> dict[str, Any]:
        return {"kind": "files", "files": [str(p) for p in self.paths], "field": self.field,
                "pack": self.pack, "max_length": self.max_length}


@dataclass
class LocalCorpus(Corpus):
    """The offline default (``corpus=local``): text already on this machine.

    Every text column of the training split of each GLUE task under ``glue_dir`` (CoLA,
    SST-2, MRPC, STS-B, QQP, MNLI, QNLI, RTE, WNLI: those present; a pair task gives two
    rows per example), plus the zoo's movie sentences (train split) when fetched. Dev and
    test text is left out, so a later task run's dev score stays unseen. Read once into a
    memory-mapped Arrow copy under ``cache_dir``, keyed by the source files' names and sizes.

    Attributes:
        glue_dir: A folder in the GLUE layout (``$GLUE_DIR``); None: GLUE is left out.
        movie: Include the zoo's movie sentences when that asset is fetched.
    """

    glue_dir: str | None = None
    movie: bool = True

    def __post_init__(self) -> None:
        super().__post_init__()
        self.sources = self._sources()
        if not self.sources:
            raise ConfigError("corpus=local found no text: set GLUE_DIR (or corpus.glue_dir) "
                              "to a folder in the GLUE layout, or fetch the movie sentences "
                              "(litdistill-zoo fetch movie_sentiment), or use corpus=files")

    def _sources(self) -> dict[str, Any]:
        from litdistill import zoo
        from litdistill.tasks import TASKS

        found: dict[str, Any] = {}
        root = Path(self.glue_dir).expanduser() if self.glue_dir else None
        for name, task in sorted(TASKS.items()):
            if task.glue_dir_name and root is not None and \
                    (root / task.glue_dir_name / task.split_files["train"]).is_file():
                found[name] = task
        if self.movie and zoo.is_fetched("movie_sentiment"):
            found["movie_sentiment"] = TASKS["movie_sentiment"]
        return found

    def _key(self) -> str:
        parts = []
        for name, task in self.sources.items():
            if task.glue_dir_name and name != "movie_sentiment":
                path = Path(str(self.glue_dir)) / task.glue_dir_name / task.split_files["train"]
                parts.append(f"{path.resolve()}:{path.stat().st_size}")
            else:
                parts.append(name)
        return hashlib.sha256("|".join(parts).encode()).hexdigest()[:16]

    def _build(self) -> datasets.Dataset:
        from litdistill.reader import read_splits

        texts: list[str] = []
        for name, task in self.sources.items():
            glue = self.glue_dir if name != "movie_sentiment" else None
            train = read_splits(task, glue_dir=glue).raw["train"]
            for column in task.text_fields:
                texts += [str(t) for t in train[column] if t]
        return datasets.Dataset.from_dict({TEXT: texts})

    def read(self) -> datasets.Dataset:
        if self.cache_dir is None:
            return self._build()
        return cached_dataset(Path(self.cache_dir).expanduser() / f"local-{self._key()}",
                              self._build)

    def describe(self) -> dict[str, Any]:
        return {"kind": "local", "glue_dir": self.glue_dir, "sources": sorted(self.sources),
                "pack": self.pack, "max_length": self.max_length}
