"""The plain text reader: no Lightning, seeded subsets, eval batches, logits over a split."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from litdistill.models import Sized, char_tokenizer
from litdistill.reader import (
    eval_batches,
    read_splits,
    seeded_rows,
    split_logits,
    tokenize_split,
)
from litdistill.tasks import GLUE_TASKS
from litdistill.transfer import cap


def test_reader_does_not_import_lightning():
    """A raw-corpus job (or the export) reads text without pulling in Lightning."""
    code = ("import sys, litdistill.reader, litdistill.transfer, litdistill.unlabelled; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in "
            "('lightning', 'pytorch_lightning', 'lightning_fabric')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "[]"


def test_seeded_rows_are_deterministic_sorted_and_capped():
    a = seeded_rows(100, 10, seed=3)
    assert a == seeded_rows(100, 10, seed=3) and a != seeded_rows(100, 10, seed=4)
    assert len(a) == 10 == len(set(a)) and a == sorted(a) and 0 <= a[0] and a[-1] < 100
    assert seeded_rows(5, None, 3) == seeded_rows(5, 5, 3) == seeded_rows(5, 9, 3) == [0, 1, 2,
                                                                                      3, 4]


def test_subsets_and_caps_are_one_draw(tiny_glue: Path):
    """The labelled subset, its rest and a transfer cap all come from seeded_rows."""
    full = read_splits(GLUE_TASKS["sst2"], glue_dir=tiny_glue).raw["train"]
    splits = read_splits(GLUE_TASKS["sst2"], glue_dir=tiny_glue, max_train_samples=10,
                         max_eval_samples=8, subset_seed=5)
    keep = seeded_rows(len(full), 10, 5)
    assert splits.raw["train"]["idx"] == keep
    assert splits.raw["validation"]["idx"] == seeded_rows(32, 8, 5)
    assert splits.subsets == {"train": [10, 5], "validation": [8, 5]}
    assert sorted(keep + list(splits.rest["idx"])) == list(range(len(full)))
    rest = splits.train_rest(10)
    assert list(cap(rest, 4, 5)["sentence"]) == [rest["sentence"][i]
                                                 for i in seeded_rows(len(rest), 4, 5)]


def test_eval_batches_cover_every_row_once_sorted_by_length(tiny_glue: Path):
    tokenizer = char_tokenizer()
    splits = read_splits(GLUE_TASKS["sst2"], glue_dir=tiny_glue)
    data = tokenize_split(splits, "validation", tokenizer, max_length=32).data
    batches = list(eval_batches(data, tokenizer, 5))
    rows = [r for at, _ in batches for r in at]
    assert sorted(rows) == list(range(len(data)))
    widths = [b["input_ids"].shape[1] for _, b in batches]
    assert widths == sorted(widths, reverse=True)  # longest first
    at, batch = batches[0]
    assert batch["input_ids"][0, :data["length"][at[0]]].tolist() == data["input_ids"][at[0]]
    short = list(eval_batches(data, tokenizer, 5, longest_first=False, return_tensors="np"))
    assert short[0][1]["input_ids"].dtype == np.int64
    short_widths = [b["input_ids"].shape[1] for _, b in short]
    assert short_widths == sorted(short_widths) and short_widths[-1] == widths[0]


def test_split_logits_equal_a_manual_forward(tiny_glue: Path):
    """Row i of the result is the model's logits of row i alone (padding changes nothing)."""
    tokenizer = char_tokenizer()
    splits = read_splits(GLUE_TASKS["sst2"], glue_dir=tiny_glue, max_eval_samples=12)
    data = tokenize_split(splits, "validation", tokenizer, max_length=32).data
    torch.manual_seed(0)
    model = Sized(2, 32, 2, 64).build(2, False)
    model.train()  # split_logits must switch dropout off itself
    got = split_logits(model, eval_batches(data, tokenizer, 5), len(data))
    assert got.shape == (12, 2) and got.dtype == np.float32
    model.eval()
    with torch.no_grad():
        for i in (0, 5, 11):
            ids = torch.tensor([data["input_ids"][i]])
            want = model(input_ids=ids, token_type_ids=torch.tensor([data["token_type_ids"][i]]),
                         attention_mask=torch.ones_like(ids)).logits[0].numpy()
            np.testing.assert_allclose(got[i], want, atol=1e-5)
    pairs = list(eval_batches(data, tokenizer, 5, return_tensors="np"))
    order = [r for at, _ in pairs for r in at]
    bare = split_logits(model, [inputs for _, inputs in pairs])  # rows in batch order
    np.testing.assert_allclose(bare, got[order], atol=1e-5)
    assert not any(p.is_inference() for p in model.parameters())  # still trainable later
    with pytest.raises(ValueError, match="no rows"):
        split_logits(model, iter(()))
