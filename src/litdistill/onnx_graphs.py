"""ONNX graphs of a sequence classifier: export, int8 quantization, and the check that a
graph reproduces the PyTorch model on dev rows (:mod:`litdistill.export` drives these for a
finished run; the benchmarks call them directly).

Exporter: ``torch.onnx.export(dynamo=True)`` (``torch.export`` + onnxscript), the default of
torch 2.13; the TorchScript exporter traces the attention-mask code of transformers 5 with
TracerWarnings (shapes turned into constants).
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from litdistill.errors import LitDistillError
from litdistill.latency import run_session, session
from litdistill.metrics import evaluate
from litdistill.reader import split_logits
from litdistill.tasks import TaskSpec

# Rows on which the fp32 graph must predict what PyTorch predicts. Not 1.0: a row whose two
# top logits tie to ~1e-6 may flip under a different order of float additions.
MIN_AGREEMENT = 0.999
# Regression rows agree when the predictions differ by less than this (STS-B spans 0..5).
REGRESSION_TOLERANCE = 1e-3
# One eval split from dev_batches: (name, padded int64 batches, labels in the same row order).
DevSplit = tuple[str, list[dict[str, np.ndarray]], np.ndarray]


class ExportError(LitDistillError):
    """A run that cannot be exported (no student, bad option, missing extra)."""


class VerificationError(ExportError):
    """The exported graph does not reproduce the PyTorch model on the dev set."""


# The exporter warns once per torchvision op it cannot register; no student uses them.
_REGISTRATION_LOG = "torch.onnx._internal.exporter._registration"


@contextmanager
def _quiet_logger(name: str, drop: str | None = None) -> Iterator[None]:
    """Silence logger ``name`` (``""``: root) below ERROR, or only records starting ``drop``."""
    logger = logging.getLogger(name)

    def keep(record: logging.LogRecord) -> bool:
        if drop is None:
            return record.levelno >= logging.ERROR
        return not record.getMessage().startswith(drop)

    logger.addFilter(keep)
    try:
        yield
    finally:
        logger.removeFilter(keep)


class _Logits(nn.Module):
    """The classifier with one output, ``logits`` ``(B, num_labels)``, for the graph."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    # Named arguments, not **kwargs: torch.export matches dynamic_shapes to these names.
    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                token_type_ids: torch.Tensor | None = None) -> torch.Tensor:
        inputs = {"attention_mask": attention_mask, "token_type_ids": token_type_ids}
        return self.model(input_ids, **{k: v for k, v in inputs.items() if v is not None}).logits


def export_onnx(model: nn.Module, tokenizer: Any, path: Path, opset: int | None = None
                ) -> list[str]:
    """Write ``model`` as a single-file ONNX graph with dynamic batch and sequence axes.

    Args:
        model: A transformers sequence classifier (put in eval mode here).
        tokenizer: Its tokenizer: its outputs name the graph's inputs.
        path: The ``.onnx`` file (weights inside: fine below the 2 GB protobuf limit).
        opset: ONNX opset (None: the exporter's default).

    Returns:
        The graph's input names.
    """
    model.eval()
    # Two rows of different lengths, batch != sequence: torch.export specializes a dimension
    # that is 1 in the example, and would merge two axes of equal size into one symbol.
    sample = tokenizer(["an example sentence for the exporter", "a short one"],
                       ["and its pair", "b"], padding=True, return_tensors="pt")
    names = [n for n in ("input_ids", "attention_mask", "token_type_ids") if n in sample]
    kwargs = {n: sample[n] for n in names}
    batch, sequence = torch.export.Dim("batch"), torch.export.Dim("sequence")
    with torch.no_grad(), warnings.catch_warnings(), _quiet_logger(_REGISTRATION_LOG):
        # Every input shares the two axes; the exporter says so once per input and axis.
        warnings.filterwarnings("ignore", message=r".*The axis name: .* will not be used")
        warnings.filterwarnings("ignore", message=r".*LeafSpec.*")  # torch.export internals
        torch.onnx.export(
            _Logits(model).eval(), (), str(path), kwargs=kwargs, input_names=names,
            output_names=["logits"], opset_version=opset, dynamo=True, external_data=False,
            dynamic_shapes={n: {0: batch, 1: sequence} for n in names}, verbose=False)
    return names


