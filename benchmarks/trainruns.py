"""``train(cfg)`` runs of the benchmark scripts: shared overrides, composing, timing."""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from bench import console
from timing import EpochTimer, epoch_timer_target


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
    from litdistill.data import DataOptions
    from litdistill.models import load_tokenizer
    from litdistill.tasks import TASKS

    options = DataOptions(glue_dir=args.glue_dir, cache_dir=str(data_cache),
                          max_train_samples=max_train_samples,
                          max_eval_samples=max_eval_samples, seed=args.seed)
    options.tokenize(options.read(TASKS["sst2"]), load_tokenizer(str(tokenizer_folder)))

