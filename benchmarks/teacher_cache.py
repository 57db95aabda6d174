"""Teacher-output cache: KD epochs with cached teacher logits, and a 4-student sweep.

All runs are ``litdistill.train.train(cfg)`` on composed configs, same teacher, same SST-2
rows, same seed, ``distill=kd teacher_gate=null`` (the teacher's classification head is random
unless ``--teacher`` is a fine-tuned folder: fine for timing), one epoch each; tokenization
is done once up front into a shared cache, so no run pays for it, and a short untimed
warm-up run (``teacher_cache=off``, 4 batches) goes first.

(a) one 6 -> 3 layer pair (``student=from_teacher``, layers 0,2,4 of a 6-layer teacher):
    the KD epoch (training part, callback-timed) with ``teacher_cache=off`` (live teacher
    every step) vs a warm ``teacher_cache=auto`` run (batches carry the cached logits, no
    teacher forward); the cold ``auto`` run that fills the cache is reported too (its extra
    cost is the one teacher pass over train, inside ``train_seconds``). Runs alternate
    (off, warm, off, warm, ...) after the cold one; medians are compared.
(b) a sweep of 4 students (``minilm_3l minilm_2l minilm_1l tinybert_4l``), total wall time of
    the 4 runs with a shared cache starting empty (the first job computes the logits, the
    other three read them) vs the same 4 runs with ``teacher_cache=off``; each job trains
    ``--sweep-epochs`` epochs (default 3, ``conf/trainer/default.yaml``'s ``max_epochs``).
    The ratio depends on it: the cache saves the teacher's forward on every step of every
    epoch of every job but one teacher pass, while loading, validation and export cost the
    same on both sides. For a 6-layer teacher and students of 3, 2, 1 layers and 4 x 312
    (training ~ 3 forwards), training compute is about (9+6+3+8) + 6 = 32 vs (9+6+3+8) +
    4 x 6 = 50 layer-forwards per epoch: 0.64x for one epoch, (3 x 26 + 6) / (3 x 50) =
    0.56x for three, before fixed costs. The jobs run as
    sequential ``train(cfg)`` calls in this one process: that is exactly what Hydra's basic
    ``--multirun`` launcher does (it calls the task function in-process, job after job), minus
    Hydra's per-job run-dir and logging set-up, which costs the same on both sides; running a
    real ``--multirun`` subprocess would only add process start and imports once per side.

With ``--transfer-rows N`` every run also learns from N unlabelled SST-2 rows
(``transfer=train_rest``: the training rows outside the labelled subset): (a) then measures a
KD epoch over labelled + transfer rows with their cached logits vs a live teacher.

Goals: warm-cache KD epoch >= 1.4x faster than off (with or without a transfer set); the
shared-cache sweep <= 0.6x the time of the 4 independent runs.

Run (from the repository root, ``GLUE_DIR`` set)::

    python benchmarks/teacher_cache.py --quick                                 # check (~2 min)
    python benchmarks/teacher_cache.py --threads 2 --train-samples 2000 --out tcache_cpu.json
    python benchmarks/teacher_cache.py --threads 2 --train-samples 1000 --transfer-rows 4000 \
        --skip-sweep --out tcache_transfer_cpu.json
    python benchmarks/teacher_cache.py --device cuda --precision bf16 --out tcache_gpu.json
    # GPU, mpnet_base random init -> 6 layers (the sweep's cuts then come from 12 layers)
    python benchmarks/teacher_cache.py --device cuda --precision bf16 --teacher <mpnet folder> \
        --random-init --student-layers 0,2,4,6,8,10 --out tcache_gpu_mpnet.json
"""

from __future__ import annotations

import argparse
import shutil
import time
from pathlib import Path
from typing import Any

from bench import add_common_args, console, median, setup, table, workdir, write_out
from pairs import load_classifier, parse_layers, save_classifier, teacher_path
from trainruns import prepare_tokenized, run_train, train_overrides, warm_up

from litdistill.models import load_tokenizer

SWEEP = "minilm_3l,minilm_2l,minilm_1l,tinybert_4l"


