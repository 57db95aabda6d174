"""Framework overhead: litdistill's Lightning KD step vs a hand-written PyTorch loop.

Both sides do the same work on the same models and the same fixed list of batches: a frozen
teacher's forward (inference mode), the student's forward, ``distillation_loss`` (KD at T=2
+ cross-entropy, 0.5/0.5), backward, AdamW step (same parameter groups; fused),
zero_grad; host-to-device copies of each batch; bf16 autocast (and a bf16 teacher, as the
module's ``on_fit_start`` does) under ``--precision bf16``. The Lightning side is a
``litdistill.module.DistillationModule`` with the live teacher in ``trainer.fit`` (no logger,
no checkpointing, no validation, no progress bar; its per-step ``log_dict`` and schedule
bookkeeping count as framework cost). Batches are real SST-2 training sentences, tokenized
with the teacher's tokenizer, dynamically padded, batch 32, max length 128, collated once up
front (data loading is not part of either side).

Timing: steps ``warmup..warmup+steps-1`` of each run, wall clock, GPU-synchronised at both
ends; runs alternate (loop, framework, loop, framework, ...) and the medians are compared, so
drift on a shared machine hits both sides. The same model objects are reused (compiled once
with ``--compile``); each run gets a fresh optimizer.

Goal: framework samples/s >= 0.95 x the hand-written loop's.

Run (from the repository root; ``GLUE_DIR`` = folder with ``SST-2/train.tsv``)::

    # check the script (< 1 min on 2 CPU cores)
    python benchmarks/overhead.py --quick
    # CPU: zoo minilm_l6 (6 layers) -> 3-layer student
    python benchmarks/overhead.py --threads 2 --out overhead_cpu.json
    # GPU: mpnet_base (12 layers, random init from its config.json) -> 6 layers; fp32, bf16,
    # bf16 + compile (about 2 min each on an H100; allow >= 5 min with --compile: the first
    # run's warm-up compiles, and a short smoke run did not finish compiling in 120 s)
    M="--teacher <mpnet_base folder> --random-init --student-layers 0,2,4,6,8,10"
    python benchmarks/overhead.py --device cuda $M --out overhead_gpu_fp32.json
    python benchmarks/overhead.py --device cuda $M --precision bf16 --out overhead_gpu_bf16.json
    TORCH_LOGS=recompiles python benchmarks/overhead.py --device cuda $M --precision bf16 \
        --compile --warmup 40 --out overhead_gpu_bf16_compile.json
"""

from __future__ import annotations

import argparse
import functools
import tempfile
import time
from typing import Any

import lightning as L
import torch
from bench import add_common_args, console, median, setup, table, write_out
from pairs import Pair, build_pair, collate_batches, sst2
from timing import StepTimer, sync
from torch.utils.data import DataLoader

from litdistill.losses import distillation_loss
from litdistill.module import DistillationModule
from litdistill.objective import Objective
from litdistill.optim import param_groups
from litdistill.tasks import TASKS

TEMPERATURE, ALPHA_KD, ALPHA_TASK = 2.0, 0.5, 0.5


def optimizer_factory(lr: float) -> Any:
    """AdamW as conf/optimizer/adamw.yaml (the module adds ``fused=True`` itself)."""
    return functools.partial(torch.optim.AdamW, lr=lr, weight_decay=0.01)


def make_optimizer(student: torch.nn.Module, lr: float, device: str) -> torch.optim.Optimizer:
    """The optimizer ``DistillationModule.configure_optimizers`` builds, for the hand loop."""
    groups = param_groups((n, p) for n, p in student.named_parameters() if p.requires_grad)
    # fused, as the module's configure_optimizers picks (no clipping here, so on every device)
    return optimizer_factory(lr)(groups, fused=True)


def run_loop(pair: Pair, batches: list[dict[str, torch.Tensor]], args: argparse.Namespace,
             warmup: int) -> float:
    """The hand-written loop; returns the seconds of steps ``warmup..len(batches)-1``."""
    device = torch.device(args.device)
    student, teacher = pair.student.to(device).train(), pair.teacher.to(device).eval()
    bf16 = args.precision == "bf16"
    if bf16:
        teacher.to(torch.bfloat16)
    optimizer = make_optimizer(student, args.lr, args.device)
    start = 0.0
    for step, cpu_batch in enumerate(batches):
        if step == warmup:
            sync(device)
            start = time.perf_counter()
        batch = {k: v.to(device, non_blocking=True) for k, v in cpu_batch.items()}
        labels = batch.pop("labels")
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            with torch.inference_mode():
                t_logits = teacher(**batch).logits
            t_logits = t_logits.float().clone()  # as the module: a normal tensor for the KL
            s_logits = student(**batch).logits
            loss = distillation_loss(s_logits, t_logits, labels, regression=False,
                                     temperature=TEMPERATURE, alpha_kd=ALPHA_KD,
                                     alpha_task=ALPHA_TASK)["loss"]
        loss.backward()
        if args.clip_grad:
            torch.nn.utils.clip_grad_norm_(student.parameters(), args.clip_grad)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    sync(device)
    return time.perf_counter() - start


