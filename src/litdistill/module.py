"""The LightningModule: a trainable student, an optional frozen teacher, GLUE metrics."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import lightning as L
import torch
import torchmetrics
from torch import Tensor, nn
from transformers import PreTrainedModel, get_linear_schedule_with_warmup

from litdistill.losses import distillation_loss
from litdistill.models import freeze
from litdistill.tasks import TaskSpec, score, split_suffix

_METRIC_FACTORIES: dict[str, Callable[[int], torchmetrics.Metric]] = {
    "accuracy": lambda c: torchmetrics.Accuracy(task="multiclass", num_classes=c),
    "f1": lambda c: torchmetrics.F1Score(task="binary"),
    "matthews_correlation": lambda c: torchmetrics.MatthewsCorrCoef(task="binary"),
    "pearson": lambda c: torchmetrics.PearsonCorrCoef(),
    "spearmanr": lambda c: torchmetrics.SpearmanCorrCoef(),
}
# Weight decay skips biases and norms, as BERT's original optimizer does.
_NO_DECAY = ("bias", "LayerNorm.weight", "layer_norm.weight", "norm.weight")


def task_metrics(task: TaskSpec) -> nn.ModuleList:
    """One MetricCollection per eval split of the task (MNLI: matched, mismatched)."""
    return nn.ModuleList(
        torchmetrics.MetricCollection({m: _METRIC_FACTORIES[m](task.num_labels)
                                       for m in task.metrics})
        for _ in task.eval_splits
    )


def linear_warmup_decay(optimizer: torch.optim.Optimizer, num_training_steps: int,
                        warmup_ratio: float = 0.1) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up over ``warmup_ratio`` of the steps, then linear decay to zero (BERT)."""
    warmup = int(warmup_ratio * num_training_steps)
    return get_linear_schedule_with_warmup(optimizer, warmup, num_training_steps)


