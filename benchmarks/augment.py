"""Augmentation speed: both methods' throughput, and the batched masked-LM candidate search.

(a) Throughput on real SST-2 training sentences, ``--threads`` torch threads, one process:
    ``tinybert`` with embedding-neighbour candidates (the teacher's input embeddings; the
    offline default) and ``mask_ngram``, ``--copies`` copies per sentence, from raw text to
    the new rows (word split, candidates, sampling; no disk cache). Input sentences per
    second and rows produced per second.
(b) TinyBERT's masked-LM candidates for every eligible single-piece word of
    ``--mlm-sentences`` sentences, on the same inputs and the same MLM, three ways: TinyBERT's
    loop (one forward per word, the LM head over every position, as its
    ``_masked_language_model``), ``candidates.mlm_candidates`` with batch size 1, and
    ``mlm_candidates`` batched (``--batch-size`` masked sequences per forward, length-sorted,
    the LM head at the masked positions only). All three must give the same candidates.
    The MLM is a ``BertForMaskedLM`` with the teacher's encoder weights (MiniLM-L6 by
    default) and a freshly initialised LM head: the compute of a real MLM of that size (no
    MLM head ships offline); its candidates are meaningless, its timings are not.

Goal: batched >= 10x TinyBERT's one-forward-per-word loop.

Run (from the repository root, ``GLUE_DIR`` set)::

    python benchmarks/augment.py --quick                         # check (< 1 min)
    python benchmarks/augment.py --threads 2 --out augment_cpu.json
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import datasets
import torch
from bench import add_common_args, console, setup, table, write_out
from pairs import sst2, teacher_path

from litdistill import augment as aug_lib
from litdistill.augment import STOP_WORDS, MaskNgramAugment, TinyBertAugment
from litdistill.candidates import (
    embedding_neighbours,
    mlm_candidates,
    piece_ids,
    whole_word_mask,
)
from litdistill.models import load_tokenizer


def throughput(aug: Any, texts: list[str], tokenizer: Any, embeddings: torch.Tensor
               ) -> dict[str, float]:
    """Raw text -> augmented rows, timed end to end (in memory, no disk cache)."""
    allowed = whole_word_mask(tokenizer)
    start = time.perf_counter()
    rows = aug.prepare(datasets.Dataset.from_dict({"sentence": texts}), ("sentence",),
                       tokenizer)
    if isinstance(aug, TinyBertAugment):
        rows = aug_lib.attach_candidates(
            aug, rows, ("sentence",), tokenizer,
            lambda masked, pieces: embedding_neighbours(embeddings, pieces, allowed, aug.top_k))
    out = aug_lib.sample(aug, rows, ("sentence",), tokenizer.mask_token)
    seconds = time.perf_counter() - start
    return {"method": aug.method, "inputs": len(texts), "rows": len(out), "seconds": seconds,
            "inputs_per_s": len(texts) / seconds, "rows_per_s": len(out) / seconds}


def masked_words(texts: list[str], tokenizer: Any) -> list[tuple[list[str], int]]:
    """(words, position) of every eligible single-piece word, as the MLM path masks them."""
    split = tokenizer.backend_tokenizer.pre_tokenizer.pre_tokenize_str
    found = []
    for text in texts:
        words = [w for w, _ in split(text)]
        eligible = [i for i, w in enumerate(words) if w.isalpha() and w.lower() not in
                    STOP_WORDS]
        pieces = piece_ids(tokenizer, [words[i] for i in eligible])
        found += [(words, i) for i, p in zip(eligible, pieces, strict=True) if len(p) == 1]
    return found


@torch.no_grad()
def tinybert_loop(mlm: Any, tokenizer: Any, masked: list[tuple[list[str], int]],
                  allowed: torch.Tensor, top_k: int) -> list[list[int]]:
    """One forward per word with the full LM head, as TinyBERT's augmentation runs it."""
    out = []
    for words, pos in masked:
        text = [tokenizer.mask_token if j == pos else w for j, w in enumerate(words)]
        enc = tokenizer([text], is_split_into_words=True, truncation=True, return_tensors="pt")
        logits = mlm(**enc).logits[0]  # (T, V): every position, as TinyBERT
        scores = logits[enc["input_ids"][0] == tokenizer.mask_token_id][0].float()
        scores[~allowed] = -float("inf")
        ids = scores.topk(top_k + 1).indices.tolist()
        out.append([t for t in ids if tokenizer.convert_ids_to_tokens(t)
                    != words[pos].lower()][:top_k])
    return out