def epoch_benchmark(args: argparse.Namespace, base: list[str], layers: list[int],
                    work: Path, data_cache: Path) -> dict[str, Any]:
    """(a): off vs warm auto (alternating) after one cold auto run, same 6 -> 3 pair."""
    pair = ["student=from_teacher", f"student.layers=[{','.join(map(str, layers))}]"]
    cache = work / "cache_a"

    def run(name: str, mode: str, rep: int) -> dict[str, Any]:
        console.rule(f"(a) {name} run {rep + 1}")
        result = run_train(train_overrides(args, cache, data_cache) + base + pair
                           + [f"teacher_cache={mode}"], work / "runs" / f"a-{name}-{rep}")
        console.print(f"{name}: epoch {result['epoch_seconds']:.1f} s, train() "
                      f"{result['train_seconds']:.1f} s")
        return result

    warm_up(train_overrides(args, cache, data_cache) + base + pair + ["teacher_cache=off"],
            work / "runs" / "warm-up")
    runs: dict[str, list[dict[str, Any]]] = {"cold": [run("cold", "auto", 0)], "off": [],
                                             "warm": []}
    hits = runs["cold"][0]["teacher_cache"]["splits"]
    if any(split["hit"] for split in hits.values()):
        raise RuntimeError(f"the cold run hit an existing cache entry: {hits}")
    for rep in range(args.repeats):
        runs["off"].append(run("off", "off", rep))
        runs["warm"].append(run("warm", "auto", rep))
        if not all(s["hit"] for s in runs["warm"][-1]["teacher_cache"]["splits"].values()):
            raise RuntimeError("the warm run missed the cache")
    summary = {name: {"epoch_seconds": median([r["epoch_seconds"] for r in rs]),
                      "train_seconds": median([r["train_seconds"] for r in rs]),
                      "steps": rs[0]["steps"], "dev_accuracy": median([r["score"] for r in rs])}
               for name, rs in runs.items()}
    speedup = summary["off"]["epoch_seconds"] / summary["warm"]["epoch_seconds"]
    table(f"(a) one KD epoch, student layers {layers} (medians)",
          ["teacher_cache", "epoch s", "steps", "train() s", "dev acc"],
          [[{"cold": "auto, cold (fills it)", "off": "off (live teacher)",
             "warm": "auto, warm (cached logits)"}[name], f"{s['epoch_seconds']:.1f}",
            s["steps"], f"{s['train_seconds']:.1f}", f"{s['dev_accuracy']:.4f}"]
           for name, s in summary.items()])
    console.print(f"KD epoch speedup with cached logits: {speedup:.2f}x "
                  f"({'meets' if speedup >= 1.4 else 'MISSES'} the goal >= 1.4x)")
    return {"runs": runs, "summary": summary, "speedup": speedup, "goal": 1.4,
            "meets_goal": speedup >= 1.4}


