"""CPU inference latency and throughput, measured the same way for every model.

Fixed thread count, a fixed set of real sentences, warm-up calls, then the median of
repeated timed forwards under ``torch.inference_mode``. Median, not mean: one slow call (a
page fault, another process) should not move the figure. The report, the demo and the
benchmarks all time models through this module.
"""

from __future__ import annotations

import os
import platform
import statistics
import sys
import time
from collections.abc import Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from litdistill.model_files import size_mb  # noqa: F401  (report, demo and benchmarks read it here)

# Fixed latency inputs, 3 to ~45 words, so every model sees the same tokens and padding.
TEXTS = [
    "A gripping, beautifully acted film.",
    "The plot goes nowhere.",
    "I laughed, I cried, and then I bought the soundtrack on the way home.",
    "Two hours of my life I will never get back.",
    "The central bank left interest rates unchanged on Thursday, citing weak growth.",
    "Is there a pharmacy open near the station after ten o'clock at night?",
    "Brilliant.",
    "The sequel keeps the charm of the original but loses most of its surprise.",
    "Although the first act drags, the final thirty minutes are as tense and inventive as "
    "anything the director has made, and the lead performance holds it all together.",
    "She signed the contract without reading the last page.",
    "Heavy rain is expected across the north of the country over the weekend.",
    "What a waste of a talented cast.",
    "The museum will reopen in the spring after a two-year renovation of its east wing.",
    "He said the meeting had been moved, but nobody told the people who were already there.",
    "Predictable, loud and far too long.",
    "The recipe calls for two cups of flour, a pinch of salt and three eggs.",
    "It is the kind of movie that stays with you for days, not because of its twists but "
    "because of how honestly it treats its characters, none of whom is entirely likeable.",
    "Shares fell sharply after the company lowered its forecast for the rest of the year.",
    "The dialogue sounds like it was written by a committee.",
    "Our train was delayed by forty minutes because of a signal failure outside the city.",
    "Quietly devastating.",
    "The children built a small boat out of cardboard and tape and floated it on the pond.",
    "Fans of the book will be disappointed by how much of the story has been cut.",
    "Researchers say the new vaccine was well tolerated in early trials involving several "
    "hundred volunteers, although larger studies will be needed before it can be approved.",
    "The soundtrack is wonderful, the story less so.",
    "Please remember to turn off the lights when you leave the office.",
    "A clumsy, heavy-handed attempt at satire that never finds its target.",
    "The town council voted to extend the library's opening hours on weekends.",
    "Every frame looks like a painting.",
    "I expected very little and was still disappointed.",
    "After years of delays, the bridge connecting the two islands finally opened to traffic "
    "this morning, cutting the journey time from over an hour to about ten minutes.",
    "Not bad at all.",
]
MAX_LENGTH = 128


@contextmanager
def _threads(n: int | None):
    previous = torch.get_num_threads()
    if n:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _batches(tokenizer: Any, texts: Sequence[str], batch_size: int, max_length: int,
             repeats: int, tensors: str) -> list[dict[str, Any]]:
    """``repeats`` tokenized batches cycling through ``texts``: every model, PyTorch or
    ONNX, sees the same rows and padding."""
    if not texts:
        raise ValueError("latency needs at least one text")
    out = []
    for i in range(max(repeats, 1)):
        chunk = [texts[(i * batch_size + j) % len(texts)] for j in range(batch_size)]
        out.append(dict(tokenizer(chunk, padding=True, truncation=True, max_length=max_length,
                                  return_tensors=tensors)))
    return out


def session(path: str | Path, threads: int | None = None) -> Any:
    """An onnxruntime CPU session with every graph optimization on.

    Args:
        path: The ``.onnx`` file.
        threads: Intra-op threads (None: onnxruntime's default, one per physical core).
    """
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = threads or 0
    options.inter_op_num_threads = 1  # one forward at a time: no parallel branches to run
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def run_session(sess: Any, batch: dict[str, np.ndarray]) -> np.ndarray:
    """The graph's logits for one tokenized batch (only the inputs the graph takes)."""
    wanted = {i.name for i in sess.get_inputs()}
    return sess.run(["logits"], {k: v for k, v in batch.items() if k in wanted})[0]


def measure_onnx(path: str | Path, tokenizer: Any, texts: Sequence[str], batch_size: int, *,
                 max_length: int = 128, threads: int | None = None, warmup: int = 3,
                 repeats: int = 10) -> dict[str, float]:
    """Time an exported ONNX graph (:mod:`litdistill.export`) exactly as :func:`measure`
    times a model: same batches, warm-up and median; ``threads`` sets onnxruntime's
    intra-op threads instead of torch's."""
    sess = session(path, threads)
    batches = [{k: np.asarray(v, dtype=np.int64) for k, v in b.items()}
               for b in _batches(tokenizer, texts, batch_size, max_length, repeats, "np")]
    for step in range(warmup):
        run_session(sess, batches[step % len(batches)])
    times = []
    for batch in batches:
        start = time.perf_counter()
        run_session(sess, batch)
        times.append(time.perf_counter() - start)
    return _summary(times, batch_size)


