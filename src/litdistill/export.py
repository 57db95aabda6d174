"""``litdistill-export RUN_DIR``: a finished run's student as ONNX, checked on its dev set.

Writes ``model.onnx`` (fp32, dynamic batch and sequence axes), with ``--quantize int8`` also
``model.int8.onnx`` (int8 weights of every MatMul and embedding table, activations
quantized per call), the tokenizer and config files, and ``export.json`` (source run, opset,
file sizes, checks, scores) into ``RUN_DIR/export/``, atomically::

    litdistill-export outputs/sst2/2025-01-01_12-00-00 --quantize int8

Before anything is kept, both models run on the task's dev set, loaded and tokenized as the
training run did (its ``.hydra/config.yaml``): the fp32 graph must predict the same class as
PyTorch on at least :data:`MIN_AGREEMENT` of the rows, and the int8 graph's score is printed
next to PyTorch's. :func:`litdistill.latency.measure_onnx` times an exported graph the way
:func:`litdistill.latency.measure` times a PyTorch model.

Exporter: ``torch.onnx.export(dynamo=True)`` (``torch.export`` + onnxscript), the default of
torch 2.13; the TorchScript exporter traces the attention-mask code of transformers 5 with
TracerWarnings (shapes turned into constants). Needs ``pip install 'litdistill[export]'``.
"""

from __future__ import annotations

import argparse
import datetime
import importlib
import logging
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException
from torch import nn

from litdistill import atomic
from litdistill.errors import cli_main
from litdistill.onnx_graphs import (  # noqa: F401  (re-exported: litdistill.export's API)
    MIN_AGREEMENT,
    REGRESSION_TOLERANCE,
    DevSplit,
    ExportError,
    VerificationError,
    export_onnx,
    onnx_logits,
    quantize_int8,
    score_logits,
    torch_logits,
    verify,
)
from litdistill.rundir import EXPORT_JSON, ONNX_FP32, ONNX_INT8, Results, RunDir, run_task
from litdistill.tasks import TaskSpec

QUANTIZE = ("int8",)
# PyTorch's dev score here vs the run's recorded one (float32 metric states, batch order).
RUN_SCORE_TOLERANCE = 1e-4
FP32_FILE = ONNX_FP32
INT8_FILE = ONNX_INT8
# Modules the export needs, all from the ``export`` extra (onnxscript: the dynamo exporter).
_EXTRA_MODULES = ("onnx", "onnxruntime", "onnxscript")
_INSTALL = "pip install 'litdistill[export]'"


@dataclass(frozen=True)
class Run:
    """What an export needs from a finished run dir.

    Attributes:
        run_dir: The run folder.
        results: Its ``results.json``.
        student_dir: The ``save_pretrained`` student.
        task: The resolved task.
        data: The run's ``data`` settings, resolved (``glue_dir``, ``max_length``, ...).
        data_files: ``task.data_files`` for custom tasks, else None.
        config_source: Where ``task`` and ``data`` came from (shown in ``export.json``).
    """

    run_dir: Path
    results: Results
    student_dir: Path
    task: TaskSpec
    data: dict[str, Any]
    data_files: dict[str, str] | None
    config_source: str


def require_extra() -> None:
    """Fail with the install command when a module of the ``export`` extra is missing.

    Raises:
        ExportError: Naming the missing modules and ``pip install 'litdistill[export]'``.
    """
    missing = []
    for name in _EXTRA_MODULES:
        try:
            importlib.import_module(name)
        except ImportError:
            missing.append(name)
    if missing:
        raise ExportError(f"ONNX export needs {', '.join(missing)}, not installed: {_INSTALL}")


def _run_config(run: RunDir, results: Results, overrides: Sequence[str]
                ) -> tuple[DictConfig, str]:
    saved = run.config_path
    if saved.is_file():
        cfg = run.read_config()
        if overrides:
            try:
                cfg = OmegaConf.merge(cfg, OmegaConf.from_dotlist(list(overrides)))
            except OmegaConfBaseException as err:
                raise ExportError(f"overrides {list(overrides)}: {err}; a run with "
                                  ".hydra/config.yaml takes key=value overrides only") from err
        return cfg, str(saved)
    # train(cfg) called from Python (the demo, tests) leaves no .hydra/: compose conf/ again
    # from the run's overrides plus the caller's (e.g. experiment=demo_student).
    from hydra.errors import HydraException

    from litdistill.conf import compose

    argv = [o for o in results.get("overrides") or [] if not o.lstrip("+~").startswith("hydra")]
    if results.get("task") and not any(o.split("=")[0] in ("task", "+task") for o in argv):
        argv.insert(0, f"task={results['task']}")
    argv += list(overrides)
    try:
        cfg = compose(argv)
    except HydraException as err:
        raise ExportError(f"cannot compose conf/train.yaml with {argv}: {err}") from err
    return cfg, f"conf/train.yaml {' '.join(argv)} (the run has no .hydra/config.yaml)"


