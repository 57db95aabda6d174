"""How soft are the study's teacher targets? Mean max-probability of cached teacher logits.

    python experiments/glue_minilm/teacher_confidence.py <teacher cache dir> [teacher path prefix]

Reads every ``<cache>/<key>/{meta.json,logits.npy}`` entry (the teacher cache, by default
``$LITDISTILL_HOME/tokenized/teacher``) of a classification teacher whose path starts with the
prefix, and prints per task and split the rows and the mean of the largest class probability
at T = 1 and T = 2. Equal values on train and dev rows mean the teacher did not over-fit the
rows the students are distilled on; values near 1 would mean soft targets = labels.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np


def _max_prob(logits: np.ndarray, temperature: float) -> float:
    z = logits / temperature
    z = z - z.max(axis=1, keepdims=True)
    p = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
    return float(p.max(axis=1).mean())


def main(cache: Path, prefix: str = "") -> list[str]:
    lines = []
    for meta_path in sorted(cache.glob("*/meta.json")):
        meta = json.loads(meta_path.read_text())
        if meta.get("num_labels", 1) < 2 or not str(meta.get("teacher", "")).startswith(prefix):
            continue
        logits = np.load(meta_path.parent / "logits.npy").astype(np.float32)
        lines.append(f"{meta['task']:6s} {meta['split']:10s} rows {meta['rows']:6d}  "
                     f"max prob T=1 {_max_prob(logits, 1):.3f}  T=2 {_max_prob(logits, 2):.3f}"
                     f"  teacher {meta['teacher']}")
    return sorted(lines)


if __name__ == "__main__":
    print("\n".join(main(Path(sys.argv[1]), sys.argv[2] if len(sys.argv) > 2 else "")))
