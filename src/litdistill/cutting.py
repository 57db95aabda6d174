"""Depth: a model made of a subset of another's transformer layers (DistilBERT's extraction)."""

from __future__ import annotations

import re
from collections.abc import Sequence

from torch import nn
from transformers import AutoModelForSequenceClassification, PreTrainedModel

from litdistill.errors import ConfigError


def layer_list_name(model: nn.Module, num_layers: int) -> str:
    """Dotted name of the model's ``ModuleList`` of transformer layers.

    Works across BERT (``bert.encoder.layer``), MPNet, RoBERTa and DistilBERT
    (``distilbert.transformer.layer``) without a per-architecture table.
    """
    for name, module in model.named_modules():
        if isinstance(module, nn.ModuleList) and len(module) == num_layers and name:
            return name
    raise ConfigError(f"could not find the {num_layers} transformer layers of "
                      f"{type(model).__name__}; from_teacher supports BERT-like encoders")


def cut_layers(source: PreTrainedModel, layers: Sequence[int],
               auto: type = AutoModelForSequenceClassification) -> PreTrainedModel:
    """A new model with ``source``'s weights but only the given transformer layers.

    Student layer ``i`` gets teacher layer ``layers[i]``; embeddings, pooler and the
    classification head are copied as they are (HF's DistilBERT extraction keeps them too).
    ``auto`` builds the new model: a classifier, or ``AutoModel``/``AutoModelForMaskedLM``
    for general distillation's headless and MLM students.
    """
    config = source.config.__class__.from_dict(source.config.to_dict())
    config.num_hidden_layers = len(layers)
    student = auto.from_config(config)
    prefix = layer_list_name(source, source.config.num_hidden_layers)
    pattern = re.compile(rf"^{re.escape(prefix)}\.(\d+)\.(.*)$")
    new_index = {t: s for s, t in enumerate(layers)}
    state = {}
    for key, value in source.state_dict().items():
        if m := pattern.match(key):
            teacher_layer = int(m.group(1))
            if teacher_layer not in new_index:
                continue
            key = f"{prefix}.{new_index[teacher_layer]}.{m.group(2)}"
        state[key] = value.detach().clone()
    missing, unexpected = student.load_state_dict(state, strict=False)
    # Buffers such as position_ids may be non-persistent; anything else missing is a bug.
    if real := [k for k in missing if not k.endswith("position_ids")] + list(unexpected):
        raise RuntimeError(f"layer cut left weights unmatched: {real[:5]}")
    return student
