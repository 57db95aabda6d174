"""Inference cost of the zoo teachers and the student recipes built from them.

For each teacher (zoo ``minilm_l6``, 6 x 384; zoo ``mpnet_base``, 12 x 768, when fetched or
given) and its students:

* minilm_l6 -> ``minilm_3l`` (layers 0,2,4 cut), ``minilm_2l`` (layers 0,3), ``tinybert_4l``
  (``Sized(4, 312, 12, 1200)``: random init, the teacher's architecture and tokenizer);
* mpnet_base -> ``mpnet_6l`` (layers 0,2,...,10 cut) and ``tinybert_4l`` (MPNet 4 x 312);

it reports parameters, batch-1 latency (ms per sentence), batch-32 throughput (sentences/s),
peak memory, and the speedups relative to the family's teacher. Inputs are real SST-2 dev
sentences, tokenized up front (dynamic padding, max 128 tokens). Every model gets a
sequence-classification head (random: timing does not depend on its values).

* CPU: ``litdistill.latency.measure`` (fixed ``--threads``, warm-up, median of repeats); models
  are measured in interleaved rounds and the median over rounds is kept. Peak memory: each
  model in a fresh subprocess (same threads): peak RSS after loading and running it minus
  peak RSS after the imports and the tokenizer (so: weights + activations + loading
  overhead). Peak RSS is Linux's ``VmHWM`` (``ru_maxrss`` elsewhere: under Linux a
  subprocess's ``ru_maxrss`` starts at its parent's size, which hides a smaller child).
* GPU: the same protocol timed with ``torch.cuda.synchronize()`` around each forward; peak
  memory = ``torch.cuda.max_memory_allocated()`` over loading + both batch sizes, each model
  alone on the device after ``reset_peak_memory_stats()``.
* ``--precision bf16``: weights cast to bf16 (pure bf16 inference).

Goal: the students' speedups over their teacher (the demo measured ~1.7x at batch 1 and
~2x at batch 32 for minilm_3l on 2 CPU cores).

Run (from the repository root, ``GLUE_DIR`` set)::

    python benchmarks/student_vs_teacher.py --quick                       # check (~1 min)
    python benchmarks/student_vs_teacher.py --threads 2 --out svt_cpu.json
    python benchmarks/student_vs_teacher.py --device cuda --out svt_gpu_fp32.json
    python benchmarks/student_vs_teacher.py --device cuda --precision bf16 --out svt_gpu_bf16.json
    # without the weights on the machine (config.json + tokenizer files suffice):
    python benchmarks/student_vs_teacher.py --device cuda --teacher <minilm folder> \
        --mpnet <mpnet folder> --random-init
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import torch
from bench import add_common_args, console, setup, table, workdir, write_out
from pairs import load_classifier, sst2, teacher_path

from litdistill.latency import measure, measure_models
from litdistill.models import Pretrained, Sized, count_params, cut_layers, load_tokenizer


def build_models(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Every teacher and student: ``{name, family, role, model, tokenizer}``."""
    families = [("minilm_l6", teacher_path(args.teacher))]
    mpnet = mpnet_path(args)
    if mpnet is not None:
        families.append(("mpnet_base", mpnet))
    models = []
    for family, path in families:
        tokenizer = load_tokenizer(str(path))
        teacher = load_classifier(path, args.random_init)
        n = teacher.config.num_hidden_layers
        models.append({"name": family, "family": family, "role": "teacher", "model": teacher,
                       "tokenizer": tokenizer})
        cuts = {"minilm_3l": [0, 2, 4], "minilm_2l": [0, 3]} if n == 6 else \
            {f"{family.split('_')[0]}_{n // 2}l": list(range(0, n, 2))}
        for name, layers in cuts.items():
            models.append({"name": name, "family": family, "role": f"cut {layers}",
                           "model": cut_layers(teacher, layers), "tokenizer": tokenizer})
        tiny = Sized(4, 312, 12, 1200, name="tinybert_4l").build(
            2, False, teacher=Pretrained(str(path)))
        models.append({"name": "tinybert_4l", "family": family, "role": "Sized(4,312,12,1200)",
                       "model": tiny, "tokenizer": tokenizer})
    dtype = torch.bfloat16 if args.precision == "bf16" else torch.float32
    for entry in models:
        entry["model"].to(dtype).eval()
    return models