def load_run(run_dir: str | Path, overrides: Sequence[str] = ()) -> Run:
    """Read a finished run dir and resolve its task and data settings (no weights load).

    Args:
        run_dir: A folder written by ``litdistill-train`` (``results.json``, ``student/``).
        overrides: For runs without ``.hydra/config.yaml``: Hydra overrides composed onto
            ``conf/train.yaml`` after the run's own; otherwise ``key=value`` merged into it
            (e.g. ``data.glue_dir=/new/place``).

    Raises:
        RunDirError: No, or a damaged, ``results.json`` or ``.hydra/config.yaml``.
        ExportError: A failed run, or no ``student/`` folder.
    """
    run = RunDir(run_dir)
    results = run.read_results()
    if not run.has_student():
        raise ExportError(f"{run.path} has no student/ folder to export (run status: "
                          f"{results['status']}); only a finished run (status ok) saves its "
                          "student")
    cfg, source = _run_config(run, results, overrides)
    # The classes a custom task read from its training file are the ones the run recorded.
    task = run_task(cfg, results, run.path)
    if results.get("task") not in (None, task.name):
        raise ExportError(f"{source} says task {task.name!r} but results.json says "
                          f"{results['task']!r}; pass the run's own overrides")
    keys = ("glue_dir", "max_length", "max_eval_samples", "eval_batch_size")
    data = {k: OmegaConf.select(cfg, f"data.{k}", default=None) for k in keys}
    # The dev subset training scored: data.subset_seed, else data.seed, else seed.
    data["seed"] = next((v for v in (OmegaConf.select(cfg, k, default=None) for k in (
        "data.subset_seed", "data.seed", "seed")) if v is not None), 42)
    files = cfg.task.get("data_files")
    data_files = OmegaConf.to_container(files, resolve=True) if files else None
    return Run(run.path, results, run.student_dir, task, data, data_files, source)


def dev_batches(run: Run, tokenizer: Any) -> list[DevSplit]:
    """The run's eval splits tokenized as training did, in padded batches.

    Returns:
        Per eval split: ``(name, batches, labels)``; batches hold int64 ``(B, T)`` arrays,
        rows sorted by length (less padding), ``labels`` in the same row order.
    """
    from litdistill.reader import eval_batches, read_splits, tokenize_split

    data = run.data
    splits = read_splits(run.task, glue_dir=data["glue_dir"], data_files=run.data_files,
                         max_eval_samples=data["max_eval_samples"], subset_seed=data["seed"])
    batch_size, out = data["eval_batch_size"] or 64, []
    for split in splits.task.eval_splits:
        ds = tokenize_split(splits, split, tokenizer, max_length=data["max_length"] or 128).data
        pairs = list(eval_batches(ds, tokenizer, batch_size, longest_first=False,
                                  return_tensors="np"))
        order = [row for rows, _ in pairs for row in rows]
        out.append((split, [batch for _, batch in pairs], np.asarray(ds["label"])[order]))
    return out


def _file_entry(path: Path) -> dict[str, Any]:
    return {"bytes": path.stat().st_size, "sha256": atomic.sha256_file(path)}


def _write_graphs(tmp: Path, model: nn.Module, tokenizer: Any, run: Run,
                  splits: list[DevSplit], quantize: str | None, opset: int | None
                  ) -> dict[str, Any]:
    """Export (and quantize) into ``tmp``, verify on dev, write ``export.json``; return it."""
    import onnx

    start = time.perf_counter()
    graphs = {"fp32": tmp / FP32_FILE}
    inputs = export_onnx(model, tokenizer, graphs["fp32"], opset)
    if quantize == "int8":
        graphs["int8"] = tmp / INT8_FILE
        quantize_int8(graphs["fp32"], graphs["int8"])
    export_seconds = time.perf_counter() - start
    tokenizer.save_pretrained(tmp)
    model.config.save_pretrained(tmp)  # label names, for whoever serves the graph
    result = verify(model, graphs, run.task, splits)
    opsets = {o.domain or "ai.onnx": o.version
              for o in onnx.load(graphs["fp32"], load_external_data=False).opset_import}
    run_score = (run.results.get("student") or {}).get("score")
    if run_score is not None:
        # Training's own dev score, recomputed: a mismatch means other data settings.
        result["checks"]["reproduces_run_score"] = bool(
            abs(result["scores"]["pytorch"]["score"] - run_score) <= RUN_SCORE_TOLERANCE)
    summary = dict(
        source_run=str(run.run_dir.resolve()), student_dir=str(run.student_dir.resolve()),
        task=run.task.name, student=(run.results.get("student") or {}).get("name"),
        config=run.config_source, opset=opsets.get("ai.onnx"), quantize=quantize,
        exporter="torch.onnx.export(dynamo=True)", inputs=inputs, output="logits",
        eval_splits=list(run.task.eval_splits),
        max_length=run.data["max_length"] or 128,
        files={p.name: _file_entry(p) for p in graphs.values()},
        pytorch_bytes=sum(p.stat().st_size for p in run.student_dir.glob("*.safetensors")),
        export_seconds=round(export_seconds, 2), **result,
        run_score=run_score,
        versions={p: version(p) for p in ("torch", "transformers", *_EXTRA_MODULES)},
        created=datetime.datetime.now().isoformat(timespec="seconds"))
    atomic.write_json(tmp / EXPORT_JSON, summary)
    return summary