def run_framework(pair: Pair, batches: list[dict[str, torch.Tensor]],
                  args: argparse.Namespace, warmup: int) -> float:
    """``trainer.fit`` of a DistillationModule over the same batches; same timed steps."""
    module = DistillationModule(
        student=pair.student, teacher=pair.teacher, task=TASKS["sst2"],
        optimizer=optimizer_factory(args.lr), scheduler=None,
        objective=Objective(temperature=TEMPERATURE, alpha_kd=ALPHA_KD, alpha_task=ALPHA_TASK))
    timer = StepTimer(warmup, len(batches) - 1)
    extras: dict[str, object] = {"logger": False, "callbacks": [timer]}
    if args.monitor:
        # What a run adds by default (conf/callbacks/default.yaml, logger=csv): the run
        # monitor (lr, grad norm, throughput, epoch time) and a CSV log, every 10 steps
        # (configs log every 50: this counts the cost five times as often).
        from lightning.pytorch.loggers import CSVLogger

        from litdistill.monitors import RunMonitor

        extras = {"logger": CSVLogger(tempfile.mkdtemp(prefix="overhead-")),
                  "callbacks": [timer, RunMonitor()], "log_every_n_steps": 10}
    trainer = L.Trainer(
        accelerator="gpu" if args.device == "cuda" else "cpu", devices=1,
        precision="bf16-mixed" if args.precision == "bf16" else "32-true",
        max_epochs=1, max_steps=len(batches), limit_val_batches=0, num_sanity_val_steps=0,
        enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, gradient_clip_val=args.clip_grad or None, **extras)
    # batch_size=None: each item already is a collated batch.
    loader = DataLoader(batches, batch_size=None, shuffle=False)
    trainer.fit(module, train_dataloaders=loader)
    if timer.seconds is None:
        raise RuntimeError("the step timer did not fire: fewer batches ran than expected")
    return timer.seconds


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_common_args(parser)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--warmup", type=int, default=None,
                        help="untimed steps per run (default: 20 on GPU, 3 on CPU)")
    parser.add_argument("--steps", type=int, default=None,
                        help="timed steps per run (default: 200 on GPU, 20 on CPU)")
    parser.add_argument("--repeats", type=int, default=None,
                        help="runs of each side, alternating (default 5 on GPU, 3 on CPU; "
                             "--quick: 1)")
    parser.add_argument("--lr", type=float, default=5e-5)
    parser.add_argument("--clip-grad", type=float, default=0.0,
                        help="clip the gradient norm on both sides (0: off, as the brief)")
    parser.add_argument("--monitor", action="store_true",
                        help="the Lightning side also runs litdistill.monitors.RunMonitor and "
                        "a CSV logger (what a default run adds)")
    parser.add_argument("--compile", action="store_true",
                        help="model.compile(dynamic=True) student and teacher (GPU)")
    args = parser.parse_args(argv)
    gpu = args.device == "cuda"
    if args.quick:
        args.warmup, args.steps, args.repeats = (args.warmup or 2, args.steps or 4,
                                                 args.repeats or 1)
    warmup = args.warmup if args.warmup is not None else (20 if gpu else 3)
    steps = args.steps or (200 if gpu else 20)
    repeats = args.repeats or (5 if gpu else 3)
    info = setup(args, "framework overhead: Lightning KD step vs hand-written loop")

    pair = build_pair(args)
    console.print(pair.describe())
    n = warmup + steps
    sentences, labels = sst2(args.glue_dir, "train", n * args.batch_size, args.seed)
    batches = collate_batches(pair.tokenizer, sentences, labels, args.batch_size,
                              args.max_length)
    if gpu:
        batches = [{k: v.pin_memory() for k, v in b.items()} for b in batches]
    tokens = sum(int(b["attention_mask"].numel()) for b in batches[warmup:])
    console.print(f"{len(batches)} batches of {args.batch_size} SST-2 sentences, "
                  f"mean padded length {tokens / steps / args.batch_size:.1f}; "
                  f"warm-up {warmup} + timed {steps} steps per run, {repeats} runs per side")
    if args.compile:
        for model in (pair.student, pair.teacher):
            model.compile(dynamic=True)

    samples = steps * args.batch_size
    runs: dict[str, list[float]] = {"loop": [], "lightning": []}
    for r in range(repeats):
        for side, fn in (("loop", run_loop), ("lightning", run_framework)):
            seconds = fn(pair, batches, args, warmup)
            runs[side].append(samples / seconds)
            console.print(f"run {r + 1}/{repeats} {side:>9}: {samples / seconds:8.1f} samples/s "
                          f"({1000 * seconds / steps:.1f} ms/step)")
    loop, lightning = median(runs["loop"]), median(runs["lightning"])
    ratio = lightning / loop
    per_run = [f / lo for f, lo in zip(runs["lightning"], runs["loop"], strict=True)]
    table("samples/s (median of runs)", ["side", "samples/s", "ms/step", "runs"],
          [["hand-written loop", f"{loop:.1f}", f"{1000 * args.batch_size / loop:.1f}",
            ", ".join(f"{v:.1f}" for v in runs["loop"])],
           ["Lightning + DistillationModule", f"{lightning:.1f}",
            f"{1000 * args.batch_size / lightning:.1f}",
            ", ".join(f"{v:.1f}" for v in runs["lightning"])]])
    verdict = "meets" if ratio >= 0.95 else "MISSES"
    console.print(f"ratio framework / loop = {ratio:.3f} ({verdict} the goal >= 0.95); "
                  f"per run: {', '.join(f'{v:.3f}' for v in per_run)}")
    results = {
        "pair": pair.describe(), "teacher_path": str(pair.path), "student_layers": pair.layers,
        "random_init": args.random_init, "precision": args.precision, "compile": args.compile,
        "batch_size": args.batch_size, "warmup_steps": warmup, "timed_steps": steps,
        "repeats": repeats, "mean_padded_length": tokens / steps / args.batch_size,
        "loop_samples_per_s": runs["loop"], "lightning_samples_per_s": runs["lightning"],
        "loop_median": loop, "lightning_median": lightning, "ratio": ratio,
        "ratio_per_run": per_run, "goal": 0.95, "meets_goal": ratio >= 0.95,
    }
    write_out(args.out, "overhead", info, args, results)
    return results


if __name__ == "__main__":
    main()
