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

Transfer rows (rows without a label: a transfer set, augmented copies) take part in every
teacher-driven term and in no task term. In a batch of B rows of which the mask ``labelled``
marks n::

    kd   = mean over all B rows (batchmean, as above)
    task = (1 / n) * sum over the n labelled rows of CE (MSE for regression), 0 when n = 0

so the task term is the mean over the labelled rows only, never diluted by the transfer rows
(dividing by B would shrink it by n / B), and a batch of transfer rows only has no task term
(0, with no gradient). It is a masked mean, not an index, so it needs no host sync on a GPU.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

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


def task_loss(logits: Tensor, labels: Tensor, regression: bool,
              labelled: Tensor | None = None) -> Tensor:
    """The supervised loss on hard labels: cross-entropy, or MSE for regression.

    Args:
        logits: (B, C) logits, or (B, 1) predictions for regression.
        labels: (B,) class ids (long) or float targets (any value on unlabelled rows).
        regression: Which of the two applies.
        labelled: (B,) mask of rows that have a label (None: all of them); the loss is the
            mean over those rows, 0 when there are none.
    """
    if labelled is None:
        if regression:
            return F.mse_loss(logits.float().view(-1), labels.float().view(-1))
        return F.cross_entropy(logits.float(), labels.long())
    mask = labelled.view(-1).bool()
    # An unlabelled row's placeholder (even NaN) must reach neither the loss nor its gradient.
    labels = torch.where(mask, labels.view(-1), torch.zeros_like(labels.view(-1)))
    if regression:
        per_row = (logits.float().view(-1) - labels.float().view(-1)).pow(2)
    else:
        per_row = F.cross_entropy(logits.float(), labels.long(), reduction="none")
    per_row = torch.where(mask, per_row, torch.zeros_like(per_row))
    return per_row.sum() / mask.sum().clamp_min(1).to(per_row.dtype)


def distillation_loss(
    student_logits: Tensor,
    teacher_logits: Tensor | None,
    labels: Tensor,
    *,
    regression: bool,
    temperature: float = 1.0,
    alpha_kd: float = 0.5,
    alpha_task: float = 0.5,
    labelled: Tensor | None = None,
) -> dict[str, Tensor]:
    """Total loss ``alpha_kd * kd + alpha_task * task`` and its named terms.

    Args:
        student_logits: (B, C) student outputs.
        teacher_logits: (B, C) teacher outputs, or None (no KD term: fine-tuning, or a
            phase without KD).
        labels: (B,) hard labels.
        regression: Use MSE terms instead of KL/CE.
        temperature: KD temperature (classification only).
        alpha_kd: Weight of the KD term.
        alpha_task: Weight of the hard-label term.
        labelled: (B,) mask of labelled rows (None: all); see the module docstring.

    Returns:
        ``{"loss", "loss_task"}`` plus ``"loss_kd"`` when a teacher is given.
    """
    out = {"loss_task": task_loss(student_logits, labels, regression, labelled)}
    if teacher_logits is not None:
        out["loss_kd"] = (regression_kd_loss(student_logits, teacher_logits) if regression
                          else kd_loss(student_logits, teacher_logits, temperature))
    # Skip zero-weight terms in the sum so a disabled term cannot inject NaN/inf.
    total = torch.zeros((), device=student_logits.device)
    if alpha_kd and "loss_kd" in out:
        total = total + alpha_kd * out["loss_kd"]
    if alpha_task:
        total = total + alpha_task * out["loss_task"]
    return {"loss": total, **out}


# --------------------------------------------------------------------------- intermediate
# Shapes: B batch, T tokens, D hidden width, H heads. ``mask`` is the (B, T) attention mask
# (1 = real token); every intermediate term averages over real tokens only, so padding,
# which changes with the batch, never changes the loss.


