"""Benchmark scripts' command line, machine info, printing and output files.

Run the scripts from the repository root (``python benchmarks/<name>.py``); this module and
its siblings (``timing``, ``pairs``, ``trainruns``) are imported from the script's folder,
which Python puts on ``sys.path``. They need ``litdistill`` importable (``.venv``).
"""

from __future__ import annotations

import argparse
import os
import platform
import shlex
import statistics
import sys
import tempfile
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning as L
import torch
from rich.console import Console
from rich.table import Table

console = Console(width=120)

# Lightning's notices about a frozen eval-mode teacher, worker counts and so on are noise here.
for _pattern in (r".*module\(s\) in eval mode.*", r".*does not have many workers.*",
                 r".*GPU available but not used.*", r".*no `val_dataloader`.*",
                 r".*LeafSpec.*", r".*predict_dataloader.*"):
    warnings.filterwarnings("ignore", message=_pattern)


# ----------------------------------------------------------------------------- arguments
def add_common_args(parser: argparse.ArgumentParser) -> None:
    """Options every script takes: device, precision, threads, data, teacher/student."""
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--precision", choices=("32", "bf16"), default="32",
                        help="32: fp32; bf16: bf16 autocast (training) / bf16 weights "
                             "(inference)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch intra-op threads (default: torch's, = cores)")
    parser.add_argument("--quick", action="store_true",
                        help="a tiny run (< 1-2 min on 2 CPU cores) that checks the script")
    parser.add_argument("--out", type=Path, default=None, help="write the figures as JSON here")
    parser.add_argument("--glue-dir", default=os.environ.get("GLUE_DIR"),
                        help="GLUE folder (<dir>/SST-2/{train,dev}.tsv); default $GLUE_DIR")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--teacher", default=None,
                        help="teacher folder (save_pretrained); default: zoo minilm_l6")
    parser.add_argument("--random-init", action="store_true",
                        help="build the teacher from its config.json without reading weights "
                             "(same compute; for machines without the weights)")
    parser.add_argument("--student-layers", default=None,
                        help="teacher layers the student keeps, e.g. 0,2,4 (default: every "
                             "other one: 0,2,4 of 6; 0,2,...,10 of 12)")


def setup(args: argparse.Namespace, title: str) -> dict[str, Any]:
    """Apply threads and seed, check the device, print and return the machine info."""
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.device == "cuda" and not torch.cuda.is_available():
        sys.exit("error: --device cuda but torch sees no CUDA device")
    if not args.glue_dir or not (Path(args.glue_dir) / "SST-2" / "train.tsv").is_file():
        sys.exit(f"error: no SST-2 under --glue-dir/$GLUE_DIR ({args.glue_dir!r}); "
                 "e.g. GLUE_DIR=/work/shared/data/glue")
    torch.manual_seed(args.seed)
    quiet()
    info = machine_info(args.device)
    console.rule(f"[bold]{title}")
    for key in ("command", "cpu", "gpu", "torch", "transformers", "lightning", "threads"):
        console.print(f"{key:>12}: {info[key]}")
    if getattr(args, "random_init", False):
        console.print("[yellow]teacher weights: RANDOM INIT from config.json (same compute as "
                      "the pretrained model; accuracies are not meaningful)")
    return info


def quiet() -> None:
    """Keep Lightning's and transformers' notices (tips, seeds, load reports, progress
    bars) out of the benchmark output; warnings and errors still show."""
    import logging

    from transformers.utils import logging as hf_logging

    for name in ("lightning", "lightning.pytorch", "lightning.fabric", "litdistill"):
        logging.getLogger(name).setLevel(logging.WARNING)
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()


def machine_info(device: str = "cpu") -> dict[str, Any]:
    """CPU model, GPU name, library versions, thread count and the exact command line."""
    import transformers

    from litdistill.latency import cpu_name

    cpu = cpu_name()
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {
        "command": shlex.join([sys.executable, *sys.argv]),
        "cpu": f"{cpu} ({os.cpu_count()} logical cores)",
        "gpu": gpu if device == "cuda" else f"not used ({gpu or 'none'})",
        "torch": torch.__version__, "transformers": transformers.__version__,
        "lightning": L.__version__, "python": platform.python_version(),
        "threads": torch.get_num_threads(), "device": device,
    }


def write_out(path: Path | None, name: str, info: dict[str, Any], args: argparse.Namespace,
              results: dict[str, Any]) -> None:
    """Write ``{benchmark, machine, args, results}`` as JSON when ``--out`` was given."""
    if path is None:
        return
    from litdistill import atomic

    payload = {"benchmark": name, "machine": info,
               "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
               "results": results}
    atomic.write_json(path, payload)
    console.print(f"wrote {path}")


def table(title: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    """Print a rich table; the first column left-aligned, the others right-aligned."""
    out = Table(title=title)
    for i, col in enumerate(columns):
        out.add_column(col, justify="left" if i == 0 else "right")
    for row in rows:
        out.add_row(*(str(c) for c in row))
    console.print(out)


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def workdir(prefix: str) -> Path:
    """A fresh temp folder for runs and caches (never inside the repository)."""
    return Path(tempfile.mkdtemp(prefix=f"litdistill-bench-{prefix}-"))
