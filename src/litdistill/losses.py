"""Distillation losses as pure functions: tensors in, scalar out, no state.

The convention, once for the whole project (Hinton et al. 2015, "Distilling the Knowledge in
a Neural Network"; the same as HF's DistilBERT ``distiller.py``)::

    kd = T^2 * KL(softmax(z_t / T) || softmax(z_s / T))        averaged over the batch

with ``reduction="batchmean"`` (sum over classes, mean over examples: the true KL per
example). The factor T^2 keeps the gradient's scale independent of T:
d kd / d z_s = T * (softmax(z_s / T) - softmax(z_t / T)), and for large T the bracket is
about (z_s - z_t) / (C * T) for zero-mean logits over C classes, so the gradient tends to
(z_s - z_t) / C whatever T is (without T^2 it would shrink like 1 / T^2).
The total training loss is ``alpha_kd * kd + alpha_task * task``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def kd_loss(student_logits: Tensor, teacher_logits: Tensor, temperature: float = 1.0) -> Tensor:
    """Soft-target KL divergence, Hinton et al. 2015, times T^2.

    ``T^2 * sum_c p_t(c) (log p_t(c) - log p_s(c))``, averaged over the batch, where
    ``p = softmax(z / T)``.

    Args:
        student_logits: (B, C) student logits (carry gradients).
        teacher_logits: (B, C) teacher logits (no gradient flows into them).
        temperature: Softening temperature T > 0.

    Returns:
        Scalar loss; zero when both logits are equal.
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    if student_logits.shape != teacher_logits.shape:
        raise ValueError(f"logit shapes differ: student {tuple(student_logits.shape)} vs "
                         f"teacher {tuple(teacher_logits.shape)}")
    # Log-space in float32 for both sides: stable even for bf16 logits and peaked teachers.
    log_p_s = F.log_softmax(student_logits.float() / temperature, dim=-1)
    log_p_t = F.log_softmax(teacher_logits.detach().float() / temperature, dim=-1)
    kl = F.kl_div(log_p_s, log_p_t, reduction="batchmean", log_target=True)
    return kl * temperature**2


def regression_kd_loss(student_pred: Tensor, teacher_pred: Tensor) -> Tensor:
    """MSE to the teacher's prediction, for regression tasks (no temperature applies).

    Args:
        student_pred: (B,) or (B, 1) student outputs.
        teacher_pred: Same shape, teacher outputs.
    """
    return F.mse_loss(student_pred.float().view(-1), teacher_pred.detach().float().view(-1))


def task_loss(logits: Tensor, labels: Tensor, regression: bool) -> Tensor:
    """The supervised loss on hard labels: cross-entropy, or MSE for regression.

    Args:
        logits: (B, C) logits, or (B, 1) predictions for regression.
        labels: (B,) class ids (long) or float targets.
        regression: Which of the two applies.
    """
    if regression:
        return F.mse_loss(logits.float().view(-1), labels.float().view(-1))
    return F.cross_entropy(logits.float(), labels.long())


def distillation_loss(
    student_logits: Tensor,
    teacher_logits: Tensor | None,
    labels: Tensor,
    *,
    regression: bool,
    temperature: float = 1.0,
    alpha_kd: float = 1.0,
    alpha_task: float = 0.0,
) -> dict[str, Tensor]:
    """Total loss ``alpha_kd * kd + alpha_task * task`` and its named terms.

    Args:
        student_logits: (B, C) student outputs.
        teacher_logits: (B, C) teacher outputs, or None for plain fine-tuning.
        labels: (B,) hard labels.
        regression: Use MSE terms instead of KL/CE.
        temperature: KD temperature (classification only).
        alpha_kd: Weight of the KD term.
        alpha_task: Weight of the hard-label term.

    Returns:
        ``{"loss", "loss_task"}`` plus ``"loss_kd"`` when a teacher is given.
    """
    task = task_loss(student_logits, labels, regression)
    if teacher_logits is None:
        return {"loss": task, "loss_task": task}
    if regression:
        kd = regression_kd_loss(student_logits, teacher_logits)
    else:
        kd = kd_loss(student_logits, teacher_logits, temperature)
    # Skip zero-weight terms in the sum so a disabled term cannot inject NaN/inf.
    total = torch.zeros((), device=student_logits.device)
    if alpha_kd:
        total = total + alpha_kd * kd
    if alpha_task:
        total = total + alpha_task * task
    return {"loss": total, "loss_kd": kd, "loss_task": task}
