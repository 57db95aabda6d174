"""Shared pieces of the benchmark scripts: machine info, timing, a teacher/student pair, SST-2.

Run the scripts from the repository root (``python benchmarks/<name>.py``); this module is
imported as ``common`` (the script's folder is on ``sys.path``). It needs ``litdistill``
importable: installed (``.venv``) or ``PYTHONPATH=src``. Nothing here imports wandb, hydra or
datasets; :func:`compose` (for scripts that run ``train(cfg)``) imports hydra when called.
"""

from __future__ import annotations

import argparse
import os
import platform
import shlex
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import torch
from rich.console import Console
from rich.table import Table
from torch import nn

console = Console(width=120)

# Lightning's notices about a frozen eval-mode teacher, worker counts and so on are noise here.
for _pattern in (r".*module\(s\) in eval mode.*", r".*does not have many workers.*",
                 r".*GPU available but not used.*", r".*no `val_dataloader`.*",
                 r".*LeafSpec.*", r".*predict_dataloader.*"):
    warnings.filterwarnings("ignore", message=_pattern)


# ----------------------------------------------------------------------------- arguments
def add_common_args(parser: argparse.ArgumentParser) -> None:
    """Options every script takes: device, precision, threads, data, teacher/student."""
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--precision", choices=("32", "bf16"), default="32",
                        help="32: fp32; bf16: bf16 autocast (training) / bf16 weights "
                             "(inference)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch intra-op threads (default: torch's, = cores)")
    parser.add_argument("--quick", action="store_true",
                        help="a tiny run (< 1-2 min on 2 CPU cores) that checks the script")
    parser.add_argument("--out", type=Path, default=None, help="write the figures as JSON here")
    parser.add_argument("--glue-dir", default=os.environ.get("GLUE_DIR"),
                        help="GLUE folder (<dir>/SST-2/{train,dev}.tsv); default $GLUE_DIR")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--teacher", default=None,
                        help="teacher folder (save_pretrained); default: zoo minilm_l6")
    parser.add_argument("--random-init", action="store_true",
                        help="build the teacher from its config.json without reading weights "
                             "(same compute; for machines without the weights)")
    parser.add_argument("--student-layers", default=None,
                        help="teacher layers the student keeps, e.g. 0,2,4 (default: every "
                             "other one: 0,2,4 of 6; 0,2,...,10 of 12)")


def setup(args: argparse.Namespace, title: str) -> dict[str, Any]:
    """Apply threads and seed, check the device, print and return the machine info."""
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.device == "cuda" and not torch.cuda.is_available():
        sys.exit("error: --device cuda but torch sees no CUDA device")
    if not args.glue_dir or not (Path(args.glue_dir) / "SST-2" / "train.tsv").is_file():
        sys.exit(f"error: no SST-2 under --glue-dir/$GLUE_DIR ({args.glue_dir!r}); "
                 "e.g. GLUE_DIR=/work/shared/data/glue")
    torch.manual_seed(args.seed)
    quiet()
    info = machine_info(args.device)
    console.rule(f"[bold]{title}")
    for key in ("command", "cpu", "gpu", "torch", "transformers", "lightning", "threads"):
        console.print(f"{key:>12}: {info[key]}")
    if getattr(args, "random_init", False):
        console.print("[yellow]teacher weights: RANDOM INIT from config.json (same compute as "
                      "the pretrained model; accuracies are not meaningful)")
    return info


def quiet() -> None:
    """Keep Lightning's and transformers' notices (tips, seeds, load reports, progress
    bars) out of the benchmark output; warnings and errors still show."""
    import logging

    from transformers.utils import logging as hf_logging

    for name in ("lightning", "lightning.pytorch", "lightning.fabric", "litdistill"):
        logging.getLogger(name).setLevel(logging.WARNING)
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()


def machine_info(device: str = "cpu") -> dict[str, Any]:
    """CPU model, GPU name, library versions, thread count and the exact command line."""
    import transformers

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {
        "command": shlex.join([sys.executable, *sys.argv]),
        "cpu": f"{cpu} ({os.cpu_count()} logical cores)",
        "gpu": gpu if device == "cuda" else f"not used ({gpu or 'none'})",
        "torch": torch.__version__, "transformers": transformers.__version__,
        "lightning": L.__version__, "python": platform.python_version(),
        "threads": torch.get_num_threads(), "device": device,
    }


