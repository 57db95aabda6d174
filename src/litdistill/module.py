"""The LightningModule: a trainable student, an optional frozen teacher, the steps.

Policies live in the objects it is handed: the :class:`~litdistill.objective.Objective`
(weights, phases, schedules), the optimizer and scheduler factories (:mod:`litdistill.optim`)
and callbacks (:mod:`litdistill.callbacks`). The module keeps to the training and validation
steps, to keeping the teacher frozen and out of checkpoints, and to stopping a run whose
losses, predictions or scores went non-finite (:mod:`litdistill.finite`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

import lightning as L
import torch
from torch import Tensor, nn
from transformers import PreTrainedModel

from litdistill import metrics, optim
from litdistill.batching import LABELLED, TEACHER_LOGITS, TEACHER_PREFIX
from litdistill.errors import ConfigError, TrainingError
from litdistill.finite import FiniteWatch, diverged
from litdistill.intermediate import IntermediateTerms
from litdistill.losses import distillation_loss
from litdistill.models import freeze
from litdistill.objective import Objective, Weights
from litdistill.tasks import TaskSpec, score


def split_batch(batch: dict[str, Tensor]
                ) -> tuple[dict[str, Tensor], dict[str, Tensor], Tensor, Tensor | None]:
    """(student inputs, teacher inputs, labels, cached teacher logits or None).

    The ``labelled`` mask (present only with a transfer set) stays in ``batch``.

    The teacher reads its own tokenization (``teacher_*`` keys) when the two vocabularies
    differ, else the student's.
    """
    cached = batch.get(TEACHER_LOGITS)
    inputs = {k: v for k, v in batch.items()
              if k not in ("labels", "idx", LABELLED) and not k.startswith(TEACHER_PREFIX)}
    n = len(TEACHER_PREFIX)
    teacher = {k[n:]: v for k, v in batch.items()
               if k.startswith(TEACHER_PREFIX) and k != TEACHER_LOGITS}
    return inputs, teacher or inputs, batch["labels"], cached


class DistillationModule(L.LightningModule):
    """Train ``student`` on hard labels plus, when a teacher is given, what it teaches.

    Without a teacher this is plain fine-tuning: how teachers are fine-tuned and how the
    no-KD baseline of a student is trained.

    Args:
        student: The model being trained.
        teacher: Frozen teacher run live during training, or None (no teacher, or its
            logits arrive precomputed in the batches).
        task: The task (label count, regression flag, metrics).
        objective: What the student learns from (weights, terms, phases, schedules).
        optimizer: Partial optimizer taking the parameter groups (``_partial_: true``).
        scheduler: Partial scheduler taking ``(optimizer, num_training_steps)``, or None.
        cached_teacher: Batches carry precomputed ``teacher_logits`` (always on dev when
            the run has a teacher; on train from the teacher cache).
    """

    def __init__(
        self,
        student: PreTrainedModel,
        teacher: PreTrainedModel | None,
        task: TaskSpec,
        objective: Objective,
        optimizer: Callable[[Iterable[Any]], torch.optim.Optimizer],
        scheduler: Callable[..., Any] | None = None,
        cached_teacher: bool = False,
    ) -> None:
        super().__init__()
        # from_pretrained() returns models in eval mode and Lightning keeps submodule modes
        # as it finds them, so switch the student to train mode (dropout on) explicitly.
        self.student = student.train()
        self.teacher = freeze(teacher) if teacher is not None else None
        self.task, self.objective = task, objective
        self.optimizer_factory, self.scheduler_factory = optimizer, scheduler
        self.intermediate = None
        if objective.terms:
            if teacher is None:
                raise ConfigError("intermediate distillation terms need a teacher")
            self.intermediate = IntermediateTerms(objective.terms, student.config,
                                                  self.teacher.config)
            if self.intermediate.needs_attentions:
                # sdpa kernels return no attention maps; eager ones do (measured: not slower
                # on CPU for BERT-base-sized models).
                for model in (student, self.teacher):
                    model.set_attn_implementation("eager")
        self.val_metrics = metrics.task_metrics(task)
        self.has_teacher = teacher is not None or cached_teacher
        self.agreement = nn.ModuleList(metrics.agreement_metric(task) for _ in task.eval_splits)
        self.last_agreement: float | None = None
        self.last_val: dict[str, float] = {}
        self.last_val_step = -1  # global step of the weights last_val describes
        self.train_watch = FiniteWatch("training")
        self.val_watch = FiniteWatch("validation")
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

    # ------------------------------------------------------------------ training
    def current_weights(self) -> Weights:
        """Temperature, loss weights and active terms at this step (phase, then schedule)."""
        total = max(int(self.trainer.estimated_stepping_batches), 1) if self._trainer else 1
        phase = self.objective.phase_at(self.current_epoch)
        return self.objective.weights(phase, self.global_step / total)

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        inputs, t_inputs, labels, t_logits = split_batch(batch)
        w = self.current_weights()
        hidden = bool(w.terms)
        attentions = hidden and self.intermediate.needs_attentions and "attention" in w.terms
        s_out = self._forward(self.student, inputs, hidden, attentions)
        t_out = None
        if self.teacher is not None and hidden:
            # no_grad, not inference_mode: intermediate terms keep teacher tensors for backward.
            with torch.no_grad():
                t_out = self._forward(self.teacher, t_inputs, hidden, attentions)
            t_logits = t_out.logits if t_logits is None else t_logits
        elif self.teacher is not None and w.alpha_kd and t_logits is None:
            t_logits = self._teacher_logits(t_inputs)
        losses = distillation_loss(
            s_out.logits, t_logits if w.alpha_kd else None, labels,
            regression=self.task.is_regression, temperature=w.temperature,
            alpha_kd=w.alpha_kd, alpha_task=w.alpha_task, labelled=batch.get(LABELLED))
        if hidden:
            terms = self.intermediate(self.student, self.teacher, s_out, t_out,
                                      inputs["attention_mask"], set(w.terms))
            for name, value in terms.items():
                losses["loss"] = losses["loss"] + w.terms[name.removeprefix("loss_")] * value
            losses.update(terms)
        self.train_watch.update(losses, self.global_step)
        self._log_train(losses, w, labels.shape[0])
        return losses["loss"]

    @staticmethod
    def _forward(model: PreTrainedModel, inputs: dict[str, Tensor], hidden: bool,
                 attentions: bool) -> Any:
        if not hidden:
            return model(**inputs)
        return model(**inputs, output_hidden_states=True, output_attentions=attentions)

    def _log_train(self, losses: dict[str, Tensor], w: Weights, batch_size: int) -> None:
        every = self.trainer.log_every_n_steps if self._trainer is not None else 1
        if not every or (self.global_step + 1) % every:
            # Only the steps Lightning writes: log_dict costs ~2.7 ms of host time per call,
            # 4.4% of a launch-bound GPU step (benchmarks/profile_step.py).
            return
        self.raise_if_non_finite()  # logging syncs the values to the host anyway
        logged = {f"train/{k}": v.detach() for k, v in losses.items()}
        if self.objective.varies:
            logged["train/temperature"] = torch.tensor(float(w.temperature))
        self.log_dict(logged, on_step=True, on_epoch=False, batch_size=batch_size)

    # ------------------------------------------------------------------ validation
    def validation_step(self, batch: dict[str, Tensor], batch_idx: int,
                        dataloader_idx: int = 0) -> None:
        inputs, t_inputs, labels, t_logits = split_batch(batch)
        logits = self.student(**inputs).logits
        self.val_watch.update({"student logits": logits}, self.global_step)
        preds = metrics.predictions(self.task, logits)
        self.val_metrics[dataloader_idx].update(preds, labels)
        if t_logits is None and self.teacher is not None:
            t_logits = self._teacher_logits(t_inputs)
        if t_logits is not None:
            # Fidelity: how often the student predicts what the teacher predicts.
            self.agreement[dataloader_idx].update(preds, metrics.predictions(self.task,
                                                                             t_logits))

    def on_validation_epoch_end(self) -> None:
        self.raise_if_non_finite()  # before any checkpoint callback sees the score
        values = metrics.compute(self.task, self.val_metrics)
        values["score"] = score(values)
        if bad := [k for k, v in values.items() if not math.isfinite(v)]:
            # Finite predictions with an undefined metric, e.g. Pearson of a constant.
            raise TrainingError(diverged(f"validation {', '.join(bad)} non-finite at step "
                                         f"{self.trainer.global_step}"))
        self.last_val, self.last_val_step = values, self.trainer.global_step
        # Values are already reduced over ranks by torchmetrics.compute().
        for key, value in values.items():
            self.log(f"val/{key}", value, prog_bar=key == "score")
        if self.has_teacher:
            agreements = [float(m.compute()) for m in self.agreement]
            for m in self.agreement:
                m.reset()
            self.last_agreement = sum(agreements) / len(agreements)
            self.log("val/agreement", self.last_agreement)

    def on_train_epoch_end(self) -> None:
        self.raise_if_non_finite()

    def raise_if_non_finite(self) -> None:
        """Raise :class:`TrainingError` on every rank once any rank saw a non-finite loss
        term or validation prediction (a host sync, and a collective under DDP)."""
        problems = [p for w in (self.train_watch, self.val_watch) if (p := w.failure())]
        anywhere = bool(problems)
        if self._trainer is not None:
            anywhere = self.trainer.strategy.reduce_boolean_decision(anywhere, all=False)
        if anywhere:
            raise TrainingError(diverged("; ".join(problems) or "another rank's values were "
                                         "non-finite"))

    # ------------------------------------------------------------------ optimisation
    def configure_optimizers(self) -> Any:
        """Optimizer (and per-step scheduler) over the student's parameters only."""
        attached = self._trainer is not None
        optimizer = optim.build_optimizer(
            self.optimizer_factory, self.trainable_named_parameters(),
            clips=bool(attached and self.trainer.gradient_clip_val),
            mixed=attached and "mixed" in str(self.trainer.precision))
        if not attached:
            return optimizer
        scheduler = optim.build_scheduler(
            optimizer, self.objective, self.scheduler_factory,
            int(self.trainer.estimated_stepping_batches), int(self.trainer.max_epochs or 1))
        if scheduler is None:
            return optimizer
        return {"optimizer": optimizer,
                "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    # ------------------------------------------------------------------ checkpoints
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Keep the frozen teacher out of checkpoints: it is not trainable state; never write
        a checkpoint of weights that went non-finite."""
        self.raise_if_non_finite()
        state = checkpoint["state_dict"]
        for key in [k for k in state if k.startswith("teacher.")]:
            del state[key]

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Non-strict loading skips the teacher only; any other missing key is an error."""
        expected = {k for k in self.state_dict() if not k.startswith("teacher.")}
        if missing := sorted(expected - set(checkpoint["state_dict"])):
            raise RuntimeError(f"checkpoint lacks student weights: {missing[:5]}")
