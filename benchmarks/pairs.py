"""A teacher/student pair and SST-2 batches for the benchmark scripts."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from bench import quiet
from torch import nn


def teacher_path(arg: str | None) -> Path:
    """``--teacher`` or the zoo's minilm_l6 folder (never downloads: says how to fetch)."""
    if arg:
        path = Path(arg).expanduser()
        if not (path / "config.json").is_file():
            sys.exit(f"error: --teacher {arg}: no config.json there")
        return path
    from litdistill import zoo

    if not zoo.is_fetched("minilm_l6"):
        sys.exit("error: zoo minilm_l6 is not fetched: `litdistill-zoo fetch minilm_l6` "
                 "(set LITDISTILL_HOME), or pass --teacher FOLDER [--random-init]")
    return zoo.asset_dir("minilm_l6")


def load_classifier(path: Path, random_init: bool, num_labels: int = 2) -> nn.Module:
    """A sequence classifier from a folder: its weights (fresh head if it has none), or
    only its config.json (random weights, the same architecture and compute)."""
    from transformers import AutoConfig, AutoModelForSequenceClassification
    quiet()  # "some weights newly initialized" is expected here
    if random_init:
        config = AutoConfig.from_pretrained(path, num_labels=num_labels)
        config.architectures = None
        return AutoModelForSequenceClassification.from_config(config)
    # fp32 whatever the checkpoint's dtype (transformers 5 keeps a half checkpoint in half).
    return AutoModelForSequenceClassification.from_pretrained(path, num_labels=num_labels,
                                                              dtype=torch.float32)


def default_layers(num_layers: int) -> list[int]:
    """Every other teacher layer from the bottom: 6 -> 0,2,4; 12 -> 0,2,...,10."""
    return list(range(0, num_layers, 2))


def parse_layers(text: str | None, num_layers: int) -> list[int]:
    if not text:
        return default_layers(num_layers)
    return [int(x) for x in text.split(",") if x.strip()]


@dataclass
class Pair:
    """A teacher with a classification head and a student cut from its layers."""

    teacher: nn.Module
    student: nn.Module
    tokenizer: Any
    path: Path
    layers: list[int]
    random_init: bool

    def describe(self) -> str:
        from litdistill.models import count_params

        init = "random init" if self.random_init else "pretrained"
        t_layers = self.teacher.config.num_hidden_layers
        return (f"teacher {self.path.name} ({t_layers} layers, {count_params(self.teacher):,} "
                f"params, {init}) -> student layers {self.layers} "
                f"({count_params(self.student):,} params)")


def build_pair(args: argparse.Namespace) -> Pair:
    """Teacher from ``--teacher``/zoo (or random init), student = ``cut_layers``."""
    from litdistill.models import cut_layers, load_tokenizer

    path = teacher_path(args.teacher)
    teacher = load_classifier(path, args.random_init)
    layers = parse_layers(args.student_layers, teacher.config.num_hidden_layers)
    student = cut_layers(teacher, layers)
    return Pair(teacher, student, load_tokenizer(str(path)), path, layers, args.random_init)


def save_classifier(model: nn.Module, tokenizer: Any, dest: Path) -> Path:
    """``save_pretrained`` model + tokenizer (a folder that configs can name)."""
    model.save_pretrained(dest)
    tokenizer.save_pretrained(dest)
    return dest


# ----------------------------------------------------------------------------- data
def sst2(glue_dir: str, split: str, n: int | None = None, seed: int = 42
         ) -> tuple[list[str], list[int]]:
    """SST-2 sentences and labels read from the GLUE TSV (a seeded random subset of ``n``)."""
    import random

    from litdistill.readers import read_glue_tsv
    from litdistill.tasks import TASKS

    columns = read_glue_tsv(Path(glue_dir) / "SST-2" / f"{split}.tsv", TASKS["sst2"])
    rows = list(range(len(columns["label"])))
    if n is not None and n < len(rows):
        rows = random.Random(seed).sample(rows, n)
    return [columns["sentence"][i] for i in rows], [int(columns["label"][i]) for i in rows]


def collate_batches(tokenizer: Any, sentences: Sequence[str], labels: Sequence[int],
                    batch_size: int, max_length: int = 128) -> list[dict[str, torch.Tensor]]:
    """Tokenized, dynamically padded batches (each to its own longest row), in order."""
    batches = []
    for start in range(0, len(sentences) - batch_size + 1, batch_size):
        enc = tokenizer(list(sentences[start:start + batch_size]), truncation=True,
                        max_length=max_length, padding="longest", return_tensors="pt")
        batch = dict(enc)
        batch["labels"] = torch.tensor(labels[start:start + batch_size])
        batches.append(batch)
    return batches

