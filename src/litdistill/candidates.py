"""Replacement candidates for TinyBERT-style augmentation (Jiao et al. 2020, Algorithm 1).

A word is split into word pieces by the teacher's tokenizer. TinyBERT asks a masked LM for
the K most likely words at the position of a *single-piece* word (the word masked, its
sentence as context) and GloVe for the K nearest words of a multi-piece one. Here:

* with a masked LM (``augment.mlm``): single-piece words get the MLM's top-K whole-word
  pieces at the masked position. Every masked copy of every sentence goes through the model
  in length-sorted batches (one masked position per sequence, ``batch_size`` sequences per
  forward), never one forward per word;
* otherwise, and for multi-piece words in both modes (no GloVe offline): the K nearest
  whole-word pieces, by cosine, to the word's input embedding in the *teacher's own* input
  embedding matrix (the mean of its pieces' rows for a multi-piece word). No extra asset.

Candidates are whole-word vocabulary pieces: alphabetic, not ``##`` continuations, not
special tokens, never the word itself.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import torch
from torch import Tensor, nn
from transformers import PreTrainedTokenizerBase

log = logging.getLogger(__name__)


def whole_word_mask(tokenizer: PreTrainedTokenizerBase) -> Tensor:
    """(V,) bool: vocabulary pieces that may replace a word (alphabetic whole words)."""
    special = set(tokenizer.all_special_ids)
    allowed = torch.zeros(len(tokenizer), dtype=torch.bool)
    for piece, i in tokenizer.get_vocab().items():
        if i < len(allowed) and i not in special and piece.isalpha() and piece.isascii():
            allowed[i] = True
    return allowed


def piece_ids(tokenizer: PreTrainedTokenizerBase, words: Sequence[str]) -> list[list[int]]:
    """Each word's word-piece ids (no special tokens), in one batched tokenizer call."""
    if not words:
        return []
    return tokenizer(list(words), add_special_tokens=False)["input_ids"]


@torch.no_grad()
def embedding_neighbours(embeddings: Tensor, queries: Sequence[Sequence[int]], allowed: Tensor,
                         top_k: int, chunk: int = 1024) -> list[list[int]]:
    """The ``top_k`` allowed pieces nearest (cosine) to each query word.

    Args:
        embeddings: (V, D) input embedding matrix.
        queries: Each word's piece ids; a word's vector is the mean of its pieces' rows.
        allowed: (V,) candidate mask (:func:`whole_word_mask`).
        top_k: Candidates per word.
        chunk: Words per matrix product (bounds the (chunk, V) similarity matrix).
    """
    unit = nn.functional.normalize(embeddings.float(), dim=-1)  # (V, D)
    out: list[list[int]] = []
    for start in range(0, len(queries), chunk):
        group = queries[start:start + chunk]
        vectors = torch.stack([unit[list(ids)].mean(0) for ids in group])  # (n, D)
        sims = nn.functional.normalize(vectors, dim=-1) @ unit.T  # (n, V)
        sims[:, ~allowed] = -float("inf")
        for row, ids in enumerate(group):
            if len(ids) == 1:
                sims[row, ids[0]] = -float("inf")  # never the word itself
        out += sims.topk(top_k, dim=-1).indices.tolist()
    return out


@torch.no_grad()
def mlm_candidates(mlm: nn.Module, tokenizer: PreTrainedTokenizerBase,
                   masked: Sequence[tuple[Sequence[str], int]], allowed: Tensor, top_k: int,
                   batch_size: int = 128) -> list[list[int]]:
    """The masked LM's ``top_k`` allowed pieces for each (words, position) to mask.

    Args:
        mlm: A ``*ForMaskedLM`` model (put in eval mode here).
        tokenizer: Its tokenizer (the same vocabulary as the teacher's).
        masked: ``(words of a text, index of the single-piece word to mask)`` pairs.
        allowed: (V,) candidate mask.
        top_k: Candidates per word.
        batch_size: Masked sequences per forward pass.

    Returns:
        One list of candidate piece ids per pair, in input order.
    """
    mlm.eval()
    device = next(mlm.parameters()).device
    # The LM head maps D -> V (30k) at every position, as much compute as the encoder for
    # short texts; only the masked position is needed, so apply it there alone when the
    # model is <encoder> + <one head module> (BERT, RoBERTa, MPNet).
    heads = [m for m in mlm.children() if m is not mlm.base_model]
    head = heads[0] if len(heads) == 1 else None
    order = sorted(range(len(masked)), key=lambda i: len(masked[i][0]))  # less padding
    out: list[list[int]] = [[] for _ in masked]
    for n, start in enumerate(range(0, len(order), batch_size)):
        rows = order[start:start + batch_size]
        texts = [[tokenizer.mask_token if j == masked[i][1] else w
                  for j, w in enumerate(masked[i][0])] for i in rows]
        enc = tokenizer(texts, is_split_into_words=True, truncation=True, padding=True,
                        return_tensors="pt").to(device)
        at = enc["input_ids"] == tokenizer.mask_token_id  # (B, T): one mask per row
        if head is not None:
            hidden = mlm.base_model(**enc).last_hidden_state  # (B, T, D)
            scores = head(hidden[at]).float()  # (B', V); B' < B when truncation cut a mask
        else:
            scores = mlm(**enc).logits[at].float()
        scores[:, ~allowed.to(device)] = -float("inf")
        top = scores.topk(top_k + 1, dim=-1).indices.tolist()
        kept = [i for i, has in zip(rows, at.any(-1).tolist(), strict=True) if has]
        for i, ids in zip(kept, top, strict=True):
            original = masked[i][0][masked[i][1]].lower()
            out[i] = [t for t in ids if tokenizer.convert_ids_to_tokens(t) != original][:top_k]
        if n % 50 == 0:
            log.info("augment: masked LM batch %d/%d", n + 1, -(-len(order) // batch_size))
    return out
