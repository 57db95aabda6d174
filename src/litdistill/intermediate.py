"""Intermediate-layer distillation: which states to compare, projections, and the terms.

:class:`IntermediateTerms` is the one trainable piece of an objective besides the student: it
owns the learned projections (TinyBERT's W_h when widths differ) and turns the student's and
teacher's hidden states / attentions into the named loss terms of :mod:`litdistill.losses`.
The projections are parameters of the LightningModule (optimised, checkpointed) but are not
part of the exported student.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn
from transformers import PretrainedConfig, PreTrainedModel

from litdistill import losses
from litdistill.errors import ConfigError
from litdistill.models import layer_list_name
from litdistill.terms import (
    AttentionTerm,
    HiddenTerm,
    MappedTerm,
    Term,
    check_terms,
    make_term,
)


def _layers(model: PreTrainedModel) -> nn.ModuleList:
    return model.get_submodule(layer_list_name(model, model.config.num_hidden_layers))


def _projections(layer: nn.Module) -> tuple[nn.Module, nn.Module, nn.Module]:
    """The query/key/value linear maps of one transformer layer (BERT, RoBERTa, MPNet,
    DistilBERT naming)."""
    linear = {n.rsplit(".", 1)[-1]: m for n, m in layer.named_modules()
              if isinstance(m, nn.Linear)}
    for names in (("query", "key", "value"), ("q", "k", "v"), ("q_lin", "k_lin", "v_lin")):
        if all(n in linear for n in names):
            return linear[names[0]], linear[names[1]], linear[names[2]]
    raise ConfigError(f"cannot find query/key/value projections in {type(layer).__name__}")


def qkv(model: PreTrainedModel, hidden_states: tuple[Tensor, ...], layer: int
        ) -> tuple[Tensor, Tensor, Tensor]:
    """Recompute layer ``layer``'s (1-based) Q, K, V, each (B, T, D), from its input states.

    transformers returns attention probabilities but neither projections nor raw scores, so
    MiniLM relations and TinyBERT's raw-score loss recompute them from the layer's input.
    """
    q, k, v = _projections(_layers(model)[layer - 1])
    x = hidden_states[layer - 1]
    return q(x), k(x), v(x)


def raw_scores(model: PreTrainedModel, hidden_states: tuple[Tensor, ...], layer: int) -> Tensor:
    """Pre-softmax attention scores Q K^T / sqrt(d_head) of one layer: (B, H, T, T).

    Without the additive padding mask (masked pairs are excluded by the loss instead) and,
    for MPNet, without the relative-position bias.
    """
    q, k, _ = qkv(model, hidden_states, layer)
    heads = model.config.num_attention_heads
    b, t, d = q.shape
    qh = q.view(b, t, heads, d // heads).transpose(1, 2)  # (B, H, T, dh)
    kh = k.view(b, t, heads, d // heads).transpose(1, 2)
    return qh @ kh.transpose(-1, -2) / math.sqrt(d // heads)


class IntermediateTerms(nn.Module):
    """The intermediate terms of one objective and their learned projections.

    Args:
        terms: ``{name: term}``, typed options from :mod:`litdistill.terms` (an
            :class:`~litdistill.objective.Objective`'s ``terms``).
        student: The student's config (widths, depth, heads).
        teacher: The teacher's config.

    Raises:
        ConfigError: A term that cannot apply to these two models (:func:`check_terms`).
    """

    def __init__(self, terms: Mapping[str, Term], student: PretrainedConfig,
                 teacher: PretrainedConfig) -> None:
        super().__init__()
        self.terms = {name: make_term(name, opts) for name, opts in terms.items()}
        check_terms(self.terms, student, teacher)
        self.s_layers, self.t_layers = student.num_hidden_layers, teacher.num_hidden_layers
        self.maps: dict[str, list[tuple[int, int]]] = {
            name: term.pairs(self.s_layers, self.t_layers) for name, term in self.terms.items()
            if isinstance(term, MappedTerm)}
        # Projections D_s -> D_t, only when widths differ (TinyBERT's W_h).
        self.widths_differ = student.hidden_size != teacher.hidden_size
        self.proj = nn.ModuleDict()
        if self.widths_differ:
            hidden = self.terms.get("hidden")
            n_hidden = len(self.maps.get("hidden", [])) + ("embedding" in self.terms)
            self.proj["shared"] = nn.Linear(student.hidden_size, teacher.hidden_size)
            if isinstance(hidden, HiddenTerm) and hidden.projection == "per_layer":
                self.proj["per_layer"] = nn.ModuleList(
                    nn.Linear(student.hidden_size, teacher.hidden_size) for _ in range(n_hidden))

    @property
    def needs_attentions(self) -> bool:
        """Attention maps from the forward pass (eager attention) are needed."""
        attention = self.terms.get("attention")
        return isinstance(attention, AttentionTerm) and attention.kind in ("mse", "kl")

    def _project(self, x: Tensor, index: int = 0) -> Tensor:
        if not self.widths_differ:
            return x
        if "per_layer" in self.proj:
            return self.proj["per_layer"][index](x)
        return self.proj["shared"](x)

    def forward(self, student: PreTrainedModel, teacher: PreTrainedModel, s_out: Any,
                t_out: Any, mask: Tensor, active: set[str] | None = None) -> dict[str, Tensor]:
        """Unweighted loss per active term, keyed ``loss_<term>``.

        Args:
            student, teacher: The models (for recomputed projections and scores).
            s_out, t_out: Their outputs with ``hidden_states`` (and ``attentions``).
            mask: (B, T) attention mask.
            active: Term names on in this phase (None: all).
        """
        s_h, t_h = s_out.hidden_states, t_out.hidden_states  # (L+1) x (B, T, D)
        out: dict[str, Tensor] = {}
        names = [n for n in self.terms if active is None or n in active]
        offset = int("embedding" in self.terms)
        for name in names:
            term = self.terms[name]
            if name == "embedding":
                out["loss_embedding"] = losses.hidden_mse(self._project(s_h[0], 0), t_h[0], mask)
            elif name == "hidden":
                terms = [losses.hidden_mse(self._project(s_h[s], i + offset), t_h[t], mask)
                         for i, (s, t) in enumerate(self.maps["hidden"])]
                out["loss_hidden"] = torch.stack(terms).sum()
            elif name == "cosine":
                out["loss_cosine"] = losses.cosine_hidden_loss(
                    self._project(s_h[-1]), t_h[-1], mask)
            elif name == "patient":
                pairs = self.maps["patient"]
                s_cls = torch.stack([self._project(s_h[s][:, 0]) for s, _ in pairs], 1)
                t_cls = torch.stack([t_h[t][:, 0] for _, t in pairs], 1)
                out["loss_patient"] = losses.patient_loss(s_cls, t_cls)
            elif name == "attention":
                out["loss_attention"] = self._attention(student, teacher, s_out, t_out, mask,
                                                        term.kind)
            elif name == "relation":
                heads = term.heads(teacher.config)
                sq, sk, sv = qkv(student, s_h, self.s_layers)
                with torch.no_grad():
                    tq, tk, tv = qkv(teacher, t_h, self.t_layers)
                out["loss_relation"] = (losses.relation_kl(sq, sk, tq, tk, mask, heads)
                                        + losses.relation_kl(sv, sv, tv, tv, mask, heads))
        return out

    def _attention(self, student: PreTrainedModel, teacher: PreTrainedModel, s_out: Any,
                   t_out: Any, mask: Tensor, kind: str) -> Tensor:
        terms = []
        for s, t in self.maps["attention"]:
            if t == 0:
                continue  # layer 0 is the embeddings: no attention to match
            if kind == "scores":
                s_att = raw_scores(student, s_out.hidden_states, s)
                with torch.no_grad():
                    t_att = raw_scores(teacher, t_out.hidden_states, t)
                terms.append(losses.attention_mse(s_att, t_att, mask))
            else:  # mse or kl on probabilities (AttentionTerm checked the kind)
                fn = losses.attention_mse if kind == "mse" else losses.attention_kl
                terms.append(fn(s_out.attentions[s - 1], t_out.attentions[t - 1], mask))
        return torch.stack(terms).sum()
