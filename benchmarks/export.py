"""CPU cost of serving the demo's models from PyTorch and from ONNX (fp32, int8).

Exports the student run with :func:`litdistill.export.export_run` (fp32 + dynamic int8, checked
against PyTorch on the dev set), then times, with 2 threads and with 1 and at batch 1 and 32:

* the fine-tuned teacher in PyTorch fp32 (``make demo``'s MiniLM-L6),
* the student in PyTorch fp32 (the demo's 3-layer KD student),
* the student's ONNX fp32 graph and its int8 graph (onnxruntime, CPU).

Latency: :func:`litdistill.latency.measure_models` (``measure`` for PyTorch, ``measure_onnx``
for the graphs: same texts, threads, warm-up, median of repeats) on real dev sentences,
truncated at the runs' ``max_length``; the four models are timed in interleaved rounds and the
median over rounds is kept, so load from elsewhere hits every model alike. Size: the weights on disk
(``model.safetensors`` / ``.onnx``). Dev accuracy: each model on the run's whole dev split.

Goal: the int8 student >= 4x faster than the fp32 PyTorch teacher at batch 1, with a dev
accuracy <= 1 point below its fp32 self.

Run from the repository root after ``python -m litdistill.demo --out /tmp/export_demo``::

    python benchmarks/export.py --teacher /tmp/export_demo/teacher \
        --student /tmp/export_demo/kd --out benchmarks/results/cpu/export_cpu.json

The demo calls ``train(cfg)`` itself, so its runs have no ``.hydra/config.yaml``; their data
settings (``max_length`` 64) come from recomposing ``experiment=demo_teacher`` /
``experiment=demo_student`` (``--teacher-overrides`` / ``--student-overrides``).
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
from importlib.metadata import version
from pathlib import Path
from typing import Any

from litdistill import atomic
from litdistill.export import (
    FP32_FILE,
    INT8_FILE,
    Run,
    dev_batches,
    export_run,
    load_run,
    score_logits,
    torch_logits,
)
from litdistill.latency import measure_models

BATCH_SIZES = (1, 32)


def machine() -> dict[str, Any]:
    """The machine (one line, as the report prints it), library versions, the command."""
    from litdistill.latency import machine as describe

    return {"command": shlex.join([sys.executable, *sys.argv]), "machine": describe(),
            **{p: version(p) for p in ("transformers", "onnx", "onnxruntime")}}


def _overrides(run_dir: Path, default: str) -> list[str]:
    return [] if (run_dir / ".hydra" / "config.yaml").is_file() else default.split()


def dev_texts(run: Run, n: int) -> list[str]:
    """The first ``n`` dev sentences of the run's task (single-sentence tasks)."""
    from litdistill.reader import read_splits

    if len(run.task.text_fields) != 1:
        sys.exit(f"error: task {run.task.name} has sentence pairs; time a single-sentence task")
    splits = read_splits(run.task, glue_dir=run.data["glue_dir"], data_files=run.data_files)
    split = splits.raw[run.task.eval_splits[0]]
    return list(split[run.task.text_fields[0]][:n])