def export_run(run_dir: str | Path, out: str | Path | None = None, *,
               quantize: str | None = None, opset: int | None = None,
               overrides: Sequence[str] = ()) -> dict[str, Any]:
    """Export a finished run's student to ONNX, verify it on dev, write it atomically.

    Args:
        run_dir: The run folder (``results.json``, ``student/``).
        out: Destination folder (default ``RUN_DIR/export``), replaced only once complete.
        quantize: ``"int8"`` to also write the dynamically quantized graph.
        opset: ONNX opset (None: the exporter's default).
        overrides: See :func:`load_run`.

    Returns:
        What ``export.json`` holds.

    Raises:
        ExportError: Bad run dir, option or missing extra (before any weights load).
        VerificationError: The fp32 graph disagrees with PyTorch on dev.
    """
    if quantize is not None and quantize not in QUANTIZE:
        raise ExportError(f"--quantize {quantize!r}: supported: {', '.join(QUANTIZE)}")
    if opset is not None and opset < 7:
        raise ExportError(f"--opset {opset}: ONNX opsets start at 7 (default: the exporter's)")
    run = load_run(run_dir, overrides)
    require_extra()
    out = Path(out) if out is not None else RunDir(run.run_dir).export_dir

    from transformers import AutoModelForSequenceClassification

    from litdistill.models import load_tokenizer

    tokenizer = load_tokenizer(str(run.student_dir))
    splits = dev_batches(run, tokenizer)  # data problems surface before weights load
    model = AutoModelForSequenceClassification.from_pretrained(run.student_dir).eval()
    summary: dict[str, Any] = {}

    def fill(tmp: Path) -> None:
        summary.update(_write_graphs(tmp, model, tokenizer, run, splits, quantize, opset))

    atomic.write_dir(out, fill)
    summary["out"] = str(out)
    return summary


def _mb(n: int) -> str:
    return f"{n / 1e6:.1f} MB"


def _print_summary(summary: dict[str, Any]) -> None:
    checks, scores = summary["checks"], summary["scores"]
    print(f"exported {summary['source_run']} -> {summary['out']} (opset {summary['opset']})")
    for name, entry in summary["files"].items():
        print(f"  {name:<16} {_mb(entry['bytes']):>9}")
    fp32 = checks["fp32"]
    print(f"dev ({checks['rows']} rows): ONNX fp32 agrees with PyTorch on "
          f"{fp32['agreement']:.2%} of rows, max abs logit difference "
          f"{fp32['max_abs_logit_diff']:.2e}")
    line = f"dev score: PyTorch {scores['pytorch']['score']:.4f}, " \
           f"ONNX fp32 {scores['fp32']['score']:.4f}"
    if "int8" in scores:
        line += f", ONNX int8 {scores['int8']['score']:.4f} " \
                f"(agrees with PyTorch on {checks['int8']['agreement']:.2%})"
    print(line)
    if checks.get("reproduces_run_score") is False:
        print(f"warning: the run recorded a dev score of {summary['run_score']:.4f}: the dev "
              f"rows or max_length ({summary['max_length']}) differ from training's; "
              f"config from {summary['config']}", file=sys.stderr)


@cli_main
def main(argv: list[str] | None = None) -> int:
    """CLI: ``litdistill-export RUN_DIR [--out DIR] [--quantize int8] [--opset N]``."""
    parser = argparse.ArgumentParser(
        prog="litdistill-export", description="Export a finished run's student as ONNX (fp32, "
        "optionally int8), checked against PyTorch on the task's dev set.")
    parser.add_argument("run_dir", type=Path, help="a finished litdistill-train run folder")
    parser.add_argument("--out", type=Path, help="output folder (default: RUN_DIR/export)")
    # No argparse choices: a wrong value gets the one-line error and exit 2 of every other
    # bad input instead of argparse's usage text.
    parser.add_argument("--quantize", metavar="{int8}",
                        help="also write a dynamically quantized graph")
    parser.add_argument("--opset", type=int, help="ONNX opset (default: the exporter's)")
    parser.add_argument("overrides", nargs="*",
                        help="for runs without .hydra/config.yaml (the demo's): Hydra overrides "
                             "that recompose the run's config, e.g. experiment=demo_student")
    args = parser.parse_intermixed_args(argv)  # overrides may follow the options
    logging.basicConfig(level=logging.WARNING, format="%(message)s", stream=sys.stderr)
    import datasets
    import transformers

    # Progress bars of loading weights and tokenizing a dev split would bury the summary.
    datasets.disable_progress_bars()
    transformers.utils.logging.disable_progress_bar()
    summary = export_run(args.run_dir, args.out, quantize=args.quantize, opset=args.opset,
                         overrides=args.overrides)
    _print_summary(summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
