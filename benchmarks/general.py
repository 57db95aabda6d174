"""General distillation throughput and corpus memory.

(a) Tokens/s of one general-distillation step (teacher forward + student forward/backward +
    loss terms + optimizer step, :class:`~litdistill.general_module.GeneralDistillationModule`)
    against its parts measured in the same process on the same batches: the teacher's forward
    alone (no grad, hidden states on) and the student's forward/backward/step alone (a dummy
    loss on its last hidden state). ``overhead`` = full step time / (teacher + student time):
    what the loss terms (recomputed Q/K/V, projections) and bookkeeping add.
(b) Peak RSS of reading a generated corpus of N lines (``datasets`` Arrow, memory-mapped),
    tokenizing it and iterating 50 training batches, each N in a fresh child process.

Run (from the repository root)::

    python benchmarks/general.py --quick                       # check (< 1 min)
    python benchmarks/general.py --steps 10 --lines 10000,1000000 --out general.json
"""

from __future__ import annotations

import argparse
import itertools
import json
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf
from transformers import AutoModel

from litdistill.conf import CONF_DIR
from litdistill.corpus import FileCorpus
from litdistill.general_module import GeneralDataModule, GeneralDistillationModule
from litdistill.models import Pretrained, Sized, char_tokenizer

WORDS = ("the a film movie plot actor scene story good bad dull great long short funny sad "
         "music camera end start character dialogue twist director").split()


def write_corpus(path: Path, lines: int, seed: int = 0) -> Path:
    rng = random.Random(seed)
    with path.open("w") as f:
        for _ in range(lines):
            f.write(" ".join(rng.choices(WORDS, k=rng.randint(5, 30))) + "\n")
    return path


def models(args: argparse.Namespace) -> tuple[Any, Any, Any]:
    """Teacher, student (headless) and tokenizer: zoo MiniLM-L6 + a 4 x 312 student, or
    (``--quick``) tiny random BERTs on the character tokenizer."""
    if args.quick:
        teacher_spec = Sized(2, 32, 2, 64)
        tokenizer = char_tokenizer()
        teacher = AutoModel.from_config(teacher_spec.hf_config(None))
    else:
        teacher_spec = Pretrained(args.teacher)
        tokenizer = teacher_spec.tokenizer(None)
        teacher = AutoModel.from_pretrained(teacher_spec.path, dtype=torch.float32)
    student_spec = Sized(2, 32, 2, 64) if args.quick else Sized(4, 312, 12, 1200)
    student = AutoModel.from_config(student_spec.hf_config(teacher_spec))
    return teacher, student, tokenizer


def batches(tokenizer: Any, n: int, size: int, max_length: int) -> list[dict[str, Any]]:
    with tempfile.TemporaryDirectory() as tmp:
        path = write_corpus(Path(tmp) / "c.txt", n * size + 8)
        corpus = FileCorpus(files=[str(path)], heldout_rows=8, max_length=max_length,
                            cache_dir=str(Path(tmp) / "cache"))
        module = GeneralDataModule(corpus.tokenized(tokenizer), tokenizer, size, size, 0)
        loader = iter(module.train_dataloader())
        return [next(loader) for _ in range(n)]


def timed(fns: dict[str, Any], data: list[dict[str, Any]], warmup: int = 2) -> dict[str, float]:
    """Seconds of each function over ``data[warmup:]``, interleaved batch by batch (full,
    teacher, student on one batch, then the next), so a change in the machine's load hits
    every part alike."""
    seconds = dict.fromkeys(fns, 0.0)
    for i, batch in enumerate(data):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn(batch)
            if i >= warmup:
                seconds[name] += time.perf_counter() - start
    return seconds