def sweep_benchmark(args: argparse.Namespace, base: list[str], students: list[str],
                    work: Path, data_cache: Path) -> dict[str, Any]:
    """(b): the sweep with a shared cache (starting empty) vs with teacher_cache=off."""
    sides: dict[str, list[dict[str, Any]]] = {"shared": [], "off": []}
    totals: dict[str, list[float]] = {"shared": [], "off": []}
    for rep in range(args.repeats):
        for side, mode in (("shared", "auto"), ("off", "off")):
            cache = work / f"cache_b-{rep}"  # empty at the start of each shared sweep
            start = time.perf_counter()
            jobs = []
            for student in students:
                console.rule(f"(b) {side} sweep {rep + 1}: {student}")
                jobs.append(run_train(
                    train_overrides(args, cache, data_cache, args.sweep_epochs) + base
                    + [f"student={student}", f"teacher_cache={mode}"],
                    work / "runs" / f"b-{side}-{rep}-{student}"))
            totals[side].append(time.perf_counter() - start)
            sides[side].append(jobs)
            console.print(f"{side} sweep: {totals[side][-1]:.1f} s")
    shared, off = median(totals["shared"]), median(totals["off"])
    ratio = shared / off
    last = {side: jobs[-1] for side, jobs in sides.items()}
    table(f"(b) {len(students)}-student sweep, {args.sweep_epochs} epoch(s) per job, sequential "
          "train(cfg) calls (last repeat)",
          ["student", "shared: train() s", "shared: epochs s", "cache hit", "off: train() s",
           "off: epochs s"],
          [[name, f"{s['train_seconds']:.1f}", f"{s['epoch_seconds']:.1f}",
            "yes" if all(v["hit"] for v in s["teacher_cache"]["splits"].values()) else "no",
            f"{o['train_seconds']:.1f}", f"{o['epoch_seconds']:.1f}"]
           for name, s, o in zip(students, last["shared"], last["off"], strict=True)])
    console.print(f"sweep total: shared cache {shared:.1f} s vs independent {off:.1f} s = "
                  f"{ratio:.2f}x ({'meets' if ratio <= 0.6 else 'MISSES'} the goal <= 0.6x)")
    return {"students": students, "epochs_per_job": args.sweep_epochs, "jobs": sides,
            "total_seconds": totals,
            "shared_median": shared, "off_median": off, "ratio": ratio, "goal": 0.6,
            "meets_goal": ratio <= 0.6}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_common_args(parser)
    parser.add_argument("--train-samples", type=int, default=None,
                        help="SST-2 training rows (default: all 67,349 on GPU, 2000 on CPU)")
    parser.add_argument("--eval-samples", type=int, default=None,
                        help="dev rows (default: all 872)")
    parser.add_argument("--students", default=None,
                        help=f"conf/student options of the sweep (default {SWEEP})")
    parser.add_argument("--sweep-epochs", type=int, default=None,
                        help="epochs of each sweep job (default 3, as conf/trainer; --quick 1)")
    parser.add_argument("--transfer-rows", type=int, default=None,
                        help="add a transfer set of this many unlabelled SST-2 rows "
                             "(transfer=train_rest) to every run")
    parser.add_argument("--repeats", type=int, default=1,
                        help="repeats of each side of (a) and (b), alternating")
    parser.add_argument("--skip-epoch", action="store_true", help="skip (a)")
    parser.add_argument("--skip-sweep", action="store_true", help="skip (b)")
    parser.add_argument("--compile", action="store_true", help="compile=true (GPU)")
    parser.add_argument("--keep", action="store_true", help="keep the temp run folders")
    args = parser.parse_args(argv)
    if args.quick:
        args.train_samples = args.train_samples or 256
        args.eval_samples = args.eval_samples or 64
        args.students = args.students or "minilm_3l,minilm_1l"
        args.sweep_epochs = args.sweep_epochs or 1
    args.sweep_epochs = args.sweep_epochs or 3
    if args.train_samples is None and args.device == "cpu":
        args.train_samples = 2000
    students = (args.students or SWEEP).split(",")
    info = setup(args, "teacher-output cache: cached vs live teacher logits")

    work = workdir("tcache")
    source = teacher_path(args.teacher)
    tokenizer = load_tokenizer(str(source))
    teacher = load_classifier(source, args.random_init)  # a classification head (random)
    layers = parse_layers(args.student_layers, teacher.config.num_hidden_layers)
    folder = save_classifier(teacher, tokenizer, work / "teacher")
    del teacher
    data_cache = work / "tokenized"
    prepare_tokenized(args, folder, data_cache, args.train_samples, args.eval_samples)
    base = ["teacher=pretrained", f"teacher.name_or_path={folder}", "distill=kd",
            "teacher_gate=null", f"data.max_train_samples={args.train_samples or 'null'}",
            f"data.max_eval_samples={args.eval_samples or 'null'}"]
    if args.transfer_rows:
        base += ["transfer=train_rest", f"transfer.max_rows={args.transfer_rows}"]
    console.print(f"teacher {source} ({'random init' if args.random_init else 'pretrained'}"
                  f" encoder, random head) saved to {folder}; train rows "
                  f"{args.train_samples or 'all'}, dev rows {args.eval_samples or 'all'}")

    results: dict[str, Any] = {"teacher": str(source), "random_init": args.random_init,
                               "train_samples": args.train_samples,
                               "transfer_rows": args.transfer_rows,
                               "eval_samples": args.eval_samples}
    if not args.skip_epoch:
        results["epoch"] = epoch_benchmark(args, base, layers, work, data_cache)
    if not args.skip_sweep:
        results["sweep"] = sweep_benchmark(args, base, students, work, data_cache)
    write_out(args.out, "teacher_cache", info, args, results)
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    return results


if __name__ == "__main__":
    main()