class DistillationModule(L.LightningModule):
    """Train ``student`` on hard labels plus, when a teacher is given, its soft targets.

    Without a teacher this is plain fine-tuning: how teachers are fine-tuned and how the
    no-KD baseline of a student is trained.

    Args:
        student: The model being trained.
        task: The task (label count, regression flag, metrics).
        optimizer: Partial optimizer taking the parameter groups (``_partial_: true``).
        scheduler: Partial scheduler taking ``(optimizer, num_training_steps)``, or None.
        teacher: Frozen teacher, or None.
        temperature: KD temperature T.
        alpha_kd: Weight of the KD term.
        alpha_task: Weight of the hard-label term.
    """

    def __init__(
        self,
        student: PreTrainedModel,
        task: TaskSpec,
        optimizer: Callable[[Iterable[Any]], torch.optim.Optimizer],
        scheduler: Callable[..., Any] | None = None,
        teacher: PreTrainedModel | None = None,
        temperature: float = 1.0,
        alpha_kd: float = 1.0,
        alpha_task: float = 0.0,
    ) -> None:
        super().__init__()
        self.student = student
        self.teacher = freeze(teacher) if teacher is not None else None
        self.task = task
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self.temperature = temperature
        self.alpha_kd = alpha_kd
        self.alpha_task = alpha_task
        self.val_metrics = task_metrics(task)
        self.teacher_metrics = task_metrics(task) if teacher is not None else None
        self.teacher_scores: dict[str, float] | None = None
        self.last_val: dict[str, float] = {}
        # The teacher is never written to checkpoints (it is frozen and has its own folder),
        # so loading must tolerate its absence; on_load_checkpoint checks the rest.
        self.strict_loading = False

    # ------------------------------------------------------------------ teacher is frozen
    def train(self, mode: bool = True) -> DistillationModule:
        """Switch the student's mode; the teacher stays in eval mode (no dropout) always."""
        super().train(mode)
        if self.teacher is not None:
            self.teacher.eval()
        return self

    def trainable_named_parameters(self) -> list[tuple[str, nn.Parameter]]:
        """Parameters the optimizer sees: everything outside the teacher that wants grads."""
        return [(n, p) for n, p in self.named_parameters()
                if p.requires_grad and not n.startswith("teacher.")]

    def _teacher_logits(self, inputs: dict[str, Tensor]) -> Tensor:
        # no_grad rather than inference_mode: the KL term saves teacher probabilities for
        # backward, which inference tensors are not allowed to be.
        with torch.no_grad():
            return self.teacher(**inputs).logits

    # ------------------------------------------------------------------ steps
    @staticmethod
    def _split_batch(batch: dict[str, Tensor]) -> tuple[dict[str, Tensor], Tensor]:
        inputs = {k: v for k, v in batch.items() if k not in ("labels", "idx")}
        return inputs, batch["labels"]

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        inputs, labels = self._split_batch(batch)
        student_logits = self.student(**inputs).logits  # (B, C)
        teacher_logits = None
        if self.teacher is not None and self.alpha_kd:
            teacher_logits = self._teacher_logits(inputs)  # (B, C)
        losses = distillation_loss(
            student_logits, teacher_logits, labels, regression=self.task.is_regression,
            temperature=self.temperature, alpha_kd=self.alpha_kd, alpha_task=self.alpha_task,
        )
        self.log_dict({f"train/{k}": v.detach() for k, v in losses.items()},
                      on_step=True, on_epoch=False, batch_size=labels.shape[0])
        return losses["loss"]

    def _predictions(self, logits: Tensor) -> Tensor:
        return logits.squeeze(-1).float() if self.task.is_regression else logits.argmax(-1)

    def validation_step(self, batch: dict[str, Tensor], batch_idx: int,
                        dataloader_idx: int = 0) -> None:
        inputs, labels = self._split_batch(batch)
        preds = self._predictions(self.student(**inputs).logits)
        self.val_metrics[dataloader_idx].update(preds, labels)
        if self._scoring_teacher:
            teacher_preds = self._predictions(self._teacher_logits(inputs))
            self.teacher_metrics[dataloader_idx].update(teacher_preds, labels)

    @property
    def _scoring_teacher(self) -> bool:
        # The teacher is scored once, on the first real (not sanity-check) validation pass.
        return (self.teacher is not None and self.teacher_scores is None
                and not self.trainer.sanity_checking)

    def _compute(self, collections: nn.ModuleList) -> dict[str, float]:
        values: dict[str, float] = {}
        multi = len(self.task.eval_splits) > 1
        for split, collection in zip(self.task.eval_splits, collections, strict=True):
            for name, value in collection.compute().items():
                key = f"{name}_{split_suffix(split)}" if multi else name
                values[key] = float(value)
            collection.reset()
        return values

    def on_validation_epoch_end(self) -> None:
        scoring_teacher = self._scoring_teacher
        metrics = self._compute(self.val_metrics)
        metrics["score"] = score(metrics)
        self.last_val = metrics
        # Values are already reduced over ranks by torchmetrics.compute().
        for key, value in metrics.items():
            self.log(f"val/{key}", value, prog_bar=key == "score")
        if scoring_teacher:
            teacher = self._compute(self.teacher_metrics)
            teacher["score"] = score(teacher)
            self.teacher_scores = teacher
            self.log_dict({f"val/teacher_{k}": v for k, v in teacher.items()})

    # ------------------------------------------------------------------ optimisation
    def configure_optimizers(self) -> Any:
        """Optimizer (and per-step scheduler) over the student's parameters only."""
        params = self.trainable_named_parameters()
        groups = [
            {"params": [p for n, p in params if not n.endswith(_NO_DECAY)]},
            {"params": [p for n, p in params if n.endswith(_NO_DECAY)], "weight_decay": 0.0},
        ]
        optimizer = self.optimizer_factory([g for g in groups if g["params"]])
        if self.scheduler_factory is None:
            return optimizer
        total = int(self.trainer.estimated_stepping_batches)
        scheduler = self.scheduler_factory(optimizer, num_training_steps=max(total, 1))
        return {"optimizer": optimizer,
                "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    # ------------------------------------------------------------------ checkpoints
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Keep the frozen teacher out of checkpoints: it is not trainable state."""
        state = checkpoint["state_dict"]
        for key in [k for k in state if k.startswith("teacher.")]:
            del state[key]

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Non-strict loading skips the teacher only; any other missing key is an error."""
        expected = {k for k in self.state_dict() if not k.startswith("teacher.")}
        if missing := sorted(expected - set(checkpoint["state_dict"])):
            raise RuntimeError(f"checkpoint lacks student weights: {missing[:5]}")
