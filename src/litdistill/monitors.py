"""Per-run figures for every logger (W&B, CSV, TensorBoard), and the run's close in W&B.

:class:`RunMonitor` (``conf/callbacks/default.yaml``) logs, at the trainer's logging interval,
the learning rate of each parameter group, the gradient norm and the training throughput;
after every validation its throughput, ``val/retention`` (student / teacher dev score) and,
once, the teacher's dev score; each epoch's training seconds. It also keeps the last
validation's dev logits of a distillation run for :func:`finish_run`, which ``train.finish``
calls: the headline results as W&B summary keys, and ``disagreements.csv`` (+ a W&B Table)
of the dev rows where student and teacher disagree most.

Host cost: one token count per batch stays on the device (``+=``, no sync); everything else
happens once per logged step or validation.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import datasets
import lightning as L
import numpy as np
import torch
from lightning.pytorch.loggers import Logger, WandbLogger
from torch import Tensor

from litdistill import disagreement, metrics
from litdistill.batching import TEACHER_LOGITS
from litdistill.tasks import TaskSpec

log = logging.getLogger(__name__)


class _Window:
    """Rows, non-padding tokens and seconds since the window opened."""

    def __init__(self) -> None:
        self.open()

    def open(self) -> None:
        self.start = time.perf_counter()
        self.samples = 0
        self.tokens: Tensor | int = 0  # a device tensor: summing it needs no host sync
        self.paused = 0.0  # seconds inside the window that were not this kind of work

    def add(self, batch: dict[str, Tensor]) -> None:
        self.samples += int(batch["input_ids"].shape[0])
        self.tokens = self.tokens + batch["attention_mask"].sum()

    def rates(self, prefix: str) -> dict[str, float]:
        seconds = max(time.perf_counter() - self.start - self.paused, 1e-9)
        return {f"{prefix}/samples_per_sec": self.samples / seconds,
                f"{prefix}/tokens_per_sec": float(self.tokens) / seconds}


def teacher_dev_score(trainer: L.Trainer) -> dict[str, float] | None:
    """The teacher's dev metrics and score, from the dev logits the batches carry (what
    ``teachers.check_teacher`` scored; no forward pass). None without a teacher."""
    dm = getattr(trainer, "datamodule", None)
    splits, task = getattr(dm, "splits", None) or {}, getattr(dm, "task", None)
    evals = list(task.eval_splits) if splits and task is not None else []
    if not evals or any(TEACHER_LOGITS not in splits[s].column_names for s in evals):
        return None
    return metrics.evaluate(dm.task, [torch.as_tensor(splits[s][TEACHER_LOGITS]) for s in evals],
                            [torch.as_tensor(splits[s]["label"]) for s in evals])


def log_all(trainer: L.Trainer, values: dict[str, float], step: int | None = None) -> None:
    """``values`` to every logger of the trainer (rank zero)."""
    if not trainer.is_global_zero or not values:
        return
    if step is None:
        # The step Lightning logs `self.log` values at (it advances after an epoch-end
        # validation, global_step before it), so a CSV row holds val/score and val/retention.
        step = getattr(trainer.fit_loop.epoch_loop, "_batches_that_stepped",
                       trainer.global_step)
    for logger in trainer.loggers:
        logger.log_metrics(values, step=step)


class RunMonitor(L.Callback):
    """Learning rate, gradient norm, throughput, epoch time, retention; the size of the
    disagreement table :func:`finish_run` writes.

    Args:
        disagreements: Rows of the disagreement table (0: no table).
    """

    def __init__(self, disagreements: int = 200) -> None:
        if disagreements < 0:
            raise ValueError(f"disagreements={disagreements}: must be >= 0")
        self.limit = disagreements
        self.teacher: dict[str, float] | None = None
        self.train, self.eval = _Window(), _Window()
        self._epoch_start: float | None = None
        self._eval_seconds = 0.0

    # ------------------------------------------------------------------ training
    def on_fit_start(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        self.teacher = teacher_dev_score(trainer)
        # Once per run: a resumed run logged it before its checkpoint.
        if self.teacher is not None and not trainer.ckpt_path:
            log_all(trainer, {f"teacher/{k}": v for k, v in self.teacher.items()})

    def on_train_epoch_start(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        self._epoch_start, self._eval_seconds = time.perf_counter(), 0.0
        self.train.open()

    def on_train_batch_start(self, trainer: L.Trainer, module: L.LightningModule,
                             batch: dict[str, Tensor], batch_idx: int) -> None:
        self.train.add(batch)

    def on_before_optimizer_step(self, trainer: L.Trainer, module: L.LightningModule,
                                 optimizer: torch.optim.Optimizer) -> None:
        every = trainer.log_every_n_steps
        # The steps the module logs its losses at (module._log_train), so rows line up.
        if not trainer.loggers or not every or (trainer.global_step + 1) % every:
            return
        values = self.train.rates("train")
        grads = [p.grad for g in optimizer.param_groups for p in g["params"]
                 if p.grad is not None]
        if grads:
            # Before clipping (Lightning clips after this hook): the norm the clip sees.
            values["train/grad_norm"] = float(torch.nn.utils.get_total_norm(grads))
        for i, group in enumerate(optimizer.param_groups):
            values[f"train/lr_pg{i}"] = float(group["lr"])
        log_all(trainer, values)
        self.train.open()

    def on_train_epoch_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        if self._epoch_start is not None:
            seconds = time.perf_counter() - self._epoch_start - self._eval_seconds
            log_all(trainer, {"train/epoch_seconds": seconds})
            self._epoch_start = None

    # ------------------------------------------------------------------ validation
    def on_validation_epoch_start(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        self.eval.open()

    def on_validation_batch_start(self, trainer: L.Trainer, module: L.LightningModule,
                                  batch: dict[str, Tensor], batch_idx: int,
                                  dataloader_idx: int = 0) -> None:
        self.eval.add(batch)

    def on_validation_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        seconds = time.perf_counter() - self.eval.start
        self._eval_seconds += seconds
        self.train.paused += seconds  # validation inside a training window
        if trainer.sanity_checking:
            return
        values = self.eval.rates("val")
        score = trainer.callback_metrics.get("val/score")
        if self.teacher and score is not None and self.teacher["score"]:
            values["val/retention"] = float(score) / self.teacher["score"]
        log_all(trainer, values)



def disagreement_rows(predictions: dict[str, np.ndarray], raw: datasets.Dataset,
                      task: TaskSpec, limit: int) -> list[dict[str, Any]] | None:
    """The disagreement table of the exported student on the first eval split, from the
    run's dev predictions (:mod:`litdistill.outputs`); None without teacher logits."""
    split = task.eval_splits[0]
    if not limit or f"teacher.{split}" not in predictions:
        return None
    idx = predictions[f"idx.{split}"]
    position = {int(i): p for p, i in enumerate(raw["idx"])}
    columns = [raw[f] for f in task.text_fields]
    texts = [" ||| ".join(c[position[int(i)]] for c in columns) for i in idx]
    return disagreement.disagreements(
        texts, torch.as_tensor(predictions[f"labels.{split}"]),
        torch.as_tensor(predictions[f"teacher.{split}"]),
        torch.as_tensor(predictions[f"student.{split}"]), task, limit, idx=idx.tolist())