def time_models(models: dict[str, Any], texts: list[str], threads: int, max_length: int,
                rounds: int, repeats: int) -> dict[str, dict[int, float]]:
    """Each model's ms/example at batch 1 and 32: :func:`litdistill.latency.measure_models`
    (PyTorch modules and ONNX paths alike, interleaved rounds, medians)."""
    timed = measure_models([(model, tokenizer) for model, tokenizer in models.values()], texts,
                           threads=threads, repeats=repeats, rounds=rounds,
                           max_length=max_length)
    return {name: {1: t["ms_per_example_b1"], 32: 1000.0 / t["examples_per_s_b32"]}
            for name, t in zip(models, timed, strict=True)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--teacher", type=Path, required=True, help="the teacher's run dir")
    parser.add_argument("--student", type=Path, required=True, help="the student's run dir")
    parser.add_argument("--teacher-overrides", default="experiment=demo_teacher",
                        help="for a run without .hydra/config.yaml (space-separated)")
    parser.add_argument("--student-overrides", default="experiment=demo_student",
                        help="for a run without .hydra/config.yaml (space-separated)")
    parser.add_argument("--export-dir", type=Path,
                        help="where the student's graphs go (default STUDENT/export)")
    parser.add_argument("--threads", type=int, nargs="+", default=[2, 1])
    parser.add_argument("--rounds", type=int, default=5, help="interleaved timing rounds")
    parser.add_argument("--repeats", type=int, default=20, help="timed batch-1 calls a round")
    parser.add_argument("--texts", type=int, default=64, help="dev sentences timed")
    parser.add_argument("--out", type=Path, help="write the figures as JSON here")
    args = parser.parse_args(argv)

    import datasets
    from transformers import AutoModelForSequenceClassification
    from transformers.utils import logging as hf_logging

    from litdistill.models import load_tokenizer

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    datasets.disable_progress_bars()
    info = machine()
    for key, value in info.items():
        print(f"{key:>12}: {value}")

    teacher_run = load_run(args.teacher, _overrides(args.teacher, args.teacher_overrides))
    s_overrides = _overrides(args.student, args.student_overrides)
    student_run = load_run(args.student, s_overrides)
    print(f"exporting {student_run.student_dir} (fp32 + int8) ...")
    exported = export_run(args.student, args.export_dir, quantize="int8", overrides=s_overrides)
    out_dir = Path(exported["out"])
    scores = exported["scores"]
    fp32 = exported["checks"]["fp32"]
    print(f"  ONNX fp32 agrees with PyTorch on {fp32['agreement']:.2%} of "
          f"{exported['checks']['rows']} dev rows (max abs logit diff "
          f"{fp32['max_abs_logit_diff']:.2e}); {exported['export_seconds']:.0f} s")

    teacher = AutoModelForSequenceClassification.from_pretrained(teacher_run.student_dir).eval()
    t_tok = load_tokenizer(str(teacher_run.student_dir))
    student = AutoModelForSequenceClassification.from_pretrained(student_run.student_dir).eval()
    s_tok = load_tokenizer(str(student_run.student_dir))
    t_splits = dev_batches(teacher_run, t_tok)
    models = {
        "teacher fp32 (PyTorch)": (teacher, t_tok),
        "student fp32 (PyTorch)": (student, s_tok),
        "student fp32 (ONNX)": (out_dir / FP32_FILE, s_tok),
        "student int8 (ONNX)": (out_dir / INT8_FILE, s_tok),
    }
    sizes = {
        "teacher fp32 (PyTorch)": (teacher_run.student_dir / "model.safetensors").stat().st_size,
        "student fp32 (PyTorch)": (student_run.student_dir / "model.safetensors").stat().st_size,
        "student fp32 (ONNX)": (out_dir / FP32_FILE).stat().st_size,
        "student int8 (ONNX)": (out_dir / INT8_FILE).stat().st_size,
    }
    accuracy = {
        "teacher fp32 (PyTorch)": score_logits(
            teacher_run.task, torch_logits(teacher, t_splits), t_splits)["score"],
        "student fp32 (PyTorch)": scores["pytorch"]["score"],
        "student fp32 (ONNX)": scores["fp32"]["score"],
        "student int8 (ONNX)": scores["int8"]["score"],
    }
    max_length = student_run.data["max_length"] or 128
    texts = dev_texts(student_run, args.texts)
    print(f"timing on {len(texts)} dev sentences (max_length {max_length}), "
          f"{args.rounds} interleaved rounds")
    # Other jobs on the machine slow torch's OpenMP threads far more than onnxruntime's:
    # the load average says how far to trust a run.
    info["load_average_before"] = os.getloadavg()
    timings = {t: time_models(models, texts, t, max_length, args.rounds, args.repeats)
               for t in args.threads}
    info["load_average_after"] = os.getloadavg()
    print(f"load average before/after timing: {info['load_average_before'][0]:.2f} / "
          f"{info['load_average_after'][0]:.2f}")
    if max(info["load_average_before"][0], info["load_average_after"][0]) > 0.5 * os.cpu_count():
        # Each of torch's OpenMP threads waits at every op's barrier for the others: one
        # descheduled thread stalls the whole forward, so multi-thread PyTorch times balloon.
        print("warning: other jobs were running; multi-thread PyTorch times are inflated "
              "(the 1-thread columns hold up)")

    rows = []
    for name in models:
        row: dict[str, Any] = {"model": name, "bytes": sizes[name],
                               "dev_accuracy": accuracy[name]}
        for threads, per_model in timings.items():
            base = timings[threads]["teacher fp32 (PyTorch)"]
            for b in BATCH_SIZES:
                row[f"ms_per_example_t{threads}_b{b}"] = per_model[name][b]
                row[f"speedup_t{threads}_b{b}"] = base[b] / per_model[name][b]
        rows.append(row)

    head = f"{'model':<24}{'MB':>7}{'dev acc':>9}"
    for threads in timings:
        for b in BATCH_SIZES:
            head += f"{f'ms/ex t{threads} b{b}':>17}"
    print(head)
    for row in rows:
        line = f"{row['model']:<24}{row['bytes'] / 1e6:>7.1f}{row['dev_accuracy']:>9.4f}"
        for threads in timings:
            for b in BATCH_SIZES:
                cell = (f"{row[f'ms_per_example_t{threads}_b{b}']:.2f} "
                        f"({row[f'speedup_t{threads}_b{b}']:.1f}x)")
                line += f"{cell:>17}"
        print(line)

    int8 = rows[-1]
    drop = accuracy["student fp32 (PyTorch)"] - accuracy["student int8 (ONNX)"]
    goal = {f"speedup_b1_t{t}": int8[f"speedup_t{t}_b1"] for t in timings}
    goal |= {"accuracy_drop_vs_fp32": drop,
             "met": all(v >= 4.0 for k, v in goal.items() if k.startswith("speedup"))
             and drop <= 0.01}
    print(f"goal (int8 >= 4x the fp32 teacher at batch 1, <= 1 point below fp32): "
          f"{'MET' if goal['met'] else 'MISSED'}: "
          + ", ".join(f"{t} threads {int8[f'speedup_t{t}_b1']:.2f}x" for t in timings)
          + f", accuracy {-drop * 100:+.2f} points")
    if args.out:
        atomic.write_json(args.out, {
            "benchmark": "export", "machine": info, "args": {
                k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
            "results": {"rows": rows, "goal": goal, "export": exported,
                        "texts": len(texts), "max_length": max_length}})
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