def mpnet_path(args: argparse.Namespace) -> Path | None:
    if args.mpnet == "none" or (args.quick and args.mpnet == "auto"):
        return None
    if args.mpnet != "auto":
        return teacher_path(args.mpnet)
    from litdistill import zoo

    if zoo.is_fetched("mpnet_base"):
        return zoo.asset_dir("mpnet_base")
    console.print("[yellow]mpnet_base is not fetched (litdistill-zoo fetch mpnet_base): "
                  "measuring the minilm_l6 family only")
    return None


# ----------------------------------------------------------------------------- memory
def peak_rss_mb() -> float:
    """This process's peak resident memory (MiB).

    ``VmHWM`` where Linux has it: ``ru_maxrss`` of a child started by ``subprocess`` starts
    at the parent's size (it survives fork + exec), so here it cannot see a smaller child.
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    scale = 2**20 if sys.platform == "darwin" else 1024  # bytes on macOS, KiB on Linux
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / scale


def memory_worker(folder: Path, texts_file: Path, threads: int | None, bf16: bool) -> None:
    """Subprocess: load one model from ``folder``, run both batch sizes, print RSS figures."""
    from bench import quiet
    from transformers import AutoModelForSequenceClassification

    quiet()
    texts = json.loads(texts_file.read_text())
    tokenizer = load_tokenizer(str(folder))
    before = peak_rss_mb()  # after the imports and the tokenizer
    model = AutoModelForSequenceClassification.from_pretrained(folder, dtype=torch.float32)
    if bf16:
        model.to(torch.bfloat16)
    for batch_size in (1, 32):
        measure(model, tokenizer, texts, batch_size, threads=threads, warmup=1, repeats=2)
    after = peak_rss_mb()
    print(json.dumps({"baseline_mb": before, "peak_mb": after, "delta_mb": after - before}))


def cpu_memory(models: list[dict[str, Any]], texts: list[str],
               args: argparse.Namespace) -> list[float]:
    """Peak RSS delta (MiB) of each model, each in a fresh Python process."""
    work = workdir("svt-memory")
    texts_file = work / "texts.json"
    texts_file.write_text(json.dumps(texts))
    deltas = []
    try:
        for i, entry in enumerate(models):
            folder = work / f"{i}-{entry['name']}"
            entry["model"].save_pretrained(folder)
            entry["tokenizer"].save_pretrained(folder)
            command = [sys.executable, __file__, "--memory-worker", str(folder),
                       "--texts-file", str(texts_file), "--precision", args.precision]
            if args.threads:
                command += ["--threads", str(args.threads)]
            out = subprocess.run(command, check=True, capture_output=True, text=True)
            deltas.append(json.loads(out.stdout.strip().splitlines()[-1])["delta_mb"])
            shutil.rmtree(folder)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return deltas


def gpu_memory(models: list[dict[str, Any]], texts: list[str]) -> list[float]:
    """Peak allocated GPU memory (MiB) of each model alone: weights + both batch sizes."""
    peaks = []
    for entry in models:
        torch.cuda.empty_cache()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        entry["model"].to("cuda")
        for batch_size in (1, 32):
            measure(entry["model"], entry["tokenizer"], texts, batch_size, warmup=1,
                         repeats=2)
        peaks.append((torch.cuda.max_memory_allocated() - base) / 2**20)
        entry["model"].to("cpu")
    return peaks


# ----------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> dict[str, Any] | None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_common_args(parser)
    parser.add_argument("--mpnet", default="auto",
                        help="mpnet_base folder, 'auto' (the zoo's when fetched; skipped "
                             "with --quick) or 'none'")
    parser.add_argument("--rounds", type=int, default=None,
                        help="interleaved rounds over all models (default 5; --quick 1)")
    parser.add_argument("--texts", type=int, default=64, help="SST-2 dev sentences used")
    parser.add_argument("--no-memory", action="store_true", help="skip the memory figures")
    parser.add_argument("--memory-worker", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--texts-file", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.memory_worker:
        memory_worker(args.memory_worker, args.texts_file, args.threads,
                      args.precision == "bf16")
        return None
    gpu = args.device == "cuda"
    rounds = args.rounds or (1 if args.quick else 5)
    r1 = 3 if args.quick else 10  # batch-32 calls: max(3, r1 // 3)
    info = setup(args, "student vs teacher: inference latency, throughput, memory")
    texts, _ = sst2(args.glue_dir, "dev", args.texts, args.seed)
    models = build_models(args)
    console.print(f"{len(models)} models; {len(texts)} SST-2 dev sentences; {rounds} rounds "
                  f"x ({r1} timed batch-1 + {max(3, r1 // 3)} timed batch-32 forwards); "
                  f"{'bf16' if args.precision == 'bf16' else 'fp32'} weights")

    memory = None
    if not args.no_memory:
        console.print("peak memory: " + ("each model alone on the GPU" if gpu else
                                         "each model in a fresh subprocess"))
        memory = gpu_memory(models, texts) if gpu else cpu_memory(models, texts, args)
    if gpu:
        for entry in models:
            entry["model"].to("cuda")
    timings = measure_models([(e["model"], e["tokenizer"]) for e in models], texts,
                             threads=args.threads, repeats=r1, rounds=rounds)
    rows = []
    for i, entry in enumerate(models):
        model = entry["model"]
        rows.append({
            "model": entry["name"], "family": entry["family"], "role": entry["role"],
            "layers": model.config.num_hidden_layers, "hidden": model.config.hidden_size,
            "params": count_params(model),
            "weights_mb": sum(p.numel() * p.element_size() for p in model.parameters()) / 2**20,
            **timings[i], "peak_memory_mb": memory[i] if memory else None,
        })
    for row in rows:
        base = next(r for r in rows if r["family"] == row["family"] and r["model"] == r["family"])
        row["speedup_b1"] = base["ms_per_example_b1"] / row["ms_per_example_b1"]
        row["speedup_b32"] = row["examples_per_s_b32"] / base["examples_per_s_b32"]
        row["params_ratio"] = row["params"] / base["params"]
    mem_title = "peak GPU MiB" if gpu else "peak RSS +MiB"
    table(f"inference on {info['gpu'] if gpu else info['cpu']} "
          f"({'bf16' if args.precision == 'bf16' else 'fp32'})",
          ["model", "layers x width", "params", "ms/ex b=1", "ex/s b=32", "speedup b=1",
           "speedup b=32", mem_title],
          [[r["model"], f"{r['layers']} x {r['hidden']}", f"{r['params']:,}",
            f"{r['ms_per_example_b1']:.2f}", f"{r['examples_per_s_b32']:.1f}",
            f"{r['speedup_b1']:.2f}x", f"{r['speedup_b32']:.2f}x",
            "-" if r["peak_memory_mb"] is None else f"{r['peak_memory_mb']:.0f}"]
           for r in rows])
    results = {"rows": rows, "rounds": rounds, "texts": len(texts),
               "random_init": args.random_init, "precision": args.precision,
               "memory_method": None if memory is None else
               ("torch.cuda.max_memory_allocated, model alone" if gpu else
                "ru_maxrss delta in a fresh subprocess")}
    write_out(args.out, "student_vs_teacher", info, args, results)
    return results


if __name__ == "__main__":
    main()