def _masked_mean(values: Tensor, mask: Tensor) -> Tensor:
    """Mean of ``values`` (B, T, ...) over the real tokens of ``mask`` (B, T) and trailing dims."""
    weights = mask.to(values.dtype).view(*mask.shape, *([1] * (values.dim() - 2)))
    per_token = values[0, 0].numel()
    return (values * weights).sum() / (weights.sum() * per_token).clamp_min(1.0)


def hidden_mse(student_hidden: Tensor, teacher_hidden: Tensor, mask: Tensor,
               projection: torch.nn.Module | None = None) -> Tensor:
    """TinyBERT hidden-state loss (Jiao et al. 2020, eq. 7): MSE(H_S W_h, H_T) over real tokens.

    Args:
        student_hidden: (B, T, D_s) student states of one layer.
        teacher_hidden: (B, T, D_t) teacher states of the mapped layer.
        mask: (B, T) attention mask; padded positions do not count.
        projection: Learned linear map D_s -> D_t (needed when the widths differ).

    Returns:
        Mean squared error over real tokens and the D_t features.
    """
    if projection is not None:
        student_hidden = projection(student_hidden)
    if student_hidden.shape != teacher_hidden.shape:
        raise ValueError(f"hidden widths differ ({student_hidden.shape[-1]} vs "
                         f"{teacher_hidden.shape[-1]}): give hidden_mse a projection")
    diff = student_hidden.float() - teacher_hidden.detach().float()
    return _masked_mean(diff.pow(2), mask)


def cosine_hidden_loss(student_hidden: Tensor, teacher_hidden: Tensor, mask: Tensor,
                       projection: torch.nn.Module | None = None) -> Tensor:
    """DistilBERT's cosine loss (Sanh et al. 2019): mean over real tokens of 1 - cos(h_s, h_t).

    Args:
        student_hidden: (B, T, D_s) last-layer student states.
        teacher_hidden: (B, T, D_t) last-layer teacher states.
        mask: (B, T) attention mask.
        projection: Linear map D_s -> D_t when widths differ.
    """
    if projection is not None:
        student_hidden = projection(student_hidden)
    cos = F.cosine_similarity(student_hidden.float(), teacher_hidden.detach().float(), dim=-1)
    return _masked_mean((1.0 - cos).unsqueeze(-1), mask)


def _pair_mask(mask: Tensor) -> Tensor:
    """(B, T) token mask -> (B, 1, T, T): real query rows x real key columns."""
    m = mask.to(torch.float32)
    return (m[:, None, :, None] * m[:, None, None, :])


def attention_mse(student_attn: Tensor, teacher_attn: Tensor, mask: Tensor) -> Tensor:
    """TinyBERT attention loss on attention maps: per-head MSE over real query/key pairs.

    Args:
        student_attn: (B, H, T, T) student attention probabilities (or raw scores).
        teacher_attn: (B, H, T, T) teacher attention of the mapped layer; same H.
        mask: (B, T) attention mask. Pairs with a padded query or key are left out, which is
            what TinyBERT's zeroing of masked scores (<= -1e2) approximates; leaving them out
            also keeps the -inf/-1e4 mask values of raw scores out of the loss.
    """
    _check_heads(student_attn, teacher_attn)
    pairs = _pair_mask(mask)
    sq = (student_attn.float() - teacher_attn.detach().float()).pow(2) * pairs
    return sq.sum() / (pairs.sum() * student_attn.shape[1]).clamp_min(1.0)


def attention_kl(student_attn: Tensor, teacher_attn: Tensor, mask: Tensor,
                 eps: float = 1e-12) -> Tensor:
    """KL(teacher row || student row) between attention distributions, per head.

    Averaged over heads and real query rows (each row is a distribution over keys).

    Args:
        student_attn: (B, H, T, T) attention probabilities.
        teacher_attn: (B, H, T, T) teacher attention probabilities; same H.
        mask: (B, T) attention mask.
    """
    _check_heads(student_attn, teacher_attn)
    t = teacher_attn.detach().float()
    kl = (t * (torch.log(t + eps) - torch.log(student_attn.float() + eps))).sum(-1)  # (B,H,T)
    rows = mask.to(torch.float32)[:, None, :].expand_as(kl)
    return (kl * rows).sum() / rows.sum().clamp_min(1.0)