def mlm_speed(args: argparse.Namespace, texts: list[str], tokenizer: Any) -> dict[str, Any]:
    from bench import quiet
    from transformers import BertForMaskedLM

    quiet()  # "some weights newly initialized" (the LM head) is expected
    mlm = BertForMaskedLM.from_pretrained(teacher_path(args.teacher), dtype=torch.float32).eval()
    masked = masked_words(texts, tokenizer)
    allowed = whole_word_mask(tokenizer)
    mlm_candidates(mlm, tokenizer, masked[:8], allowed, 15, batch_size=8)  # warm-up, untimed
    times: dict[str, float] = {}
    found: dict[str, list[list[int]]] = {}
    ways = {"TinyBERT loop (one forward per word)":
            lambda: tinybert_loop(mlm, tokenizer, masked, allowed, 15),
            "mlm_candidates, batch 1": lambda: mlm_candidates(mlm, tokenizer, masked, allowed,
                                                              15, batch_size=1),
            f"mlm_candidates, batch {args.batch_size}": lambda: mlm_candidates(
                mlm, tokenizer, masked, allowed, 15, batch_size=args.batch_size)}
    for name, way in ways.items():
        start = time.perf_counter()
        found[name] = way()
        times[name] = time.perf_counter() - start
        console.print(f"{name}: {len(masked)} masked words in {times[name]:.1f} s")
    loop, batched = list(ways)[0], list(ways)[-1]
    same = sum(a == b for a, b in zip(found[batched], found[loop], strict=True))
    speedup = times[loop] / times[batched]
    table("(b) masked-LM candidates", ["way", "masked words", "seconds", "words/s"],
          [[k, len(masked), f"{v:.1f}", f"{len(masked) / v:.1f}"] for k, v in times.items()])
    console.print(f"batched vs TinyBERT's loop = {speedup:.1f}x ("
                  f"{'meets' if speedup >= 10 else 'MISSES'} the goal >= 10x); identical "
                  f"candidate sets for {same}/{len(masked)} words")
    return {"masked_words": len(masked), "seconds": times, "speedup": speedup, "goal": 10,
            "meets_goal": speedup >= 10, "identical": same, "batch_size": args.batch_size}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_common_args(parser)
    parser.add_argument("--sentences", type=int, default=None,
                        help="SST-2 training sentences for (a) (default 2000; --quick 200)")
    parser.add_argument("--mlm-sentences", type=int, default=None,
                        help="sentences for (b) (default 100; --quick 10)")
    parser.add_argument("--copies", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=64,
                        help="masked sequences per MLM forward in (b)")
    args = parser.parse_args(argv)
    n = args.sentences or (200 if args.quick else 2000)
    n_mlm = args.mlm_sentences or (10 if args.quick else 100)
    info = setup(args, "augmentation: throughput and batched masked-LM candidates")
    texts, _ = sst2(args.glue_dir, "train", n, args.seed)
    tokenizer = load_tokenizer(str(teacher_path(args.teacher)))
    from transformers import AutoModel

    embeddings = AutoModel.from_pretrained(teacher_path(args.teacher)).get_input_embeddings()
    embeddings = embeddings.weight.detach()
    rows = [throughput(aug, texts, tokenizer, embeddings)
            for aug in (TinyBertAugment(copies=args.copies, num_proc=1),
                        MaskNgramAugment(copies=args.copies, num_proc=1))]
    table(f"(a) augmentation of {n} SST-2 sentences, {args.copies} copies each",
          ["method", "rows made", "seconds", "sentences/s", "rows/s"],
          [[r["method"], r["rows"], f"{r['seconds']:.1f}", f"{r['inputs_per_s']:.0f}",
            f"{r['rows_per_s']:.0f}"] for r in rows])
    results = {"throughput": rows, "mlm": mlm_speed(args, texts[:n_mlm], tokenizer)}
    write_out(args.out, "augment", info, args, results)
    return results


if __name__ == "__main__":
    main()
