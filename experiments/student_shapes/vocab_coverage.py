"""How much of a task's dev text a vocabulary-pruned student reads as its teacher does.

For each ``student.vocab=task`` run folder given, tokenizes every dev row with the run's
student tokenizer and with the teacher's (full) one and prints: kept vocabulary, the share of
dev rows tokenized identically (the rows where the pruned student's logits equal the
unpruned one's), the share of the full tokenizer's dev pieces that the kept vocabulary lacks,
and the share of [UNK] among the pruned tokenizer's pieces.

    GLUE_DIR=../shared/data/glue python experiments/student_shapes/vocab_coverage.py RUN_DIR...
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from transformers import AutoTokenizer

from litdistill.reader import read_splits
from litdistill.tasks import get_task


def coverage(run: Path, glue_dir: str) -> dict[str, object]:
    """Coverage of one run's dev split (see the module docstring)."""
    config = json.loads((run / "results.json").read_text())
    teacher = Path(config["teacher"]["path"])
    task = get_task({"name": config["task"]})
    splits = read_splits(task, glue_dir=glue_dir)
    dev = splits.raw[task.eval_splits[0]]
    full, pruned = AutoTokenizer.from_pretrained(teacher), AutoTokenizer.from_pretrained(
        run / "student")
    kept = pruned.get_vocab()
    same = dropped = unk = total = pieces = 0
    for row in dev:
        texts = [row[field] for field in task.text_fields]
        a, b = full.tokenize(*texts), pruned.tokenize(*texts)
        same += a == b
        total, pieces = total + len(a), pieces + len(b)
        dropped += sum(piece not in kept for piece in a)
        unk += b.count(pruned.unk_token)
    rows = len(dev)
    return {"run": run.name, "task": task.name, "kept_vocab": len(pruned),
            "full_vocab": len(full), "dev_rows": rows, "rows_identical": same / rows,
            "pieces_dropped": dropped / total, "unk_pieces": unk / pieces}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path)
    args = parser.parse_args()
    glue_dir = os.environ["GLUE_DIR"]
    for run in args.runs:
        print(json.dumps(coverage(run, glue_dir)))


if __name__ == "__main__":
    main()