def _check_heads(student: Tensor, teacher: Tensor) -> None:
    if student.shape[1] != teacher.shape[1]:
        raise ValueError(f"per-head attention losses need equal head counts: student "
                         f"{student.shape[1]}, teacher {teacher.shape[1]}")


def patient_loss(student_cls: Tensor, teacher_cls: Tensor) -> Tensor:
    """PKD patient loss (Sun et al. 2019): MSE between L2-normalised [CLS] states.

    ``mean over (B, L, D) of (h_s/||h_s|| - h_t/||h_t||)^2`` for the L mapped layers, as in
    PKD's code (``F.mse_loss`` of normalised states); the paper writes the same sum of squared
    distances without the 1/(B L D) factor, which its weight beta (100-500) absorbs.

    Args:
        student_cls: (B, L, D) student [CLS] states of the mapped layers (projected if needed).
        teacher_cls: (B, L, D) teacher [CLS] states of the mapped layers.
    """
    s = F.normalize(student_cls.float(), p=2, dim=-1)
    t = F.normalize(teacher_cls.detach().float(), p=2, dim=-1)
    return F.mse_loss(s, t)


def _relation(x: Tensor, y: Tensor, heads: int, mask: Tensor) -> Tensor:
    """Log-softmax of scaled dot products between relation heads: (B, R, T, T)."""
    b, t, d = x.shape
    if d % heads:
        raise ValueError(f"width {d} is not divisible by {heads} relation heads")
    xh = x.float().view(b, t, heads, d // heads).transpose(1, 2)  # (B, R, T, d/R)
    yh = y.float().view(b, t, heads, d // heads).transpose(1, 2)
    scores = xh @ yh.transpose(-1, -2) / math.sqrt(d // heads)   # (B, R, T, T)
    keys = mask.to(torch.bool)[:, None, None, :]
    return F.log_softmax(scores.masked_fill(~keys, torch.finfo(scores.dtype).min), dim=-1)


def relation_kl(student_x: Tensor, student_y: Tensor, teacher_x: Tensor, teacher_y: Tensor,
                mask: Tensor, relation_heads: int) -> Tensor:
    """MiniLM self-attention relation KL (Wang et al. 2020; v2 relation heads, 2021).

    For (x, y) = (Q, K) this is the attention-distribution transfer, for (V, V) the
    value-relation transfer: ``KL(softmax(x_t y_t^T / sqrt(d_r)) || softmax(x_s y_s^T /
    sqrt(d_r)))`` per relation head, averaged over heads and real query rows. Splitting the
    concatenated projections into ``relation_heads`` heads on both sides lets teacher and
    student have different widths and head counts.

    Args:
        student_x, student_y: (B, T, D_s) student projections of the last layer.
        teacher_x, teacher_y: (B, T, D_t) teacher projections.
        mask: (B, T) attention mask.
        relation_heads: Heads R both widths are split into.
    """
    log_s = _relation(student_x, student_y, relation_heads, mask)
    log_t = _relation(teacher_x.detach(), teacher_y.detach(), relation_heads, mask)
    kl = (log_t.exp() * (log_t - log_s)).sum(-1)  # (B, R, T)
    rows = mask.to(torch.float32)[:, None, :].expand_as(kl)
    return (kl * rows).sum() / rows.sum().clamp_min(1.0)


# --------------------------------------------------------------------------- layer mapping
def _round_half_up(x: float) -> int:
    return math.floor(x + 0.5)


def layer_mapping(student_layers: int, teacher_layers: int,
                  strategy: str | Sequence[int] = "uniform") -> list[tuple[int, int]]:
    """Which teacher layer supervises which student layer (1-based; 0 is the embeddings).

    With S student and T teacher layers, ``r(x)`` rounding half up:

    * ``uniform`` (TinyBERT's g(m) = m * N / M, rounded for any depths): student layer
      i <- teacher layer r(i * T / S), i = 1..S. The last student layer always learns from the
      last teacher layer; when T is a multiple of S this is TinyBERT's i * T / S exactly
      (12 -> 6: 2, 4, 6, 8, 10, 12; 12 -> 4: 3, 6, 9, 12), otherwise e.g. 6 -> 4: 2, 3, 5, 6
      and 12 -> 5: 2, 5, 7, 10, 12. For S <= T the map is strictly increasing; a student deeper
      than its teacher (S > T) learns, layer by layer, from the teacher layer at the same
      relative depth (at least 1), so several student layers share one (2 -> 4: 1, 1, 2, 2).
    * ``skip`` (PKD-skip): the same rule for i = 1..S - 1; the last student layer is left to
      the logit loss (12 -> 6: 2, 4, 6, 8, 10).
    * ``last`` (PKD-last): student i <- teacher T - S + i for i = 1..S - 1 (12 -> 6: 7..11);
      needs S <= T.
    * a list: student i <- list[i - 1], one entry per student layer, each in 0..T.

    Raises:
        ValueError: An unknown strategy, a list of the wrong length or out of range, ``last``
            with a student deeper than its teacher, or a map with no pair at all (``skip`` or
            ``last`` for a 1-layer student).
    """
    s, t = student_layers, teacher_layers
    if isinstance(strategy, str):
        if strategy in ("uniform", "skip"):
            top = s if strategy == "uniform" else s - 1
            pairs = [(i, max(_round_half_up(i * t / s), 1)) for i in range(1, top + 1)]
        elif strategy == "last":
            if s > t:
                raise ValueError(f"layer mapping 'last' needs a student no deeper than its "
                                 f"teacher ({s} > {t} layers); use uniform or a list")
            pairs = [(i, t - s + i) for i in range(1, s)]
        else:
            raise ValueError(f"unknown layer mapping {strategy!r}: uniform, skip, last or "
                             "a list")
        if not pairs:
            raise ValueError(f"layer mapping {strategy!r} leaves a {s}-layer student no layer "
                             "to match (it skips the last one); use uniform or a list")
        return pairs
    layers = [int(x) for x in strategy]
    if len(layers) != s or not all(0 <= x <= t for x in layers):
        raise ValueError(f"explicit layer mapping {layers} needs {s} teacher layers in 0..{t}")
    return list(zip(range(1, s + 1), layers, strict=True))


# --------------------------------------------------------------------------- general distillation
def token_kd_loss(student_logits: Tensor, teacher_logits: Tensor, mask: Tensor,
                  temperature: float = 1.0) -> Tensor:
    """DistilBERT's soft-target loss over the vocabulary: :func:`kd_loss` of every real
    token's MLM logits (Sanh et al. 2019), averaged over real tokens.

    Args:
        student_logits: (B, T, V) student MLM logits.
        teacher_logits: (B, T, V) teacher MLM logits (same vocabulary).
        mask: (B, T) attention mask; padded positions do not count.
        temperature: Softening temperature T > 0 (the loss is scaled by T^2).
    """
    keep = mask.to(torch.bool)
    return kd_loss(student_logits[keep], teacher_logits[keep], temperature)


def mlm_loss(logits: Tensor, labels: Tensor) -> Tensor:
    """Masked-language-model cross-entropy over the positions whose label is not -100.

    Args:
        logits: (B, T, V) MLM logits.
        labels: (B, T) original token ids at masked positions, -100 elsewhere.
    """
    return F.cross_entropy(logits.float().flatten(0, 1), labels.flatten(), ignore_index=-100)
