"""Shared fixtures: the real ``conf/`` composed with tiny models and tiny GLUE-layout data."""

from __future__ import annotations

import os
import random
from collections.abc import Callable
from pathlib import Path

# Never touch the network from tests: hub lookups retry for minutes, wandb blocks ~100 s.
for _flag in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
    os.environ[_flag] = "1"
os.environ["WANDB_MODE"] = "offline"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402
from omegaconf import DictConfig, open_dict  # noqa: E402

from litdistill.conf import compose  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SHARED_GLUE = (REPO.parent / "shared" / "data" / "glue").resolve()

WORDS_POS = ["good", "great", "fun", "lovely", "superb", "charming"]
WORDS_NEG = ["bad", "awful", "dull", "boring", "poor", "ugly"]
FILLER = ["the", "movie", "was", "a", "film", "it", "is", "and", "plot", "very", "quite"]


def _sentence(rng: random.Random, label: int) -> str:
    words = rng.sample(FILLER, rng.randint(2, 8))
    words.insert(rng.randrange(len(words) + 1), rng.choice(WORDS_POS if label else WORDS_NEG))
    return " ".join(words)


def write_tiny_glue(root: Path, n_train: int = 64, n_dev: int = 32, seed: int = 0) -> Path:
    """A GLUE-layout folder with SST-2, CoLA, MRPC, STS-B, RTE and MNLI in their real layouts.

    Sentences hold one sentiment word, so even a tiny model can learn the label.
    """
    rng = random.Random(seed)

    def rows(n: int) -> list[tuple[int, str, str]]:
        out = []
        for _ in range(n):
            label = rng.randint(0, 1)
            out.append((label, _sentence(rng, label), _sentence(rng, label)))
        return out

    def write(task: str, name: str, lines: list[str], bom: bool = False) -> None:
        folder = root / task
        folder.mkdir(parents=True, exist_ok=True)
        text = ("\ufeff" if bom else "") + "\n".join(lines) + "\n"
        (folder / name).write_text(text, encoding="utf-8")

    for split, n in (("train.tsv", n_train), ("dev.tsv", n_dev)):
        data = rows(n)
        write("SST-2", split, ["sentence\tlabel"] + [f"{s}\t{y}" for y, s, _ in data])
        write("CoLA", split, [f"src\t{y}\t\t{s}" for y, s, _ in data])
        write("MRPC", split, ["Quality\t#1 ID\t#2 ID\t#1 String\t#2 String"]
              + [f"{y}\t{i}\t{i + 1}\t{a}\t{b}" for i, (y, a, b) in enumerate(data)], bom=True)
        stsb_head = "index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\tsentence1\t" \
                    "sentence2\tscore"
        write("STS-B", split, [stsb_head] + [
            f"{i}\tg\tf\t2012\t{i}\ts1\ts2\t{a}\t{b}\t{4.5 * y + rng.random() / 2:.3f}"
            for i, (y, a, b) in enumerate(data)])
        rte = ("entailment", "not_entailment")
        write("RTE", split, ["index\tsentence1\tsentence2\tlabel"]
              + [f"{i}\t{a}\t{b}\t{rte[y]}" for i, (y, a, b) in enumerate(data)])
    nli = ("entailment", "neutral", "contradiction")
    head = "\t".join(["index", "promptID", "pairID", "genre", "s1b", "s2b", "s1p", "s2p",
                      "sentence1", "sentence2"])
    for split, n, extra in (("train.tsv", n_train, ["label1"]),
                            ("dev_matched.tsv", n_dev, ["label1"] * 5),
                            ("dev_mismatched.tsv", n_dev, ["label1"] * 5)):
        lines = [head + "\t" + "\t".join(extra) + "\tgold_label"]
        for i, (y, a, b) in enumerate(rows(n)):
            gold = nli[(y + i) % 3]
            lines.append("\t".join([str(i), "p", "q", "g", "x", "y", "x", "y", a, b,
                                    *[gold] * len(extra), gold]))
        write("MNLI", split, lines)
    return root


@pytest.fixture(scope="session")
def tiny_glue(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny GLUE_DIR shared by the session (read-only by convention)."""
    return write_tiny_glue(tmp_path_factory.mktemp("glue"))


@pytest.fixture(scope="session")
def word_tokenizer_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small WordPiece vocabulary written by the tests (the tiny models' tokenizer)."""
    from transformers import BertTokenizer

    folder = tmp_path_factory.mktemp("tokenizer")
    pieces = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS_POS, *WORDS_NEG, *FILLER,
              *"abcdefghijklmnopqrstuvwxyz", *(f"##{c}" for c in "abcdefghijklmnopqrstuvwxyz")]
    pieces = list(dict.fromkeys(pieces))  # "a" is both a word and a character
    vocab = folder / "vocab.txt"
    vocab.write_text("\n".join(pieces) + "\n")
    # BertTokenizer(vocab_file=...) silently ignores the file in transformers 5: pass vocab=.
    tokenizer = BertTokenizer(vocab=str(vocab))
    assert len(tokenizer) == len(pieces)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture
def make_cfg(tmp_path: Path, tiny_glue: Path) -> Callable[..., DictConfig]:
    """Compose ``conf/train.yaml`` with test overrides; outputs go to ``tmp_path``."""

    def make(*overrides: str, run_dir: Path | None = None) -> DictConfig:
        cfg = compose([
            # Random tiny teachers are no better than chance: no teacher gate.
            "logger=none", "teacher_gate=null", "trainer.max_epochs=1",
            "trainer.enable_model_summary=false", "trainer.num_sanity_val_steps=0",
            "data.batch_size=8",
            "data.eval_batch_size=16", f"data.glue_dir={tiny_glue}", *overrides,
        ])
        with open_dict(cfg):
            cfg.paths.output_dir = str(run_dir or tmp_path / "run")
            cfg.paths.cache_dir = str(tmp_path / "cache")
            # RichProgressBar needs a terminal-ish stream; tests need no progress bars.
            if cfg.get("callbacks"):
                cfg.callbacks.pop("progress_bar", None)
            cfg.trainer.enable_progress_bar = False
        return cfg

    return make


@pytest.fixture
def no_weights(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make any weight loading an error, to prove a check fires before it."""
    from litdistill import models

    def refuse(*args, **kwargs):
        raise AssertionError("weights were loaded before the config was validated")

    for cls in (models.Pretrained, models.Sized, models.FromTeacher):
        monkeypatch.setattr(cls, "build", refuse)
