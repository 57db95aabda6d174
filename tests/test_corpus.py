"""Corpus reading (every format, folders, fields), splitting/packing, the held-out split."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from conftest import write_tiny_glue
from litdistill.corpus import FileCorpus, LocalCorpus, pack_rows, split_rows
from litdistill.errors import ConfigError
from litdistill.models import char_tokenizer

TEXTS = [f"text number {i}" for i in range(20)]


def corpus(tmp_path: Path, files: list, **kw) -> FileCorpus:
    return FileCorpus(files=[str(f) for f in files], heldout_rows=kw.pop("heldout_rows", 4),
                      cache_dir=str(tmp_path / "cache"), **kw)


def write_all(folder: Path) -> dict[str, Path]:
    """The same 20 texts in each format (jsonl/csv/parquet under the field ``body``)."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = {s: folder / f"c{s}" for s in (".txt", ".jsonl", ".csv", ".parquet")}
    paths[".txt"].write_text("\n".join(TEXTS) + "\n")
    paths[".jsonl"].write_text("".join(json.dumps({"body": t, "n": 1}) + "\n" for t in TEXTS))
    frame = pd.DataFrame({"body": TEXTS, "n": range(20)})
    frame.to_csv(paths[".csv"], index=False)
    frame.to_parquet(paths[".parquet"])
    return paths


@pytest.mark.parametrize("suffix", [".txt", ".jsonl", ".csv", ".parquet"])
def test_each_format_reads_the_texts(tmp_path, suffix):
    path = write_all(tmp_path / "data")[suffix]
    assert list(corpus(tmp_path, [path], field="body").read()["text"]) == TEXTS


def test_folder_is_searched_recursively_and_sorted(tmp_path):
    (tmp_path / "d" / "sub").mkdir(parents=True)
    (tmp_path / "d" / "b.txt").write_text("second\n")
    (tmp_path / "d" / "sub" / "c.txt").write_text("third\n")
    (tmp_path / "d" / "a.txt").write_text("first\n")
    (tmp_path / "d" / "notes.md").write_text("ignored\n")
    c = corpus(tmp_path, [tmp_path / "d"], heldout_rows=1)
    assert [p.name for p in c.paths] == ["a.txt", "b.txt", "c.txt"]
    assert list(c.read()["text"]) == ["first", "second", "third"]


def test_mixed_formats_concatenate(tmp_path):
    paths = write_all(tmp_path / "data")
    c = corpus(tmp_path, [paths[".txt"], paths[".jsonl"]], field="body")
    assert sorted(c.read()["text"]) == sorted(TEXTS * 2)


def test_bad_inputs_fail_clearly(tmp_path):
    paths = write_all(tmp_path / "data")
    with pytest.raises(ConfigError, match="corpus.field='text' is not a column.*body"):
        corpus(tmp_path, [paths[".jsonl"]]).read()
    with pytest.raises(ConfigError, match="does not exist"):
        corpus(tmp_path, [tmp_path / "missing.txt"])
    (tmp_path / "x.doc").write_text("x")
    with pytest.raises(ConfigError, match="unsupported suffix"):
        corpus(tmp_path, [tmp_path / "x.doc"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="no corpus files"):
        corpus(tmp_path, [tmp_path / "empty"])
    with pytest.raises(ConfigError, match="needs corpus.files"):
        corpus(tmp_path, [])
    with pytest.raises(ConfigError, match="heldout_rows"):
        corpus(tmp_path, [paths[".txt"]], heldout_rows=0)
    with pytest.raises(ConfigError, match="too few"):
        corpus(tmp_path, [paths[".txt"]], heldout_rows=20).splits()


def test_heldout_split_is_seeded_and_disjoint(tmp_path):
    path = write_all(tmp_path / "data")[".txt"]
    a, b = (corpus(tmp_path, [path], seed=1).splits() for _ in range(2))
    other = corpus(tmp_path, [path], seed=2).splits()
    assert list(a["heldout"]["text"]) == list(b["heldout"]["text"]) and len(a["heldout"]) == 4
    assert list(a["heldout"]["text"]) != list(other["heldout"]["text"])
    assert sorted([*a["train"]["text"], *a["heldout"]["text"]]) == sorted(TEXTS)
    assert len(corpus(tmp_path, [path], heldout_rows=0.25).splits()["heldout"]) == 5


def test_long_texts_are_split_into_whole_pieces():
    tok = char_tokenizer()
    text = "abcdefghij" * 3  # 30 pieces (one per character)
    rows = split_rows({"text": [text, "xy"]}, tok, max_length=12)["input_ids"]
    assert [len(r) for r in rows] == [12, 12, 12, 4]  # 10 + 10 + 10 pieces, then "xy"
    pieces = tok(text, add_special_tokens=False)["input_ids"]
    assert sum((r[1:-1] for r in rows[:3]), []) == pieces
    assert all(r[0] == tok.cls_token_id and r[-1] == tok.sep_token_id for r in rows)


def test_packing_fills_blocks_across_texts():
    tok = char_tokenizer()
    rows = pack_rows({"text": ["abcd", "efgh", "ij"]}, tok, max_length=8)["input_ids"]
    # stream: abcd [SEP] efgh [SEP] ij [SEP] = 13 pieces -> blocks of 6 (+ [CLS] [SEP]).
    assert [len(r) for r in rows] == [8, 8, 3]
    assert rows[0][5] == tok.sep_token_id  # the [SEP] between the first two texts


def test_local_corpus_reads_glue_train_text_only(tmp_path):
    glue = write_tiny_glue(tmp_path / "glue", n_train=10, n_dev=5)
    c = LocalCorpus(glue_dir=str(glue), movie=False, heldout_rows=2,
                    cache_dir=str(tmp_path / "cache"))
    assert "sst2" in c.sources and "mrpc" in c.sources
    texts = list(c.read()["text"])
    # One row per text column of each task's training rows (pair tasks give two).
    expected = sum(10 * len(t.text_fields) for t in c.sources.values())
    assert len(texts) == expected
    assert list(c.read()["text"]) == list(texts)  # the cached copy
    with pytest.raises(ConfigError, match="found no text"):
        LocalCorpus(glue_dir=None, movie=False)
