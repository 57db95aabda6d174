"""Augmented transfer rows generated from the labelled training text (``augment`` group).

* ``tinybert`` (Jiao et al. 2020, Algorithm 1): for every eligible word (alphabetic, not a
  stop word, as TinyBERT's code), a candidate set of ``top_k`` replacements
  (:mod:`litdistill.candidates`); each of ``copies`` new texts replaces each eligible word
  with probability ``p`` by a random candidate. Pair tasks: copy ``c`` rewrites text field
  ``c mod 2`` and keeps the other, as TinyBERT augments one field of a pair at a time.
* ``mask_ngram`` (Tang et al. 2019, "Distilling task-specific knowledge from BERT into simple
  neural networks"): each word becomes the mask token with probability ``p_mask``, then with
  probability ``p_ng`` only a random n-gram (n uniform in 1..``max_n``) of the text is kept;
  every field of a pair independently. The paper's third rule (a same-POS word swap) needs a
  tagger and is left out. Model-free.

A copy equal to its source or to an earlier copy is dropped (TinyBERT does the same), so a
row yields at most ``copies`` texts. Randomness is a generator seeded by (seed, row, copy), so
the output depends on nothing else (not on batching or worker processes). Sampling runs in
``datasets.map`` worker processes (``num_proc``); results are cached on disk under
``$LITDISTILL_HOME/tokenized/augment/<key>/`` keyed by the input rows, the method and its
parameters, the tokenizer and the model the candidates come from.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import datasets
import numpy as np
from transformers import PreTrainedTokenizerBase

from litdistill.candidates import piece_ids
from litdistill.errors import ConfigError

log = logging.getLogger(__name__)

# NLTK's English stop words, the list TinyBERT's augmentation skips.
STOP_WORDS = frozenset("""
i me my myself we our ours ourselves you you're you've you'll you'd your yours yourself
yourselves he him his himself she she's her hers herself it it's its itself they them their
theirs themselves what which who whom this that that'll these those am is are was were be
been being have has had having do does did doing a an the and but if or because as until
while of at by for with about against between into through during before after above below
to from up down in out on off over under again further then once here there when where why
how all any both each few more most other some such no nor not only own same so than too
very s t can will just don don't should should've now d ll m o re ve y ain aren aren't
couldn couldn't didn didn't doesn doesn't hadn hadn't hasn hasn't haven haven't isn isn't ma
mightn mightn't mustn mustn't needn needn't shan shan't shouldn shouldn't wasn wasn't weren
weren't won won't wouldn wouldn't""".split())
FORMAT = 1  # bump when the generated rows change for the same key


def _check_prob(name: str, value: float) -> float:
    if not 0.0 <= float(value) <= 1.0:
        raise ConfigError(f"augment.{name}={value}: a probability must be in [0, 1]")
    return float(value)


@dataclass(frozen=True)
class Augment:
    """No augmentation (``augment=none``); the base of the methods below.

    Attributes:
        copies: New texts per input row (N).
        from_transfer: Also augment the transfer rows (``transfer=...``), not only the
            labelled ones.
        seed: Seed of the (seed, row, copy) generators.
        num_proc: Worker processes for the sampling (None: one per 2,000 rows, up to the
            CPU count).
    """

    copies: int = 1
    from_transfer: bool = False
    seed: int = 0
    num_proc: int | None = None

    method = "none"

    def __post_init__(self) -> None:
        if int(self.copies) < 1:
            raise ConfigError(f"augment.copies={self.copies}: make at least 1 copy per row")
        if self.num_proc is not None and int(self.num_proc) < 1:
            raise ConfigError(f"augment.num_proc={self.num_proc}: use >= 1 or null")

    @property
    def enabled(self) -> bool:
        return self.method != "none"

    def params(self) -> dict[str, Any]:
        """The method and the parameters its output depends on (results.json, cache key);
        not ``num_proc`` or ``batch_size``, which only change how fast it runs."""
        skip = ("num_proc", "batch_size")
        return {"method": self.method, **{k: v for k, v in asdict(self).items()
                                          if k not in skip}}

    def prepare(self, rows: datasets.Dataset, fields: tuple[str, ...],
                tokenizer: PreTrainedTokenizerBase) -> datasets.Dataset:
        """Add what sampling needs per row (words, candidates) as columns."""
        return _with_words(rows, fields, tokenizer)

    def rewrite(self, words: dict[str, list[str]], extra: dict[str, Any], copy: int,
                rng: np.random.Generator, mask_token: str) -> dict[str, list[str]]:
        """One copy's words per field."""
        raise NotImplementedError


def _with_words(rows: datasets.Dataset, fields: tuple[str, ...],
                tokenizer: PreTrainedTokenizerBase) -> datasets.Dataset:
    """``<field>/words``: each text split into words by the tokenizer's pre-tokenizer
    (BERT's: whitespace and punctuation), the units TinyBERT and Tang et al. rewrite."""
    split = tokenizer.backend_tokenizer.pre_tokenizer.pre_tokenize_str
    return rows.map(lambda b: {f"{f}/words": [[w for w, _ in split(t)] for t in b[f]]
                               for f in fields}, batched=True, desc="augment: words")