def quantize_int8(src: Path, dest: Path) -> None:
    """Dynamic int8 quantization: int8 weights, activations quantized per call.

    Every MatMul with a weight and the embedding tables are quantized (onnxruntime's
    defaults), with one scale per output channel. Tried on the demo's MiniLM-L6 teacher and
    3-layer student (1,017 dev rows, 1 thread): fusing with
    ``onnxruntime.transformers.optimizer`` (no attention fusion matches the dynamo graph) or
    ``quant_pre_process`` first changed latency by < 3% and accuracy not at all; quantizing
    MatMuls only keeps 3x the size (fp32 embeddings) and moved accuracy by -0.8 (student) and
    +1.0 (teacher) points vs this choice: within dev-set noise (~16 rows flip either way).
    """
    from onnxruntime.quantization import QuantType, quantize_dynamic

    # The quantizer logs a hint to pre-process first on the root logger (see above).
    with _quiet_logger("", drop="Please consider to run pre-processing"):
        quantize_dynamic(src, dest, weight_type=QuantType.QInt8, per_channel=True)


def torch_logits(model: nn.Module, splits: list[DevSplit]) -> list[np.ndarray]:
    """PyTorch logits ``(rows, num_labels)`` of each split from :func:`dev_batches`."""
    return [split_logits(model, batches) for _, batches, _ in splits]


def onnx_logits(path: str | Path, splits: list[DevSplit]) -> list[np.ndarray]:
    """The ONNX graph's logits ``(rows, num_labels)`` of each split."""
    sess = session(path)
    return [np.concatenate([run_session(sess, b) for b in batches])
            for _, batches, _ in splits]


def score_logits(task: TaskSpec, logits: list[np.ndarray], splits: list[DevSplit]
                 ) -> dict[str, float]:
    """The task's metrics and ``score`` of per-split logits, as training reports them."""
    return evaluate(task, [torch.from_numpy(x) for x in logits],
                    [torch.from_numpy(y) for _, _, y in splits])


def _agree(task: TaskSpec, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    if task.is_regression:
        return np.abs(a[:, 0] - b[:, 0]) < REGRESSION_TOLERANCE
    return a.argmax(-1) == b.argmax(-1)


def verify(model: nn.Module, graphs: dict[str, Path], task: TaskSpec,
           splits: list[DevSplit]) -> dict[str, Any]:
    """Compare PyTorch and each ONNX graph on the dev rows.

    Args:
        model: The PyTorch student.
        graphs: ``{"fp32": path, "int8": path}`` (int8 optional).
        task: The run's task.
        splits: From :func:`dev_batches`.

    Returns:
        ``checks`` (rows, and per graph the agreement with PyTorch and the max abs logit
        difference) and ``scores`` (task metrics and ``score`` of PyTorch and each graph).

    Raises:
        VerificationError: The fp32 graph agrees with PyTorch on fewer than
            :data:`MIN_AGREEMENT` of the rows.
    """
    logits = {"pytorch": torch_logits(model, splits)}
    logits |= {name: onnx_logits(path, splits) for name, path in graphs.items()}
    reference = np.concatenate(logits["pytorch"])  # (all rows, num_labels)
    checks: dict[str, Any] = {"rows": len(reference), "min_agreement": MIN_AGREEMENT}
    for name in graphs:
        out = np.concatenate(logits[name])
        checks[name] = {"agreement": float(_agree(task, reference, out).mean()),
                        "max_abs_logit_diff": float(np.abs(reference - out).max())}
    fp32 = checks["fp32"]
    if fp32["agreement"] < MIN_AGREEMENT:
        raise VerificationError(
            f"the fp32 ONNX graph predicts what PyTorch predicts on only "
            f"{fp32['agreement']:.2%} of {checks['rows']} dev rows (need "
            f"{MIN_AGREEMENT:.1%}; max abs logit difference {fp32['max_abs_logit_diff']:.3g}); "
            "the export is wrong: try another --opset or report the model type")
    scores = {name: score_logits(task, x, splits) for name, x in logits.items()}
    return {"checks": checks, "scores": scores}


