"""Width: a narrower student sliced out of a BERT teacher (Minitron-style structured pruning).

:func:`prune` keeps some transformer layers (the depth cut of :mod:`litdistill.cutting`), and in
every kept layer the most important attention heads and FFN neurons, and everywhere the most
important residual (hidden) dimensions, then copies the teacher's weights restricted to them.
No training happens here: knowledge distillation then recovers what was lost.

Importance (Minitron, Muralidharan et al. 2024, its activation-based estimator), from one
forward pass of the *full* teacher over calibration rows (:class:`Calibration`: ``rows``
rows drawn with ``seed`` from the run's training and transfer text), averaged over every
non-padding token of those rows:

- FFN neuron ``j`` of layer ``l``: mean ``|a_j|``, ``a`` the output of the intermediate layer
  after its nonlinearity (GELU), the input of ``output.dense``.
- Head ``h`` of layer ``l``: mean L2 norm of the head's context vector (its ``head_dim``
  slice of the attention output before ``attention.output.dense``).
- Hidden dimension ``d``: mean ``|x_d|`` of the LayerNorm outputs, summed over the embedding
  LayerNorm and both LayerNorms of every *kept* layer (the residual stream the student has).

``importance=gradient`` (:func:`gradient_importance`) scores heads and FFN neurons as Michel et
al. 2019 ("Are Sixteen Heads Really Better than One?") score heads: a mask ``xi = 1`` multiplies
each head's context (each neuron's activation), and the score is the mean over rows of
``|dL/dxi|``, which is ``|<context, dL/dcontext>|`` of that head on that row: how much the loss
moves when the unit is scaled, so a loud unit whose output nothing reads scores 0. ``L`` is the
cross-entropy of the model's own prediction (its argmax class; a regression model: its output
itself), because calibration rows include unlabelled transfer text. Hidden dimensions keep the
activation score (they have no single unit to mask).

The kept indices stay in the teacher's order. Weights sliced consistently: word/position/
token-type embeddings and the embedding LayerNorm (hidden columns), Q/K/V (rows of kept heads,
columns of kept hidden dims), attention output dense (rows kept hidden, columns kept heads),
intermediate dense (rows kept neurons, columns kept hidden), output dense, every LayerNorm,
the pooler (rows and columns) and the classifier's input columns.

Two consequences to know: a LayerNorm over fewer dimensions takes its mean and variance over
those only, so it is not the same function even on kept dimensions (Minitron accepts this too;
distillation adapts). And transformers' BERT derives the head size as ``hidden_size /
num_attention_heads``, with no separate ``head_dim`` (5.24), so a pruned student keeps the
teacher's head size and ``heads = hidden / head_dim``: 3 x 256 from MiniLM (384 / 12 heads =
32) has 8 heads. Only BERT-layout encoders (``model_type`` ``bert``: BERT, MiniLM) are
supported; MPNet's attention (``attn.q/k/v/o`` and a per-head relative-position bias) is
refused with a ConfigError.
"""

from __future__ import annotations

import random
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import datasets
import torch
from torch import Tensor
from transformers import AutoModelForSequenceClassification, PretrainedConfig, PreTrainedModel

from litdistill.cutting import cut_layers
from litdistill.errors import ConfigError

if TYPE_CHECKING:
    from litdistill.data import GlueDataModule

SUPPORTED = ("bert",)
IMPORTANCE = ("activation", "gradient")


@dataclass(frozen=True)
class Shape:
    """The student's shape, checked against the teacher's config (no weights needed)."""

    layers: list[int]
    hidden: int
    heads: int
    intermediate: int
    head_dim: int

    def prunes_width(self, config: PretrainedConfig) -> bool:
        return (self.hidden, self.intermediate) != (config.hidden_size, config.intermediate_size)


