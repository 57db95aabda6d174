"""The LightningModule: a trainable student, an optional frozen teacher, GLUE metrics."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import lightning as L
import torch
import torchmetrics
from torch import Tensor, nn
from transformers import PreTrainedModel, get_linear_schedule_with_warmup

from litdistill.batching import TEACHER_LOGITS, TEACHER_PREFIX
from litdistill.errors import ConfigError
from litdistill.intermediate import IntermediateTerms
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


def evaluate(task: TaskSpec, logits: Sequence[Tensor], labels: Sequence[Tensor]
             ) -> dict[str, float]:
    """The task's metrics and ``score`` of whole-split predictions, one entry per eval split
    (the names the module logs; NaN, e.g. Pearson of a constant, counts as 0)."""
    multi = len(task.eval_splits) > 1
    values: dict[str, float] = {}
    for split, split_logits, split_labels, collection in zip(
            task.eval_splits, logits, labels, task_metrics(task), strict=True):
        preds = (split_logits.squeeze(-1).float() if task.is_regression
                 else split_logits.argmax(-1))
        for name, value in collection(preds, split_labels).items():
            value = float(value)
            values[f"{name}_{split_suffix(split)}" if multi else name] = \
                0.0 if value != value else value
    values["score"] = score(values)
    return values


def agreement_metric(task: TaskSpec) -> torchmetrics.Metric:
    """Student-teacher agreement on dev: the fraction of equal predicted classes, or for
    regression the Pearson r between the two models' predictions."""
    if task.is_regression:
        return torchmetrics.PearsonCorrCoef()
    return torchmetrics.Accuracy(task="multiclass", num_classes=task.num_labels)