def _summary(times: Sequence[float], batch_size: int) -> dict[str, float]:
    median = statistics.median(times)
    return {"batch_size": batch_size, "median_s": median,
            "ms_per_example": 1000.0 * median / batch_size,
            "examples_per_s": batch_size / median}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(model: nn.Module, tokenizer: Any, texts: Sequence[str], batch_size: int, *,
            max_length: int = 128, threads: int | None = None, warmup: int = 3,
            repeats: int = 10) -> dict[str, float]:
    """Time forward passes of ``model`` over batches of ``texts``.

    Args:
        model: A sequence classifier (put in eval mode here), on any device.
        tokenizer: Its tokenizer.
        texts: Real inputs; batches cycle through them so every model sees the same ones.
        batch_size: Examples per forward.
        max_length: Truncation length.
        threads: torch intra-op threads during the measurement (None: leave as is).
        warmup: Untimed calls first (allocator, caches).
        repeats: Timed calls; the median is reported.

    Returns:
        ``batch_size``, ``median_s`` per batch, ``ms_per_example`` and ``examples_per_s``.
    """
    model.eval()
    device = next(model.parameters()).device
    batches = [{k: v.to(device) for k, v in b.items()}
               for b in _batches(tokenizer, texts, batch_size, max_length, repeats, "pt")]
    times = []
    with _threads(threads), torch.inference_mode():
        for step in range(warmup):
            model(**batches[step % len(batches)])
        for batch in batches:
            _sync(device)  # a GPU forward is timed to the end of its kernels
            start = time.perf_counter()
            model(**batch)
            _sync(device)
            times.append(time.perf_counter() - start)
    return _summary(times, batch_size)


def cpu_name() -> str:
    """The CPU's model name (``/proc/cpuinfo``), else what ``platform`` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine() -> str:
    """One line naming the machine and the versions that latency figures depend on."""
    return (f"{cpu_name()}, {os.cpu_count()} logical CPUs, {platform.platform()}, "
            f"Python {platform.python_version()}, torch {torch.__version__}")


def load(folder: str | Path) -> tuple[nn.Module, Any]:
    """A ``save_pretrained`` sequence classifier and its tokenizer, for timing."""
    from transformers import AutoModelForSequenceClassification

    from litdistill.models import load_tokenizer

    return (AutoModelForSequenceClassification.from_pretrained(folder),
            load_tokenizer(str(folder)))


def measure_models(models: Sequence[tuple[nn.Module | Path, Any]], texts: Sequence[str] = TEXTS, *,
                   threads: int | None = 1, repeats: int = 20, rounds: int = 1,
                   max_length: int = MAX_LENGTH) -> list[dict[str, float]]:
    """Batch-1 latency and batch-32 throughput of each model, in interleaved rounds.

    A model is a PyTorch module or the path of an exported ``.onnx`` graph (timed with
    :func:`measure_onnx`), each with its tokenizer.

    Each round times every model once (``repeats`` batch-1 calls after 3 warm-up, and
    ``max(3, repeats // 3)`` batch-32 calls after 1); the median over rounds is kept, so a
    burst of load from elsewhere on the machine hits every model alike instead of whichever
    happened to be measured at the time.

    Returns:
        Per model: ``ms_per_example_b1`` and ``examples_per_s_b32`` (medians over rounds)
        and each round's figures (``b1_rounds``, ``b32_rounds``).
    """
    ones: list[list[float]] = [[] for _ in models]
    manys: list[list[float]] = [[] for _ in models]
    for _ in range(max(rounds, 1)):
        for i, (model, tokenizer) in enumerate(models):
            print(f"timing {getattr(model, 'name_or_path', model)}", file=sys.stderr)
            timer = measure_onnx if isinstance(model, Path) else measure
            ones[i].append(timer(model, tokenizer, texts, 1, max_length=max_length,
                                 threads=threads, repeats=repeats)["ms_per_example"])
            manys[i].append(timer(model, tokenizer, texts, 32, max_length=max_length,
                                  threads=threads, warmup=1,
                                  repeats=max(3, repeats // 3))["examples_per_s"])
    return [{"ms_per_example_b1": statistics.median(one),
             "examples_per_s_b32": statistics.median(many), "b1_rounds": one,
             "b32_rounds": many} for one, many in zip(ones, manys, strict=True)]
