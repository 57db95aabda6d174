"""Dynamic padding + length-grouped batches vs padding every batch to 128 tokens.

Two ``litdistill.train.train(cfg)`` runs of one SST-2 epoch on the same model and data, same
seed and learning rate, differing only in batching:

* dynamic: ``data.padding=longest data.group_by_length=true`` (the project default: each
  batch padded to its longest row, rows of similar length batched together);
* fixed: ``data.padding=max_length data.group_by_length=false`` (every batch padded to
  ``data.max_length=128``, shuffled without grouping, as TinyBERT's and HF run_glue's scripts).

The model is plain fine-tuning (``teacher=none distill=none``) of a student cut from the
teacher's layers (``student=from_teacher student.source=<teacher folder>``), so the figure is
about padding alone. Reported: the epoch's training time (a callback times epoch start to
the start of the end-of-epoch validation, GPU-synchronised), the validation pass, the whole
``train()`` (``train_seconds``), and dev accuracy (the full dev set unless
``--eval-samples``). Tokenization is done once up front into a fresh cache, outside timing,
and a short untimed warm-up run goes first (one-off CUDA and allocator costs).

A third variant, ``dynamic_ungrouped`` (``data.padding=longest data.group_by_length=false``),
pads each batch to its longest row but keeps fixed128's shuffled batches: with the same seed
it sees the very same batches as fixed128, so it separates what padding costs in accuracy
(nothing, if masking is right) from what length grouping does to the batch order.

Goals: fixed / dynamic epoch time >= 3x; dev accuracy of both within 0.5 points. One seed
carries about +-1.5 points of noise on SST-2's 872 dev sentences, so ``--seeds 1,2,3`` runs
each variant once per seed and compares mean accuracies and the per-seed (paired) gaps.

Run (from the repository root, ``GLUE_DIR`` set)::

    python benchmarks/padding.py --quick                                  # check (~1 min)
    python benchmarks/padding.py --threads 2 --train-samples 2000 --out padding_cpu.json
    python benchmarks/padding.py --threads 2 --train-samples 2000 --lr 2e-4 --seeds 1,2,3 \
        --out padding_cpu_seeds.json                                       # accuracy
    python benchmarks/padding.py --device cuda --precision bf16 --out padding_gpu.json
    # GPU, mpnet_base random init, 6-layer student (accuracies not meaningful then)
    python benchmarks/padding.py --device cuda --precision bf16 --teacher <mpnet folder> \
        --random-init --student-layers 0,2,4,6,8,10 --out padding_gpu_mpnet.json
"""

from __future__ import annotations

import argparse
import shutil
import statistics
from typing import Any

from bench import add_common_args, console, median, setup, table, workdir, write_out
from pairs import load_classifier, parse_layers, save_classifier, teacher_path
from trainruns import prepare_tokenized, run_train, train_overrides, warm_up
from transformers import AutoConfig

from litdistill.models import load_tokenizer