def check_shape(config: PretrainedConfig, layers: Sequence[int] | None, hidden: int | None,
                heads: int | None, intermediate: int | None) -> Shape:
    """Validate the asked shape against the teacher's config; ``None`` keeps the teacher's.

    Raises:
        ConfigError: An unsupported model type, or a size out of range or inconsistent.
    """
    if config.model_type not in SUPPORTED:
        raise ConfigError(f"student=pruned: width pruning supports BERT-layout encoders "
                          f"(model_type {', '.join(SUPPORTED)}: BERT, MiniLM), not "
                          f"{config.model_type!r}; use student=from_teacher (layers only)")
    n, width, ffn = config.num_hidden_layers, config.hidden_size, config.intermediate_size
    head_dim = width // config.num_attention_heads
    layers = list(range(n)) if layers is None else [int(i) for i in layers]
    if not layers or any(not 0 <= i < n for i in layers):
        raise ConfigError(f"student.layers {layers} out of range: the teacher has {n} layers "
                          f"(0..{n - 1})")
    hidden = width if hidden is None else int(hidden)
    if not 0 < hidden <= width or hidden % head_dim:
        raise ConfigError(f"student.hidden={hidden}: a multiple of the teacher's head size "
                          f"{head_dim} in 1..{width} (BERT's head size is hidden/heads)")
    if heads is not None and int(heads) != hidden // head_dim:
        raise ConfigError(f"student.heads={heads} with student.hidden={hidden}: heads keep "
                          f"the teacher's size {head_dim}, so heads = {hidden // head_dim} "
                          "(or null)")
    intermediate = ffn if intermediate is None else int(intermediate)
    if not 0 < intermediate <= ffn:
        raise ConfigError(f"student.intermediate={intermediate}: between 1 and the "
                          f"teacher's FFN size {ffn}")
    return Shape(layers, hidden, hidden // head_dim, intermediate, head_dim)


def pruned_config(config: PretrainedConfig, shape: Shape) -> PretrainedConfig:
    """A copy of the teacher's config with the student's sizes."""
    config = config.__class__.from_dict(config.to_dict())
    config.num_hidden_layers = len(shape.layers)
    config.hidden_size = shape.hidden
    config.num_attention_heads = shape.heads
    config.intermediate_size = shape.intermediate
    return config


@dataclass(frozen=True)
class Calibration:
    """Tokenized rows the importance pass reads, as the model being pruned reads them.

    Attributes:
        splits: Tokenized datasets (the run's train, and transfer when there is one).
        tokenizer: Pads the rows.
        prefix: Column prefix of the inputs (``teacher_`` for the teacher's tokenization).
        id_map: Maps the columns' piece ids to the pruned model's (a vocabulary-pruned
            student's ``kept_ids``: its new id -> the full vocabulary's), or None.
    """

    splits: Sequence[datasets.Dataset]
    tokenizer: object
    prefix: str = ""
    id_map: Sequence[int] | None = None

    @classmethod
    def of(cls, datamodule: GlueDataModule, from_teacher: bool,
           kept_ids: Sequence[int] | None = None) -> Calibration:
        """The run's training (and transfer) rows from a prepared ``GlueDataModule``.

        Args:
            datamodule: Tokenized for the run.
            from_teacher: The student is cut from the run's teacher (else from its own
                ``source``, which reads the student's tokenization before vocab pruning).
            kept_ids: The student's kept pieces when its vocabulary is pruned.
        """
        from litdistill.batching import TEACHER_PREFIX

        names = ["train", *(["transfer"] if datamodule.has_transfer else [])]
        splits = [datamodule.splits[s] for s in names]
        if from_teacher and datamodule.teacher_tokenizer is not None:
            return cls(splits, datamodule.teacher_tokenizer, TEACHER_PREFIX)
        return cls(splits, datamodule.tokenizer, "", kept_ids)

    def batches(self, rows: int, seed: int, batch_size: int = 32
                ) -> Iterator[dict[str, Tensor]]:
        """Padded batches of ``rows`` rows drawn without replacement with ``seed``."""
        sizes = [len(ds) for ds in self.splits]
        picked = sorted(random.Random(seed).sample(range(sum(sizes)), min(rows, sum(sizes))))
        keys = ("input_ids", "attention_mask", "token_type_ids")
        features = []
        for index in picked:
            split = 0
            while index >= sizes[split]:
                index, split = index - sizes[split], split + 1
            row = self.splits[split][index]
            features.append({k: row[self.prefix + k] for k in keys if self.prefix + k in row})
        id_map = torch.as_tensor(self.id_map) if self.id_map is not None else None
        for start in range(0, len(features), batch_size):
            batch = dict(self.tokenizer.pad(features[start:start + batch_size],
                                            return_tensors="pt"))
            if id_map is not None:
                batch["input_ids"] = id_map[batch["input_ids"]]
            yield batch


@torch.no_grad()
def importance(model: PreTrainedModel, batches: Iterator[dict[str, Tensor]],
               layers: Sequence[int]) -> dict[str, Tensor]:
    """Activation importance of hidden dims, heads and FFN neurons (see the module docstring).

    Returns:
        ``hidden``: ``[H]``; ``heads``: ``[len(layers), A]``; ``neurons``: ``[len(layers), F]``.
    """
    base, config = model.base_model, model.config
    head_dim = config.hidden_size // config.num_attention_heads
    sums: dict[str, Tensor] = {}
    mask: list[Tensor] = []  # the current batch's (B, T, 1) token mask

    def add(key: str, per_token: Tensor) -> None:  # (B, T, k) -> summed over real tokens
        total = (per_token.float() * mask[0]).sum(dim=(0, 1))
        sums[key] = sums[key] + total if key in sums else total

    def ln(key: str):
        return lambda module, args, out: add(key, out.abs())

    hooks = [base.embeddings.LayerNorm.register_forward_hook(ln("hidden"))]
    for i in layers:
        layer = base.encoder.layer[i]
        hooks += [
            layer.attention.output.LayerNorm.register_forward_hook(ln("hidden")),
            layer.output.LayerNorm.register_forward_hook(ln("hidden")),
            layer.intermediate.register_forward_hook(
                lambda m, args, out, i=i: add(f"neurons{i}", out.abs())),
            # (B, T, A * d) context -> (B, T, A, d) -> L2 norm per head (B, T, A)
            layer.attention.output.dense.register_forward_pre_hook(
                lambda m, args, i=i: add(f"heads{i}", args[0].unflatten(
                    -1, (-1, head_dim)).norm(dim=-1))),
        ]
    model.eval()
    tokens = 0
    device = next(model.parameters()).device
    try:
        for batch in batches:
            batch = {k: v.to(device) for k, v in batch.items()}
            mask[:] = [batch["attention_mask"].unsqueeze(-1).float()]
            tokens += int(batch["attention_mask"].sum())
            model(**batch)
    finally:
        for hook in hooks:
            hook.remove()
    if not tokens:
        raise ConfigError("student=pruned found no calibration rows (empty training split?)")
    return {"hidden": sums["hidden"].cpu() / tokens,
            "heads": torch.stack([sums[f"heads{i}"] for i in layers]).cpu() / tokens,
            "neurons": torch.stack([sums[f"neurons{i}"] for i in layers]).cpu() / tokens}


def gradient_importance(model: PreTrainedModel, batches: Iterator[dict[str, Tensor]],
                        layers: Sequence[int]) -> dict[str, Tensor]:
    """Gradient importance of heads and FFN neurons, activation importance of hidden dims.

    Returns:
        As :func:`importance`; ``heads`` and ``neurons`` are mean ``|dL/dxi|`` (module docstring).
    """
    batches = list(batches)
    scores = importance(model, iter(batches), layers)  # keeps its ``hidden``
    layer_of, config = model.base_model.encoder.layer, model.config
    masks: dict[str, Tensor] = {}

    def gate(key: str, units: int):  # (B, T, units * k) input of a dense layer, k = unit width
        def hook(module, args):
            xi = torch.ones(args[0].shape[0], units, device=args[0].device, requires_grad=True)
            masks[key] = xi  # (B, units): one mask per row, so its gradient is per row
            return (args[0].unflatten(-1, (units, -1)) * xi[:, None, :, None]).flatten(-2),
        return hook

    hooks = []
    for i in layers:
        hooks += [layer_of[i].attention.output.dense.register_forward_pre_hook(
                      gate(f"heads{i}", config.num_attention_heads)),
                  layer_of[i].output.dense.register_forward_pre_hook(
                      gate(f"neurons{i}", config.intermediate_size))]
    keys = [f"{kind}{i}" for kind in ("heads", "neurons") for i in layers]
    sums = dict.fromkeys(keys, 0.0)
    rows, device = 0, next(model.parameters()).device
    model.eval()
    try:
        with torch.enable_grad():
            for batch in batches:
                logits = getattr(model(**{k: v.to(device) for k, v in batch.items()}),
                                 "logits", None)  # (B, C)
                if logits is None or logits.dim() != 2:
                    raise ConfigError("student.importance=gradient needs a task head's "
                                      "logits (a task run); general distillation prunes "
                                      "by student.importance=activation")
                loss = (logits.sum() if logits.shape[-1] == 1 else torch.nn.functional
                        .cross_entropy(logits, logits.argmax(-1).detach(), reduction="sum"))
                for key, grad in zip(keys, torch.autograd.grad(loss, [masks[k] for k in keys]),
                                     strict=True):
                    sums[key] = sums[key] + grad.abs().sum(0).cpu()
                rows += logits.shape[0]
    finally:
        for hook in hooks:
            hook.remove()
    for kind in ("heads", "neurons"):
        scores[kind] = torch.stack([sums[f"{kind}{i}"] for i in layers]) / rows
    return scores


def _top(scores: Tensor, k: int) -> Tensor:
    """Indices of the ``k`` largest scores, in ascending (the teacher's) order."""
    return torch.topk(scores, k).indices.sort().values


# Weight name (after the encoder's layer prefix or the model's) -> (row index, column index):
# which kept set each dimension of the tensor is sliced by (None: kept whole).
_RULES: list[tuple[re.Pattern[str], str | None, str | None]] = [
    (re.compile(p), r, c) for p, r, c in [
        (r"embeddings\.(word|position|token_type)_embeddings\.weight$", None, "hidden"),
        (r"embeddings\.LayerNorm\.(weight|bias)$", "hidden", None),
        (r"attention\.self\.(query|key|value)\.weight$", "heads", "hidden"),
        (r"attention\.self\.(query|key|value)\.bias$", "heads", None),
        (r"attention\.output\.dense\.weight$", "hidden", "heads"),
        (r"intermediate\.dense\.weight$", "neurons", "hidden"),
        (r"intermediate\.dense\.bias$", "neurons", None),
        (r"output\.dense\.weight$", "hidden", "neurons"),
        (r"(output\.dense|pooler\.dense)\.bias$", "hidden", None),
        (r"LayerNorm\.(weight|bias)$", "hidden", None),
        (r"pooler\.dense\.weight$", "hidden", "hidden"),
        (r"classifier\.weight$", None, "hidden"),
        (r"(classifier\.bias|position_ids|token_type_ids)$", None, None),
    ]]
_LAYER = re.compile(r"\.layer\.(\d+)\.")


def _slice(key: str, value: Tensor, kept: dict[str, Tensor],
           per_layer: dict[str, list[Tensor]]) -> Tensor:
    for pattern, rows, cols in _RULES:
        if pattern.search(key):
            break
    else:
        raise ConfigError(f"width pruning does not know the weight {key}")
    layer = _LAYER.search(key)
    index = {**kept, **({k: v[int(layer.group(1))] for k, v in per_layer.items()}
                        if layer else {})}
    if rows:
        value = value.index_select(0, index[rows])
    if cols:
        value = value.index_select(1, index[cols])
    return value.clone()


def prune(source: PreTrainedModel, shape: Shape, calibration: Calibration | None,
          rows: int = 512, seed: int = 0, estimator: str = "activation",
          auto: type = AutoModelForSequenceClassification) -> PreTrainedModel:
    """The student of ``shape`` sliced out of ``source`` (its layers, dims, heads, neurons).

    With the teacher's full width this is exactly :func:`~litdistill.cutting.cut_layers`.
    ``estimator``: ``activation`` (:func:`importance`) or ``gradient``
    (:func:`gradient_importance`). ``auto``: the class of ``source`` and of the student
    (``AutoModel`` for a headless general-distillation student).
    """
    student = cut_layers(source, shape.layers, auto)
    if not shape.prunes_width(source.config):
        return student
    if calibration is None:
        raise ConfigError("student=pruned needs calibration rows (the run's training text)")
    score = gradient_importance if estimator == "gradient" else importance
    scores = score(source, calibration.batches(rows, seed), shape.layers)
    d = shape.head_dim
    heads = [_top(s, shape.heads) for s in scores["heads"]]
    per_layer = {  # student layer i -> kept indices
        # head h's Q/K/V rows are h*d .. h*d + d - 1: (heads, d) -> flat row indices
        "heads": [(h.unsqueeze(1) * d + torch.arange(d)).flatten() for h in heads],
        "neurons": [_top(s, shape.intermediate) for s in scores["neurons"]],
    }
    kept = {"hidden": _top(scores["hidden"], shape.hidden)}
    state = {k: _slice(k, v, kept, per_layer) for k, v in student.state_dict().items()}
    pruned = auto.from_config(pruned_config(student.config, shape))
    pruned.load_state_dict(state, strict=True)
    return pruned