@dataclass(frozen=True)
class TinyBertAugment(Augment):
    """TinyBERT's augmentation; candidates from ``mlm`` or the teacher's embeddings.

    Attributes:
        p: Probability of replacing an eligible word.
        top_k: Candidates per word (K).
        mlm: A masked LM folder, zoo or hub name (None: embedding neighbours).
        batch_size: Masked sequences per MLM forward pass.
    """

    p: float = 0.4
    top_k: int = 15
    mlm: str | None = None
    batch_size: int = 32

    method = "tinybert"

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_prob("p", self.p)
        if int(self.top_k) < 1 or int(self.batch_size) < 1:
            raise ConfigError(f"augment.top_k={self.top_k} and augment.batch_size="
                              f"{self.batch_size} must be >= 1")

    def rewrite(self, words: dict[str, list[str]], extra: dict[str, Any], copy: int,
                rng: np.random.Generator, mask_token: str) -> dict[str, list[str]]:
        fields = list(words)
        field = fields[copy % len(fields)]  # pairs: one field per copy, as TinyBERT
        new = list(words[field])
        for i, cands in enumerate(extra[f"{field}/cands"]):
            # Draw for every word, eligible or not, so one word's candidates never shift
            # the random stream of the words after it.
            u, pick = rng.random(), rng.integers(1 << 30)
            if cands and u < self.p:
                new[i] = cands[pick % len(cands)]
        return {**words, field: new}


@dataclass(frozen=True)
class MaskNgramAugment(Augment):
    """Tang et al. 2019: masking, then n-gram sampling.

    Attributes:
        p_mask: Probability of replacing a word by the mask token.
        p_ng: Probability of keeping only a random n-gram.
        max_n: Largest n (n is uniform in 1..max_n).
    """

    p_mask: float = 0.1
    p_ng: float = 0.25
    max_n: int = 5

    method = "mask_ngram"

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_prob("p_mask", self.p_mask)
        _check_prob("p_ng", self.p_ng)
        if int(self.max_n) < 1:
            raise ConfigError(f"augment.max_n={self.max_n}: n-grams have at least 1 word")

    def rewrite(self, words: dict[str, list[str]], extra: dict[str, Any], copy: int,
                rng: np.random.Generator, mask_token: str) -> dict[str, list[str]]:
        out = {}
        for field, ws in words.items():
            new = [mask_token if rng.random() < self.p_mask else w for w in ws]
            if rng.random() < self.p_ng:
                n = int(rng.integers(1, self.max_n + 1))
                if n < len(new):
                    start = int(rng.integers(0, len(new) - n + 1))
                    new = new[start:start + n]
            out[field] = new
        return out


def sample(aug: Augment, rows: datasets.Dataset, fields: tuple[str, ...],
           mask_token: str) -> datasets.Dataset:
    """``aug.copies`` rewritten texts per row (duplicates dropped), in parallel workers.

    Args:
        aug: The method.
        rows: Prepared rows (:meth:`Augment.prepare`).
        fields: The task's text fields.
        mask_token: The tokenizer's mask token (``mask_ngram``).

    Returns:
        The text fields of the new rows plus ``source_row`` (the input row index).
    """
    def expand(batch: dict[str, list], indices: list[int]) -> dict[str, list]:
        out: dict[str, list] = {f: [] for f in fields} | {"source_row": []}
        for j, row in enumerate(indices):
            words = {f: batch[f"{f}/words"][j] for f in fields}
            extra = {k: v[j] for k, v in batch.items() if k.endswith("/cands")}
            seen = {tuple(" ".join(words[f]) for f in fields)}
            for copy in range(aug.copies):
                rng = np.random.default_rng([aug.seed, row, copy])
                new = aug.rewrite(words, extra, copy, rng, mask_token)
                texts = tuple(" ".join(new[f]) for f in fields)
                if texts not in seen:
                    seen.add(texts)
                    for f, t in zip(fields, texts, strict=True):
                        out[f].append(t)
                    out["source_row"].append(row)
        return out

    procs = aug.num_proc or max(1, min(os.cpu_count() or 1, len(rows) // 2000))
    return rows.map(expand, batched=True, with_indices=True, remove_columns=rows.column_names,
                    num_proc=procs if procs > 1 else None, desc=f"augment: {aug.method}")


def cache_key(aug: Augment, source: str, fields: tuple[str, ...], tokenizer_id: str,
              model_id: str | None) -> str:
    """Hash of everything the augmented rows depend on."""
    parts = {"format": FORMAT, "params": aug.params(), "source": source, "fields": fields,
             "tokenizer": tokenizer_id, "model": model_id}
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:24]


def attach_candidates(aug: TinyBertAugment, rows: datasets.Dataset, fields: tuple[str, ...],
                      tokenizer: PreTrainedTokenizerBase,
                      find: Callable[[list[tuple[list[str], int]], list[list[int]]],
                                     list[list[int]]]) -> datasets.Dataset:
    """``<field>/cands``: each word's candidate strings ([] for a word left as it is).

    Args:
        find: Maps (every eligible word as ``(words of its text, position)``, its piece ids)
            to its candidate ids, in that order (the MLM or the embedding neighbours; see
            :func:`litdistill.unlabelled.candidate_finder`).
    """
    columns: dict[str, list[list[list[str]]]] = {}
    for field in fields:
        texts = rows[f"{field}/words"]
        where = [(r, i) for r, ws in enumerate(texts) for i, w in enumerate(ws)
                 if w.isalpha() and w.lower() not in STOP_WORDS]
        pieces = piece_ids(tokenizer, [texts[r][i] for r, i in where])
        found = find([(texts[r], i) for r, i in where], pieces)
        cands: list[list[list[str]]] = [[[] for _ in ws] for ws in texts]
        for (r, i), ids in zip(where, found, strict=True):
            cands[r][i] = tokenizer.convert_ids_to_tokens(ids)
        columns[f"{field}/cands"] = cands
    for name, values in columns.items():
        rows = rows.add_column(name, values)
    return rows