VARIANTS = {
    "dynamic": ["data.padding=longest", "data.group_by_length=true"],
    "dynamic_ungrouped": ["data.padding=longest", "data.group_by_length=false"],
    "fixed128": ["data.padding=max_length", "data.group_by_length=false"],
}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_common_args(parser)
    parser.add_argument("--train-samples", type=int, default=None,
                        help="SST-2 training rows (default: all 67,349 on GPU, 2000 on CPU)")
    parser.add_argument("--eval-samples", type=int, default=None,
                        help="dev rows (default: all 872)")
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--lr", type=float, default=None,
                        help="optimizer.lr (default: conf/optimizer/adamw.yaml's)")
    parser.add_argument("--repeats", type=int, default=1,
                        help="runs of each variant per seed, alternating; medians of times")
    parser.add_argument("--seeds", default=None,
                        help="comma-separated seeds, one run of each variant per seed "
                             "(default: --seed); accuracies are compared as means and pairs")
    parser.add_argument("--variants", default="dynamic,fixed128",
                        help=f"comma-separated, of {', '.join(VARIANTS)} "
                             "(dynamic and fixed128 are always run)")
    parser.add_argument("--compile", action="store_true", help="compile=true (GPU)")
    parser.add_argument("--keep", action="store_true", help="keep the temp run folders")
    args = parser.parse_args(argv)
    if args.quick:
        args.train_samples = args.train_samples or 256
        args.eval_samples = args.eval_samples or 128
    if args.train_samples is None and args.device == "cpu":
        args.train_samples = 2000
    info = setup(args, "padding: dynamic + length-grouped vs fixed 128 tokens")

    work = workdir("padding")
    source = teacher_path(args.teacher)
    if args.random_init:  # a folder that train(cfg) can cut the student from
        source = save_classifier(load_classifier(source, True), load_tokenizer(str(source)),
                                 work / "random_init")
    layers = parse_layers(args.student_layers, AutoConfig.from_pretrained(source)
                          .num_hidden_layers)
    data_cache = work / "tokenized"
    prepare_tokenized(args, source, data_cache, args.train_samples, args.eval_samples)
    base = train_overrides(args, work / "cache", data_cache) + [
        "teacher=none", "student=from_teacher", f"student.source={source}",
        f"student.layers=[{','.join(map(str, layers))}]", "distill=none",
        f"data.max_length={args.max_length}",
        f"data.max_train_samples={args.train_samples or 'null'}",
        f"data.max_eval_samples={args.eval_samples or 'null'}",
    ]
    if args.lr is not None:
        base.append(f"optimizer.lr={args.lr}")
    console.print(f"student: layers {layers} of {source}; train rows: "
                  f"{args.train_samples or 'all'}; dev rows: {args.eval_samples or 'all'}; "
                  f"work dir {work}")

    names = [n for n in VARIANTS if n in {"dynamic", "fixed128", *args.variants.split(",")}]
    seeds = [int(x) for x in args.seeds.split(",")] if args.seeds else [args.seed]
    base = [o for o in base if not o.startswith("seed=")]
    warm_up(base + [f"seed={seeds[0]}"] + VARIANTS["dynamic"], work / "runs" / "warm-up")
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in names}
    for seed in seeds:
        for rep in range(args.repeats):
            for name in names:
                console.rule(f"{name} (seed {seed}, run {rep + 1}/{args.repeats})")
                result = run_train(base + [f"seed={seed}"] + VARIANTS[name],
                                   work / "runs" / f"{name}-{seed}-{rep}")
                result["seed"] = seed
                runs[name].append(result)
                console.print(f"{name}: epoch {result['epoch_seconds']:.1f} s, "
                              f"dev accuracy {result['score']:.4f}")

    def accuracy(rs: list[dict[str, Any]]) -> dict[int, float]:  # seed -> median over repeats
        return {s: median([r["score"] for r in rs if r["seed"] == s]) for s in seeds}

    summary = {name: {"epoch_seconds": median([r["epoch_seconds"] for r in rs]),
                      "val_seconds": median([sum(r["val_seconds"]) for r in rs]),
                      "train_seconds": median([r["train_seconds"] for r in rs]),
                      "dev_accuracy": statistics.mean(accuracy(rs).values()),
                      "dev_accuracy_std": (statistics.stdev(accuracy(rs).values())
                                           if len(seeds) > 1 else None),
                      "dev_accuracy_by_seed": accuracy(rs),
                      "steps": rs[0]["steps"]} for name, rs in runs.items()}
    fixed = summary["fixed128"]
    speedups = {n: fixed["epoch_seconds"] / s["epoch_seconds"] for n, s in summary.items()}
    # Paired by seed: each variant minus fixed128 on the same seed, in points.
    gaps = {n: [100 * (s["dev_accuracy_by_seed"][k] - fixed["dev_accuracy_by_seed"][k])
                for k in seeds] for n, s in summary.items() if n != "fixed128"}
    gap = statistics.mean(gaps["dynamic"])
    speedup = speedups["dynamic"]
    table(f"one SST-2 epoch (times: medians; accuracy: mean +- std over seeds {seeds})",
          ["batching", "epoch s", "speed-up", "steps", "val s", "train() s", "dev acc",
           "minus fixed128 (paired)"],
          [[name, f"{s['epoch_seconds']:.1f}", f"{speedups[name]:.2f}x", s["steps"],
            f"{s['val_seconds']:.1f}", f"{s['train_seconds']:.1f}",
            f"{s['dev_accuracy']:.4f}" + (f" +- {s['dev_accuracy_std']:.4f}"
                                          if s["dev_accuracy_std"] is not None else ""),
            _gap_cell(gaps.get(name))]
           for name, s in summary.items()])
    console.print(f"epoch speedup of dynamic padding: {speedup:.2f}x "
                  f"({'meets' if speedup >= 3 else 'MISSES'} the goal >= 3x); "
                  f"dev accuracy dynamic - fixed = {gap:+.2f} points "
                  f"({'within' if abs(gap) <= 0.5 else 'NOT within'} 0.5)")
    results = {"source": str(source), "student_layers": layers, "random_init": args.random_init,
               "train_samples": args.train_samples, "eval_samples": args.eval_samples,
               "max_length": args.max_length, "seeds": seeds, "runs": runs,
               "summary": summary, "speedups": speedups, "gaps_points_by_seed": gaps,
               "speedup": speedup, "accuracy_gap_points": gap,
               "goals": {"speedup": 3.0, "accuracy_points": 0.5},
               "meets_speedup": speedup >= 3.0, "meets_accuracy": abs(gap) <= 0.5}
    write_out(args.out, "padding", info, args, results)
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    return results


def _gap_cell(gaps: list[float] | None) -> str:
    if not gaps:
        return "-"
    if len(gaps) == 1:
        return f"{gaps[0]:+.2f}"
    return f"{statistics.mean(gaps):+.2f} +- {statistics.stdev(gaps):.2f} points"


if __name__ == "__main__":
    main()