def headline(results: dict[str, Any]) -> dict[str, Any]:
    """The keys a W&B runs table shows first: score, teacher score, retention, agreement,
    params, MB, train seconds, status (the rest of results.json is there flattened)."""
    from litdistill.model_files import size_mb

    student, teacher = results.get("student") or {}, results.get("teacher") or {}
    return {"score": student.get("score"), "teacher_score": teacher.get("score"),
            "retention": results.get("retention"), "agreement": student.get("agreement"),
            "params": student.get("params"), "size_mb": size_mb(results.get("student_dir")),
            "train_seconds": results.get("train_seconds"), "status": results.get("status")}


def table_size(trainer: L.Trainer) -> int:
    """Rows of the disagreement table: the RunMonitor's setting (0 without one)."""
    monitor = next((c for c in trainer.callbacks if isinstance(c, RunMonitor)), None)
    return monitor.limit if monitor is not None else 0


def finish_run(loggers: list[Logger], results: dict[str, Any],
               rows: list[dict[str, Any]] | None) -> None:
    """After ``runs.log_results``: headline keys in the W&B summary; the disagreement table
    ``rows`` (:func:`disagreement_rows`) as ``<run_dir>/disagreements.csv`` and a W&B Table."""
    if rows is not None:
        path = disagreement.write_csv(Path(results["run_dir"]) / "disagreements.csv", rows)
        results["disagreements"] = str(path)
    for logger in loggers:
        if not isinstance(logger, WandbLogger):
            continue
        run = logger.experiment
        run.summary.update({k: v for k, v in headline(results).items() if v is not None})
        if rows is not None:
            import wandb

            table = wandb.Table(columns=disagreement.COLUMNS,
                                data=[[r[c] for c in disagreement.COLUMNS] for r in rows])
            run.log({"disagreements": table})
        if getattr(logger, "log_student", False):
            log_student(run, results)


def log_student(run: Any, results: dict[str, Any]) -> None:
    """The exported student (and any ONNX graph in the run dir) as a ``model`` artifact of
    ``run``, with the headline results and the choices as metadata."""
    import wandb

    run_dir, student_dir = Path(results["run_dir"]), results.get("student_dir")
    metadata = {**{k: v for k, v in headline(results).items() if v is not None},
                "task": results.get("task"), "choices": results.get("choices"),
                "overrides": results.get("overrides")}
    artifact = wandb.Artifact(f"student-{run.id}", type="model", metadata=metadata)
    if student_dir and Path(student_dir).is_dir():
        artifact.add_dir(student_dir, name="student")
    for graph in sorted(run_dir.rglob("*.onnx")):
        artifact.add_file(str(graph), name=f"onnx/{graph.relative_to(run_dir)}")
    run.log_artifact(artifact)