def speed(args: argparse.Namespace) -> dict[str, Any]:
    teacher, student, tokenizer = models(args)
    objective = instantiate(OmegaConf.load(Path(CONF_DIR) / "distill" / f"{args.objective}.yaml"))
    if args.mapping:
        for term in ("hidden", "attention"):
            if term in objective.terms:
                objective.terms[term]["mapping"] = [int(x) for x in args.mapping.split(",")]
    optimizer = lambda params, **kw: torch.optim.AdamW(params, lr=1e-4)  # noqa: E731
    module = GeneralDistillationModule(student, teacher, objective, optimizer)
    opt = module.configure_optimizers()
    data = batches(tokenizer, args.steps + 2, args.batch_size, args.max_length)
    tokens = sum(int(b["attention_mask"].sum()) for b in data[2:])

    def full(batch: dict[str, Any]) -> None:
        module.losses(batch)["loss"].backward()
        opt.step()
        opt.zero_grad()

    def teacher_only(batch: dict[str, Any]) -> None:
        with torch.no_grad():
            module.teacher(**batch, output_hidden_states=True)

    def student_only(batch: dict[str, Any]) -> None:
        out = module.student(**batch, output_hidden_states=True)
        out.last_hidden_state.pow(2).mean().backward()
        opt.step()
        opt.zero_grad()

    seconds = timed({"full": full, "teacher": teacher_only, "student": student_only}, data)
    rates = {f"{k}_tokens_per_s": round(tokens / v, 1) for k, v in seconds.items()}
    overhead = seconds["full"] / (seconds["teacher"] + seconds["student"])
    return {"objective": args.objective, "tokens": tokens, "steps": args.steps,
            "batch_size": args.batch_size, **rates, "overhead": round(overhead, 3)}


def rss_child(lines: int, max_length: int, quick: bool, teacher: str) -> dict[str, Any]:
    """In this (child) process: read + tokenize a generated corpus, iterate 50 batches."""
    tokenizer = char_tokenizer() if quick else Pretrained(teacher).tokenizer(None)
    with tempfile.TemporaryDirectory() as tmp:
        path = write_corpus(Path(tmp) / "c.txt", lines)
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        start = time.perf_counter()
        corpus = FileCorpus(files=[str(path)], heldout_rows=512, max_length=max_length,
                            cache_dir=str(Path(tmp) / "cache"))
        splits = corpus.tokenized(tokenizer)
        read_s = time.perf_counter() - start
        loader = GeneralDataModule(splits, tokenizer, 32, 32, 0).train_dataloader()
        for _ in itertools.islice(loader, 50):
            pass
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return {"lines": lines, "rows": len(splits["train"]),
                "file_mb": round(path.stat().st_size / 2**20, 1), "read_tokenize_s": round(
                    read_s, 1), "rss_before_mb": round(before / 1024, 1),
                "peak_rss_mb": round(peak / 1024, 1)}


def memory(args: argparse.Namespace) -> list[dict[str, Any]]:
    out = []
    for lines in (int(x) for x in args.lines.split(",")):
        cmd = [sys.executable, __file__, "--rss-child", str(lines), "--teacher", args.teacher,
               "--max-length", str(args.max_length), *(["--quick"] if args.quick else [])]
        done = subprocess.run(cmd, capture_output=True, text=True, check=True)
        out.append(json.loads(done.stdout.strip().splitlines()[-1]))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--objective", default="tinybert_general")
    parser.add_argument("--teacher", default="minilm_l6", help="folder or zoo name")
    parser.add_argument("--mapping", default="2,3,5,6",
                        help="teacher layers of the student's (6 -> 4 layers by default)")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--lines", default="10000,1000000")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--quick", action="store_true", help="tiny models, small corpora")
    parser.add_argument("--rss-child", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    if args.rss_child is not None:
        print(json.dumps(rss_child(args.rss_child, args.max_length, args.quick, args.teacher)))
        return
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.quick:
        args.steps, args.lines, args.mapping = 3, "1000,10000", ""
    result = {"command": " ".join(sys.argv), "threads": torch.get_num_threads(),
              "speed": speed(args), "memory": memory(args)}
    print(json.dumps(result, indent=2))
    if args.out:
        args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