def write_out(path: Path | None, name: str, info: dict[str, Any], args: argparse.Namespace,
              results: dict[str, Any]) -> None:
    """Write ``{benchmark, machine, args, results}`` as JSON when ``--out`` was given."""
    if path is None:
        return
    from litdistill import atomic

    payload = {"benchmark": name, "machine": info,
               "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
               "results": results}
    atomic.write_json(path, payload)
    console.print(f"wrote {path}")


def table(title: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    """Print a rich table; the first column left-aligned, the others right-aligned."""
    out = Table(title=title)
    for i, col in enumerate(columns):
        out.add_column(col, justify="left" if i == 0 else "right")
    for row in rows:
        out.add_row(*(str(c) for c in row))
    console.print(out)


# ----------------------------------------------------------------------------- timing
def sync(device: str | torch.device) -> None:
    """Wait for queued GPU work, so a host clock reading covers it."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


class StepTimer(L.Callback):
    """Wall time of training batches ``first..last`` (0-based, inclusive), GPU-synchronised.

    Covers everything in between: the loop's own work, batch fetching and device copies.
    """

    def __init__(self, first: int, last: int) -> None:
        self.first, self.last = first, last
        self.start: float | None = None
        self.seconds: float | None = None

    def on_train_batch_start(self, trainer: L.Trainer, module: L.LightningModule, batch: Any,
                             batch_idx: int) -> None:
        if batch_idx == self.first:
            sync(module.device)
            self.start = time.perf_counter()

    def on_train_batch_end(self, trainer: L.Trainer, module: L.LightningModule, outputs: Any,
                           batch: Any, batch_idx: int) -> None:
        if batch_idx == self.last and self.start is not None:
            sync(module.device)
            self.seconds = time.perf_counter() - self.start


class EpochTimer(L.Callback):
    """Per-epoch seconds of ``trainer.fit``: the training part (epoch start until the
    end-of-epoch validation starts, or the epoch ends) and each validation pass.

    GPU work is synchronised only at those boundaries, never per step. Assumes validation at
    epoch ends only (``val_check_interval: 1.0``, the project default). ``train(cfg)``
    instantiates callbacks from the config, so the scripts add this one by ``_target_``
    (:func:`epoch_timer_target`) and read the figures from ``EpochTimer.last``.
    """

    last: EpochTimer | None = None

    def __init__(self) -> None:
        self.train_epochs: list[float] = []
        self.val_passes: list[float] = []
        self.steps: list[int] = []
        self._epoch_start: float | None = None
        self._val_start = 0.0
        self._first_step = 0
        EpochTimer.last = self

    def _close_epoch(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        if self._epoch_start is not None:
            sync(module.device)
            self.train_epochs.append(time.perf_counter() - self._epoch_start)
            self.steps.append(trainer.global_step - self._first_step)
            self._epoch_start = None

    def on_train_epoch_start(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        sync(module.device)
        self._epoch_start = time.perf_counter()
        self._first_step = trainer.global_step

    def on_train_epoch_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        self._close_epoch(trainer, module)

    def on_validation_start(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        self._close_epoch(trainer, module)  # the epoch's training part ends here
        self._val_start = time.perf_counter()

    def on_validation_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        if not trainer.sanity_checking:
            sync(module.device)
            self.val_passes.append(time.perf_counter() - self._val_start)


def epoch_timer_target() -> str:
    """The importable dotted name of :class:`EpochTimer` (``common.EpochTimer`` here)."""
    return f"{EpochTimer.__module__}.{EpochTimer.__qualname__}"


# ----------------------------------------------------------------------------- models
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


# ----------------------------------------------------------------------------- train(cfg)
def hardware_override(device: str, precision: str) -> str:
    if device == "cpu":
        return "hardware=cpu"  # bf16 on CPU: train_overrides() sets trainer.precision
    return "hardware=gpu_bf16" if precision == "bf16" else "hardware=gpu"


def train_overrides(args: argparse.Namespace, cache_dir: Path, data_cache: Path,
                    epochs: int = 1) -> list[str]:
    """Overrides every ``train(cfg)`` run of a benchmark shares: SST-2 from ``--glue-dir``,
    ``epochs`` epochs, no logger, no checkpoints, no progress bar, no sanity check, the
    given caches (``paths.cache_dir``: the teacher cache lives in its ``teacher/``)."""
    overrides = [
        "task=sst2", f"data.glue_dir={args.glue_dir}", hardware_override(args.device,
                                                                         args.precision),
        "logger=none", "callbacks=none", f"trainer.max_epochs={epochs}",
        "trainer.enable_model_summary=false", "++trainer.enable_progress_bar=false",
        "trainer.num_sanity_val_steps=0", "skip_done=false", f"seed={args.seed}",
        f"paths.cache_dir={cache_dir}", f"data.cache_dir={data_cache}",
    ]
    if args.device == "cpu" and args.precision == "bf16":
        overrides.append("trainer.precision=bf16-mixed")
    if getattr(args, "compile", False):
        overrides.append("compile=true")
    return overrides


def compose(overrides: list[str], run_dir: Path) -> Any:
    """``conf/train.yaml`` with ``overrides`` (as the demo composes it) plus the epoch timer."""
    from omegaconf import OmegaConf, open_dict

    from litdistill.demo import compose_cfg

    cfg = compose_cfg(overrides, run_dir)
    with open_dict(cfg):
        cfg.callbacks = OmegaConf.create({"bench_timer": {"_target_": epoch_timer_target()}})
    return cfg


def run_train(overrides: list[str], run_dir: Path) -> dict[str, Any]:
    """One ``train(cfg)`` run; its results plus the epoch timer's and a wall-clock figure."""
    from litdistill.train import train

    cfg = compose(overrides, run_dir)
    start = time.perf_counter()
    results = train(cfg)
    wall = time.perf_counter() - start
    timer = EpochTimer.last
    student = results.get("student") or {}
    return {
        "overrides": overrides, "run_dir": str(run_dir), "wall_seconds": round(wall, 3),
        "train_seconds": results.get("train_seconds"),
        "epoch_seconds": round(sum(timer.train_epochs), 3) if timer else None,
        "val_seconds": [round(v, 3) for v in timer.val_passes] if timer else None,
        "steps": sum(timer.steps) if timer else None,
        # the module's own per-epoch timing, where src records it in results.json
        "results_epoch_seconds": results.get("epoch_seconds"),
        "score": student.get("score"), "student_params": student.get("params"),
        "teacher_cache": results.get("teacher_cache"),
    }


def warm_up(overrides: list[str], run_dir: Path) -> None:
    """A short untimed ``train(cfg)`` run (4 training and 2 dev batches) so that the first
    timed run does not pay the process's one-off costs (CUDA context, kernel selection,
    allocator growth, lazy imports) alone."""
    console.print("untimed warm-up run (4 training batches)")
    run_train([*overrides, "trainer.limit_train_batches=4", "trainer.limit_val_batches=2"],
              run_dir)


def prepare_tokenized(args: argparse.Namespace, tokenizer_folder: Path, data_cache: Path,
                      max_train_samples: int | None, max_eval_samples: int | None) -> None:
    """Tokenize SST-2 into ``data_cache`` before any timed run, so no run pays for it."""
    from litdistill.data import GlueDataModule
    from litdistill.models import load_tokenizer
    from litdistill.tasks import TASKS

    dm = GlueDataModule(TASKS["sst2"], glue_dir=args.glue_dir, cache_dir=str(data_cache),
                        max_train_samples=max_train_samples, max_eval_samples=max_eval_samples,
                        seed=args.seed)
    dm.set_tokenizer(load_tokenizer(str(tokenizer_folder)))
    dm.prepare_data()


def workdir(prefix: str) -> Path:
    """A fresh temp folder for runs and caches (never inside the repository)."""
    return Path(tempfile.mkdtemp(prefix=f"litdistill-bench-{prefix}-"))
