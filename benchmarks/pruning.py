"""Parameters, MB on disk and kept vocabulary of width- and vocabulary-pruned students.

    PYTHONPATH=src python benchmarks/pruning.py [--glue /work/shared/data/glue] [--rows 2000]

Uses the spec classes a run uses (``student=pruned``, ``student.vocab=task``) on the zoo's
MiniLM-L6 (``litdistill-zoo fetch minilm_l6``) and SST-2's training text (the first
``--rows`` sentences, or all with 0); calibration = 512 rows of that text, seed 0.
No training: the numbers are sizes, and a check that the vocabulary-pruned student's logits
equal the unpruned cut's on training sentences (all their pieces are kept).
"""

from __future__ import annotations

import argparse
import csv
import json
import tempfile
from pathlib import Path

import datasets
import torch

from litdistill.latency import size_mb
from litdistill.models import FromTeacher, Pretrained, Pruned, count_params
from litdistill.pruning import Calibration


def sst2(glue: Path, rows: int) -> list[str]:
    with (glue / "SST-2" / "train.tsv").open(encoding="utf-8") as fh:
        texts = [r["sentence"] for r in csv.DictReader(fh, delimiter="\t", quoting=csv.QUOTE_NONE)]
    return texts[:rows] if rows else texts


def entry(model: torch.nn.Module, tokenizer) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        model.save_pretrained(tmp)
        mb = size_mb(tmp)
    c = model.config
    return {"params": count_params(model), "size_mb": round(mb, 2), "vocab_size": len(tokenizer),
            "shape": f"{c.num_hidden_layers}x{c.hidden_size}, {c.num_attention_heads} heads, "
                     f"FFN {c.intermediate_size}"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--glue", type=Path, default=Path("/work/shared/data/glue"))
    parser.add_argument("--rows", type=int, default=2000)
    args = parser.parse_args()
    texts = sst2(args.glue, args.rows)
    teacher = Pretrained("minilm_l6")
    model = teacher.build(2, False).eval()
    tokenizer = teacher.tokenizer(None)
    calibration = Calibration([datasets.Dataset.from_dict(dict(tokenizer(texts)))], tokenizer)
    out = {"texts": len(texts), "teacher": entry(model, tokenizer)}
    specs = {
        "cut [0,2,4]": FromTeacher([0, 2, 4]),
        "cut [0,2,4] vocab=task": FromTeacher([0, 2, 4], vocab="task"),
        "pruned 3x256 FFN 1024": Pruned([0, 2, 4], hidden=256, intermediate=1024),
        "pruned 3x256 FFN 1024 vocab=task": Pruned([0, 2, 4], hidden=256, intermediate=1024,
                                                   vocab="task"),
        "pruned 3x128 FFN 512 vocab=task": Pruned([0, 2, 4], hidden=128, intermediate=512,
                                                  vocab="task"),
    }
    students = {}
    for name, spec in specs.items():
        spec.fit_vocab(texts, teacher)
        students[name] = (spec.build(2, False, teacher, model, calibration).eval(),
                          spec.tokenizer(teacher))
        out[name] = entry(*students[name])
        out[name]["of_teacher"] = round(out[name]["params"] / out["teacher"]["params"], 3)
    (full, tok_full), (small, tok_small) = students["cut [0,2,4]"], \
        students["cut [0,2,4] vocab=task"]
    sample = texts[:64]
    with torch.no_grad():
        a = full(**tok_full(sample, padding=True, return_tensors="pt")).logits
        b = small(**tok_small(sample, padding=True, return_tensors="pt")).logits
    out["vocab=task max |logit diff| on 64 training sentences"] = float((a - b).abs().max())
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
