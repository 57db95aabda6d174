"""CPU inference latency and throughput, measured the same way for every model.

Fixed thread count, a fixed set of real sentences, warm-up calls, then the median of
repeated timed forwards under ``torch.inference_mode``. Median, not mean: one slow call (a
page fault, another process) should not move the figure.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Sequence
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn


@contextmanager
def _threads(n: int | None):
    previous = torch.get_num_threads()
    if n:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def measure(model: nn.Module, tokenizer: Any, texts: Sequence[str], batch_size: int, *,
            max_length: int = 128, threads: int | None = None, warmup: int = 3,
            repeats: int = 10) -> dict[str, float]:
    """Time forward passes of ``model`` over batches of ``texts``.

    Args:
        model: A sequence classifier (put in eval mode here).
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
    if not texts:
        raise ValueError("measure() needs at least one text")
    model.eval()
    batches = []
    for i in range(max(repeats, 1)):
        chunk = [texts[(i * batch_size + j) % len(texts)] for j in range(batch_size)]
        batches.append(tokenizer(chunk, padding=True, truncation=True, max_length=max_length,
                                 return_tensors="pt"))
    times = []
    with _threads(threads), torch.inference_mode():
        for step in range(warmup):
            model(**batches[step % len(batches)])
        for batch in batches:
            start = time.perf_counter()
            model(**batch)
            times.append(time.perf_counter() - start)
    median = statistics.median(times)
    return {"batch_size": batch_size, "median_s": median,
            "ms_per_example": 1000.0 * median / batch_size,
            "examples_per_s": batch_size / median}