def linear_warmup_decay(optimizer: torch.optim.Optimizer, num_training_steps: int,
                        warmup_ratio: float = 0.1) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up over ``warmup_ratio`` of the steps, then linear decay to zero (BERT)."""
    warmup = int(warmup_ratio * num_training_steps)
    return get_linear_schedule_with_warmup(optimizer, warmup, num_training_steps)


def scheduled(value: float, schedule: Mapping[str, float] | None, progress: float) -> float:
    """A constant, or a linear ramp ``{start, end}`` over training progress in [0, 1]
    (TextBrewer-style temperature and loss-weight schedules)."""
    if not schedule:
        return value
    start, end = float(schedule["start"]), float(schedule["end"])
    return start + (end - start) * min(max(progress, 0.0), 1.0)


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
        terms: Intermediate terms ``{name: {weight, ...}}`` (see
            :class:`~litdistill.intermediate.IntermediateTerms`).
        phases: Sequential phases of the run, each ``{name, epochs, lr, alpha_kd,
            alpha_task, terms: [active term names]}``; unset keys keep the values above.
            TinyBERT's intermediate-then-prediction distillation is two phases.
        schedules: Linear ramps ``{start, end}`` over the run for ``temperature``,
            ``alpha_kd``, ``alpha_task`` or a term name (its weight).
        cached_teacher: Batches carry precomputed ``teacher_logits`` (always on dev when
            there is a teacher; on train from the teacher cache, and then the teacher itself
            is None).
    """

    def __init__(
        self,
        student: PreTrainedModel,
        task: TaskSpec,
        optimizer: Callable[[Iterable[Any]], torch.optim.Optimizer],
        scheduler: Callable[..., Any] | None = None,
        teacher: PreTrainedModel | None = None,
        temperature: float = 1.0,
        alpha_kd: float = 0.5,
        alpha_task: float = 0.5,
        terms: Mapping[str, Mapping[str, Any]] | None = None,
        phases: Sequence[Mapping[str, Any]] | None = None,
        schedules: Mapping[str, Mapping[str, float]] | None = None,
        cached_teacher: bool = False,
    ) -> None:
        super().__init__()
        # from_pretrained() returns models in eval mode and Lightning keeps submodule modes
        # as it finds them, so switch the student to train mode (dropout on) explicitly.
        self.student = student.train()
        self.teacher = freeze(teacher) if teacher is not None else None
        self.task = task
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self.temperature = temperature
        self.alpha_kd = alpha_kd
        self.alpha_task = alpha_task
        self.phases = [dict(p) for p in phases or []]
        self.schedules = {k: dict(v) for k, v in (schedules or {}).items()}
        self.phase_starts: list[tuple[int, str]] = []  # (global step, phase) as entered
        self.epoch_seconds: list[float] = []  # wall time of each training epoch (no eval)
        self._epoch_start: float | None = None
        self.intermediate = None
        if terms:
            if teacher is None:
                raise ConfigError("intermediate distillation terms need a teacher")
            self.intermediate = IntermediateTerms(terms, student.config, self.teacher.config)
            if self.intermediate.needs_attentions:
                # sdpa kernels return no attention maps; eager ones do (measured: not slower
                # on CPU for BERT-base-sized models).
                for model in (student, self.teacher):
                    model.set_attn_implementation("eager")
        self.val_metrics = task_metrics(task)
        has_teacher = teacher is not None or cached_teacher
        self.teacher_metrics = task_metrics(task) if has_teacher else None
        self.agreement = nn.ModuleList(agreement_metric(task) for _ in task.eval_splits)
        self.last_agreement: float | None = None
        self.teacher_scores: dict[str, float] | None = None
        self.last_val: dict[str, float] = {}
        self.last_val_step = -1  # global step of the weights last_val describes
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
        # inference_mode skips autograd bookkeeping entirely; the clone outside it makes a
        # normal tensor that the KL term may save for backward. float(): a bf16 teacher.
        with torch.inference_mode():
            logits = self.teacher(**inputs).logits
        return logits.float().clone()

    def on_fit_start(self) -> None:
        """Under bf16 autocast run a live teacher in bf16: half the weight memory, and its
        matmuls run in bf16 anyway."""
        if self.teacher is not None and str(self.trainer.precision).startswith("bf16") \
                and self.intermediate is None:
            self.teacher.to(torch.bfloat16)

    # ------------------------------------------------------------------ steps
    @staticmethod
    def _split_batch(batch: dict[str, Tensor]
                     ) -> tuple[dict[str, Tensor], dict[str, Tensor], Tensor, Tensor | None]:
        """(student inputs, teacher inputs, labels, cached teacher logits or None); the
        teacher reads its own tokenization (``teacher_*`` keys) when the two vocabularies
        differ, else the student's."""
        cached = batch.get(TEACHER_LOGITS)
        inputs = {k: v for k, v in batch.items()
                  if k not in ("labels", "idx") and not k.startswith(TEACHER_PREFIX)}
        n = len(TEACHER_PREFIX)
        teacher = {k[n:]: v for k, v in batch.items()
                   if k.startswith(TEACHER_PREFIX) and k != TEACHER_LOGITS}
        return inputs, teacher or inputs, batch["labels"], cached

    # ------------------------------------------------------------------ phases, schedules
    def current_phase(self) -> dict[str, Any]:
        """The phase the current epoch belongs to ({} without phases)."""
        end = 0
        for phase in self.phases:
            end += int(phase["epochs"])
            if self.current_epoch < end:
                return phase
        return self.phases[-1] if self.phases else {}

    def current_weights(self) -> dict[str, Any]:
        """Temperature, loss weights and active terms at this step (phase, then schedule)."""
        phase = self.current_phase()
        total = max(int(self.trainer.estimated_stepping_batches), 1) if self._trainer else 1
        progress = self.global_step / total
        weights: dict[str, Any] = {}
        for key in ("temperature", "alpha_kd", "alpha_task"):
            base = phase.get(key, getattr(self, key))
            weights[key] = scheduled(base, self.schedules.get(key), progress)
        terms = self.intermediate.terms if self.intermediate is not None else {}
        active = phase.get("terms", list(terms))
        weights["terms"] = {n: scheduled(float(terms[n].get("weight", 1.0)),
                                         self.schedules.get(n), progress) for n in active}
        return weights

    def _end_epoch_timer(self) -> None:
        if self._epoch_start is not None:
            if self.device.type == "cuda":
                torch.cuda.synchronize(self.device)
            self.epoch_seconds.append(round(time.perf_counter() - self._epoch_start, 3))
            self._epoch_start = None

    def on_validation_epoch_start(self) -> None:
        if not self.trainer.sanity_checking:
            self._end_epoch_timer()  # validation inside a training epoch is not training time

    def on_train_epoch_end(self) -> None:
        self._end_epoch_timer()

    def on_train_epoch_start(self) -> None:
        self._epoch_start = time.perf_counter()
        phase = self.current_phase()
        if phase and (not self.phase_starts or self.phase_starts[-1][1] != phase["name"]):
            self.phase_starts.append((self.global_step, phase["name"]))

    # ------------------------------------------------------------------ steps
    def _forward(self, model: PreTrainedModel, inputs: dict[str, Tensor], hidden: bool,
                 attentions: bool) -> Any:
        if not hidden:
            return model(**inputs)
        return model(**inputs, output_hidden_states=True, output_attentions=attentions)

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        inputs, t_inputs, labels, t_logits = self._split_batch(batch)
        w = self.current_weights()
        hidden = bool(w["terms"])
        attentions = hidden and self.intermediate.needs_attentions and "attention" in w["terms"]
        s_out = self._forward(self.student, inputs, hidden, attentions)
        t_out = None
        if self.teacher is not None and hidden:
            # no_grad, not inference_mode: intermediate terms keep teacher tensors for backward.
            with torch.no_grad():
                t_out = self._forward(self.teacher, t_inputs, hidden, attentions)
            t_logits = t_out.logits if t_logits is None else t_logits
        elif self.teacher is not None and w["alpha_kd"] and t_logits is None:
            t_logits = self._teacher_logits(t_inputs)
        losses = distillation_loss(
            s_out.logits, t_logits if w["alpha_kd"] else None,
            labels, regression=self.task.is_regression, temperature=w["temperature"],
            alpha_kd=w["alpha_kd"], alpha_task=w["alpha_task"],
        )
        if hidden:
            terms = self.intermediate(self.student, self.teacher, s_out, t_out,
                                      inputs["attention_mask"], set(w["terms"]))
            for name, value in terms.items():
                losses["loss"] = losses["loss"] + w["terms"][name.removeprefix("loss_")] * value
            losses.update(terms)
        logged = {f"train/{k}": v.detach() for k, v in losses.items()}
        if self.schedules or self.phases:
            logged["train/temperature"] = torch.tensor(float(w["temperature"]))
        every = self.trainer.log_every_n_steps if self._trainer is not None else 1
        if every and (self.global_step + 1) % every == 0:
            # Only the steps Lightning writes: log_dict costs ~2.7 ms of host time per call,
            # 4.4% of a launch-bound GPU step (benchmarks/profile_step.py).
            self.log_dict(logged, on_step=True, on_epoch=False, batch_size=labels.shape[0])
        return losses["loss"]

    def _predictions(self, logits: Tensor) -> Tensor:
        return logits.squeeze(-1).float() if self.task.is_regression else logits.argmax(-1)

    def validation_step(self, batch: dict[str, Tensor], batch_idx: int,
                        dataloader_idx: int = 0) -> None:
        inputs, t_inputs, labels, t_logits = self._split_batch(batch)
        preds = self._predictions(self.student(**inputs).logits)
        self.val_metrics[dataloader_idx].update(preds, labels)
        if t_logits is None and self.teacher is not None:
            t_logits = self._teacher_logits(t_inputs)
        if t_logits is None:
            return
        teacher_preds = self._predictions(t_logits)
        # Fidelity: how often the student predicts what the teacher predicts.
        self.agreement[dataloader_idx].update(preds, teacher_preds)
        if self._scoring_teacher:
            self.teacher_metrics[dataloader_idx].update(teacher_preds, labels)

    @property
    def _scoring_teacher(self) -> bool:
        # The teacher is scored once, on the first real (not sanity-check) validation pass.
        return (self.teacher_metrics is not None and self.teacher_scores is None
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
        self.last_val_step = self.trainer.global_step
        # Values are already reduced over ranks by torchmetrics.compute().
        for key, value in metrics.items():
            self.log(f"val/{key}", value, prog_bar=key == "score")
        if self.teacher_metrics is not None:
            values = [float(m.compute()) for m in self.agreement]
            for m in self.agreement:
                m.reset()
            self.last_agreement = sum(values) / len(values)
            self.log("val/agreement", self.last_agreement)
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
        groups = [g for g in groups if g["params"]]
        # Fused AdamW: one kernel per step instead of a loop over parameter tensors (the step
        # fell from 12-16% to 3.7% of a CPU KD step, benchmarks/profile_step.py). Lightning
        # refuses to clip the gradients of an optimizer that unscales them itself (fused)
        # under mixed precision, even bf16: foreach kernels then.
        clips = bool(self._trainer is not None and self.trainer.gradient_clip_val)
        mixed = self._trainer is not None and "mixed" in str(self.trainer.precision)
        try:
            optimizer = self.optimizer_factory(
                groups, **({"foreach": True} if clips and mixed else {"fused": True}))
        except (TypeError, RuntimeError):  # an optimizer without these options
            optimizer = self.optimizer_factory(groups)
        if self.phases:
            return {"optimizer": optimizer,
                    "lr_scheduler": {"scheduler": self._phase_schedule(optimizer),
                                     "interval": "step"}}
        if self.scheduler_factory is None:
            return optimizer
        total = int(self.trainer.estimated_stepping_batches)
        scheduler = self.scheduler_factory(optimizer, num_training_steps=max(total, 1))
        return {"optimizer": optimizer,
                "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def _phase_schedule(self, optimizer: torch.optim.Optimizer) -> Any:
        """Each phase: its own peak lr (``lr`` x the optimizer's), 10% warm-up, linear decay."""
        base_lr = optimizer.param_groups[0]["lr"]
        per_epoch = max(int(self.trainer.estimated_stepping_batches)
                        // max(int(self.trainer.max_epochs or 1), 1), 1)
        bounds, start = [], 0
        for phase in self.phases:
            steps = int(phase["epochs"]) * per_epoch
            bounds.append((start, steps, float(phase.get("lr", base_lr)) / base_lr))
            start += steps

        def factor(step: int) -> float:
            for begin, steps, scale in bounds:
                if step < begin + steps or (begin, steps, scale) == bounds[-1]:
                    t, warm = step - begin, max(int(0.1 * steps), 1)
                    ramp = t / warm if t < warm else max(steps - t, 0) / max(steps - warm, 1)
                    return scale * ramp
            return 0.0

        return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)

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
