"""Where a KD training step's time goes: model compute vs everything else (torch.profiler).

Runs ``trainer.fit`` of a ``litdistill.module.DistillationModule`` with a live teacher on the
real data path (``GlueDataModule``: cached tokenization, length-grouped sampler,
``DataCollatorWithPadding``), configured as ``conf/trainer/default.yaml`` and
``conf/optimizer|scheduler`` configure a run (gradient clipping 1.0, AdamW, linear warm-up,
CSV logger every 25 steps; no checkpointing, no validation), and profiles ``--steps`` steps
after ``--warmup`` (CPU activities, plus CUDA on ``--device cuda``).

Named ranges (``torch.profiler.record_function``) split the host thread's time, each moment
counted in the innermost range:

* model compute: ``student.forward`` / ``teacher.forward`` (forward hooks), ``backward``
  (``on_before_backward``..``on_after_backward``), ``Optimizer.step`` (AdamW itself, torch's
  own range, minus the closure inside it), ``Optimizer.zero_grad``, ``clip_gradients``,
  ``training_step (loss + glue)`` (the rest of ``training_step``: batch split, weights,
  ``distillation_loss``);
* not compute: ``log_dict``, ``data.fetch`` / ``data.collate`` (DataLoader fetch with
  ``--num-workers 0``; collation inside it), ``transfer_batch_to_device`` (host-to-device
  copies), and ``other``: the profiled wall time in no range (Lightning's loop, hooks,
  scheduler, progress/logger bookkeeping, Python).

It also prints the top ops by self time, counts host-device syncs (``aten::_local_scalar_dense``
= ``.item()``/``float(tensor)``, ``cudaStreamSynchronize``) per step with the range each sits
in, and on GPU the kernels' busy share of the wall time. Profiling adds overhead to small ops:
read shares, not absolute times; the unprofiled ms/step of the late warm-up steps is printed
beside the profiled one.

Goal: find the non-compute overhead; model compute should be >= 95% of a step.

Run (from the repository root, ``GLUE_DIR`` set)::

    python benchmarks/profile_step.py --quick                                 # check (~1 min)
    python benchmarks/profile_step.py --threads 2 --out profile_cpu.json
    python benchmarks/profile_step.py --device cuda --precision bf16 --teacher <mpnet folder> \
        --random-init --student-layers 0,2,4,6,8,10 --trace trace.json --out profile_gpu.json
"""

from __future__ import annotations

import argparse
import functools
import shutil
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import lightning as L
import torch
import torch.utils.data._utils.fetch as torch_fetch
from bench import add_common_args, console, setup, table, workdir, write_out
from pairs import build_pair
from timing import sync
from torch.autograd.profiler import record_function
from torch.profiler import ProfilerActivity, profile

from litdistill.data import DataOptions, build_datamodule
from litdistill.module import DistillationModule
from litdistill.objective import Objective
from litdistill.optim import linear_warmup_decay
from litdistill.tasks import TASKS

COMPUTE = {
    "student.forward": "student forward", "teacher.forward": "teacher forward (no grad)",
    "backward": "backward", "Optimizer.step#AdamW.step": "AdamW step",
    "Optimizer.zero_grad#AdamW.zero_grad": "zero_grad", "clip_gradients": "gradient clipping",
    "training_step": "training_step (loss + glue)",
}
OVERHEAD = {
    "log_dict": "self.log_dict", "data.fetch": "data: sampler + rows (DataLoader fetch)",
    "data.collate": "data: collate (pad)", "transfer_batch_to_device": "host-to-device copy",
}
NAMED = {**COMPUTE, **OVERHEAD}
SYNC_OPS = ("aten::_local_scalar_dense", "cudaStreamSynchronize", "cudaDeviceSynchronize")


# ----------------------------------------------------------------------------- ranges
class _Range:
    """A record_function range opened and closed by two different hooks."""

    def __init__(self, name: str) -> None:
        self.name, self.stack = name, []

    def open(self, *_: Any) -> None:
        ctx = record_function(self.name)
        ctx.__enter__()
        self.stack.append(ctx)

    def close(self, *_: Any) -> None:
        if self.stack:
            self.stack.pop().__exit__(None, None, None)


def _ranged(name: str, fn: Any) -> Any:
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with record_function(name):
            return fn(*args, **kwargs)
    return wrapper


def instrument(module: DistillationModule) -> None:
    """Name the module's parts: forward hooks on both models, wrapped hook methods."""
    for name, model in (("student.forward", module.student), ("teacher.forward",
                                                               module.teacher)):
        rng = _Range(name)
        model.register_forward_pre_hook(rng.open)
        model.register_forward_hook(rng.close)
    # Instance attributes shadow the methods; Lightning looks hooks up with getattr.
    for attr, name in (("training_step", "training_step"), ("log_dict", "log_dict"),
                       ("transfer_batch_to_device", "transfer_batch_to_device"),
                       ("configure_gradient_clipping", "clip_gradients")):
        setattr(module, attr, _ranged(name, getattr(module, attr)))
    # The DataLoader's in-process fetch (num_workers=0): sampler indices -> rows -> collate.
    original = torch_fetch._MapDatasetFetcher.fetch
    if not getattr(original, "_ranged", False):
        torch_fetch._MapDatasetFetcher.fetch = _ranged("data.fetch", original)
        torch_fetch._MapDatasetFetcher.fetch._ranged = True


class Window(L.Callback):
    """Backward range, and the profiler running from the end of step ``warmup - 1`` to the
    end of step ``last`` (so the window holds ``last - warmup + 1`` whole steps, each with
    its batch fetch)."""

    def __init__(self, prof: profile, warmup: int, last: int) -> None:
        self.prof, self.warmup, self.last = prof, warmup, last
        self.backward = _Range("backward")
        self.seconds = 0.0
        self.unprofiled: float | None = None  # seconds per step before profiling
        self._t = self._start = 0.0

    def on_before_backward(self, trainer: L.Trainer, module: L.LightningModule,
                           loss: torch.Tensor) -> None:
        self.backward.open()

    def on_after_backward(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        self.backward.close()

    def on_train_batch_end(self, trainer: L.Trainer, module: L.LightningModule, outputs: Any,
                           batch: Any, batch_idx: int) -> None:
        # Synchronise only at the window's edges, so the host may run ahead as usual.
        if batch_idx not in (1, self.warmup - 1, self.last):
            return
        sync(module.device)
        now = time.perf_counter()
        if batch_idx == 1:
            self._t = now
        if batch_idx == self.warmup - 1:
            if batch_idx > 1:  # steps 2..warmup-1, without the profiler
                self.unprofiled = (now - self._t) / (batch_idx - 1)
            self.prof.start()
            self._start = time.perf_counter()
        elif batch_idx == self.last:
            self.prof.stop()
            self.seconds = now - self._start


# ----------------------------------------------------------------------------- analysis
def _named_children(event: Any) -> list[Any]:
    out = []
    for child in event.cpu_children:
        out.extend([child] if child.name in NAMED else _named_children(child))
    return out


def _named_ancestor(event: Any) -> str:
    parent = event.cpu_parent
    while parent is not None and parent.name not in NAMED:
        parent = parent.cpu_parent
    return parent.name if parent is not None else "other"


def analyse(prof: profile, wall_s: float, steps: int, gpu: bool) -> dict[str, Any]:
    """Exclusive host time per named range, syncs, GPU busy share."""
    events = prof.events()
    cpu = torch.autograd.DeviceType.CPU
    # Host ops only: on GPU the ranges also appear as device-side annotations.
    host = [e for e in events if e.device_type == cpu]
    main = Counter(e.thread for e in host if e.name == "training_step").most_common(1)
    main_thread = main[0][0] if main else None
    exclusive: dict[str, float] = defaultdict(float)
    gpu_ms: dict[str, float] = defaultdict(float)
    syncs: Counter[tuple[str, str]] = Counter()
    for e in host:
        kernels_us = sum(k.duration for k in getattr(e, "kernels", []))
        if kernels_us:  # a kernel belongs to the innermost range around its launch
            where = e.name if e.name in NAMED else _named_ancestor(e)
            gpu_ms["backward" if e.thread != main_thread else where] += kernels_us / 1e3
        if e.thread != main_thread:
            continue
        if e.name in NAMED:
            inner = sum(c.time_range.elapsed_us() for c in _named_children(e))
            exclusive[e.name] += (e.time_range.elapsed_us() - inner) / 1e6
        elif e.name in SYNC_OPS:
            syncs[(e.name, _named_ancestor(e))] += 1
    named_total = sum(exclusive.values())
    rows = [{"range": NAMED[name], "key": name,
             "kind": "compute" if name in COMPUTE else "overhead",
             "seconds": exclusive.get(name, 0.0)} for name in NAMED]
    rows.append({"range": "other (Lightning loop, hooks, scheduler, Python)", "key": "other",
                 "kind": "overhead", "seconds": max(wall_s - named_total, 0.0)})
    for row in rows:
        row["ms_per_step"] = 1000 * row["seconds"] / steps
        row["share"] = row["seconds"] / wall_s
    compute = sum(r["seconds"] for r in rows if r["kind"] == "compute")
    result = {"wall_seconds": wall_s, "steps": steps, "ms_per_step": 1000 * wall_s / steps,
              "ranges": rows, "compute_share": compute / wall_s,
              "syncs_per_step": {f"{op} in {where}": n / steps
                                 for (op, where), n in syncs.most_common()}}
    if gpu:
        kernels = [e for e in events if e.device_type != cpu and e.name not in NAMED
                   and not getattr(e, "is_user_annotation", False)]
        busy_us = sum(e.self_device_time_total for e in kernels)
        result["gpu_kernel_busy_share"] = busy_us / 1e6 / wall_s
        result["gpu_ms_per_range"] = {k: v / steps for k, v in gpu_ms.items()}
    return result


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_common_args(parser)
    parser.add_argument("--steps", type=int, default=20, help="profiled steps")
    parser.add_argument("--warmup", type=int, default=6, help="unprofiled steps first (>= 1)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--num-workers", type=int, default=0,
                        help="DataLoader workers (0: data costs show up in-process)")
    parser.add_argument("--logger", choices=("csv", "none"), default="csv",
                        help="csv: as conf/logger/csv.yaml (the default run)")
    parser.add_argument("--log-every-n-steps", type=int, default=25)
    parser.add_argument("--progress-bar", action="store_true",
                        help="keep Lightning's default progress bar")
    parser.add_argument("--top", type=int, default=15, help="ops in the top-ops tables")
    parser.add_argument("--trace", type=Path, default=None, help="write a Chrome trace")
    args = parser.parse_args(argv)
    if args.quick:
        args.steps, args.warmup = min(args.steps, 4), min(args.warmup, 2)
    args.warmup = max(args.warmup, 1)
    gpu = args.device == "cuda"
    info = setup(args, "profile of KD training steps (Lightning + DistillationModule)")

    pair = build_pair(args)
    console.print(pair.describe())
    work = workdir("profile")
    n_steps = args.warmup + args.steps
    options = DataOptions(
        glue_dir=args.glue_dir, max_length=args.max_length,
        batch_size=args.batch_size, max_train_samples=n_steps * args.batch_size,
        max_eval_samples=64, num_workers=args.num_workers, pin_memory=gpu, seed=args.seed,
        cache_dir=str(work / "tokenized"))
    datamodule = build_datamodule(options, options.read(TASKS["sst2"]), pair.tokenizer)
    collate = datamodule._collate  # the loader's collate_fn, named in the profile
    datamodule._collate = lambda: _ranged("data.collate", collate())
    module = DistillationModule(
        student=pair.student, teacher=pair.teacher, task=TASKS["sst2"],
        optimizer=functools.partial(torch.optim.AdamW, lr=5e-5, weight_decay=0.01),
        scheduler=functools.partial(linear_warmup_decay, warmup_ratio=0.1),
        objective=Objective(temperature=2.0, alpha_kd=0.5, alpha_task=0.5))
    instrument(module)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if gpu else [])
    prof = profile(activities=activities)
    window = Window(prof, args.warmup, n_steps - 1)
    logger = False
    if args.logger == "csv":
        from lightning.pytorch.loggers import CSVLogger

        logger = CSVLogger(str(work), name="csv")
    trainer = L.Trainer(
        accelerator="gpu" if gpu else "cpu", devices=1,
        precision="bf16-mixed" if args.precision == "bf16" else "32-true",
        max_epochs=1, max_steps=n_steps, limit_val_batches=0, num_sanity_val_steps=0,
        gradient_clip_val=1.0, log_every_n_steps=args.log_every_n_steps, logger=logger,
        enable_checkpointing=False, enable_progress_bar=args.progress_bar,
        enable_model_summary=False, callbacks=[window], default_root_dir=str(work))
    trainer.fit(module, datamodule=datamodule)
    console.print(f"profiled {args.steps} steps in {window.seconds:.1f} s; analysing the trace")
    started = time.perf_counter()
    result = analyse(prof, window.seconds, args.steps, gpu)
    sort_keys = ["self_cpu_time_total"] + (["self_device_time_total"] if gpu else [])
    tops = {}
    for key in sort_keys:
        text = prof.key_averages().table(sort_by=key, row_limit=args.top, max_name_column_width=60)
        console.print(f"[bold]top {args.top} ops by {key}")
        console.print(text, highlight=False, markup=False)
        tops[key] = text
    console.print(f"analysis took {time.perf_counter() - started:.1f} s")
    if args.trace:
        prof.export_chrome_trace(str(args.trace))
        console.print(f"wrote {args.trace}")
    unprofiled = 1000 * window.unprofiled if window.unprofiled else None
    result["unprofiled_ms_per_step"] = unprofiled
    table(f"host time per step over {args.steps} profiled steps "
          f"({result['ms_per_step']:.1f} ms/step profiled"
          + (f", {unprofiled:.1f} unprofiled)" if unprofiled else ")"),
          ["range", "kind", "ms/step", "share"]
          + (["GPU kernel ms/step"] if gpu else []),
          [[r["range"], r["kind"], f"{r['ms_per_step']:.2f}", f"{r['share']:.1%}"]
           + ([f"{result['gpu_ms_per_range'].get(r['key'], 0.0):.2f}"] if gpu else [])
           for r in result["ranges"]])
    console.print(f"model compute: {result['compute_share']:.1%} of the host's step time "
                  f"({'meets' if result['compute_share'] >= 0.95 else 'MISSES'} >= 95%)")
    if gpu:
        console.print(f"GPU kernels busy {result['gpu_kernel_busy_share']:.1%} of the wall time")
    console.print("host-device syncs per step: " + (", ".join(
        f"{k}: {v:.2f}" for k, v in result["syncs_per_step"].items()) or "none"))
    result["top_ops"] = tops
    write_out(args.out, "profile_step", info, args, result)
    shutil.rmtree(work, ignore_errors=True)  # tokenized cache and CSV logs of this run
    return result


if __name__ == "__main__":
    main()
