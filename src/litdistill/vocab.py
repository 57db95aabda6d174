"""Vocabulary pruning: keep only the word pieces a task's text uses (``student.vocab=task``).

A BERT-family student spends most of its parameters on the word-embedding matrix (MiniLM:
30,522 x 384 = 11.7M of a 3-layer cut's 17.4M). :func:`kept_pieces` lists the pieces that
occur in the run's text, plus the special tokens and optionally the ``extra`` most frequent
pieces of a corpus; :func:`prune_vocab` gathers those embedding rows and writes a matching
WordPiece tokenizer (the kept pieces in their new id order, same normaliser, pre-tokeniser,
special tokens and post-processor), so ``save_pretrained`` exports a standalone student.

Why tokenization is unchanged on covered text: WordPiece is greedy longest-match-first. At
each position of a word it takes the longest vocabulary piece that matches. If every piece the
full vocabulary produces for a word is kept, the pruned vocabulary finds the same piece at
each step: the full vocabulary's longest match is kept, and any longer candidate would have
been the full vocabulary's match instead. So the pieces, and (with the embedding rows
gathered) the logits, are identical. A word needing a dropped piece splits into other kept
pieces, or becomes ``[UNK]`` when no kept piece matches at some position.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from typing import TYPE_CHECKING

import torch
from tokenizers import Tokenizer
from torch import nn
from transformers import PretrainedConfig, PreTrainedModel, PreTrainedTokenizerBase

from litdistill.errors import ConfigError

if TYPE_CHECKING:
    import datasets

    from litdistill.reader import Splits

CHUNK = 1000  # texts tokenized per call


def _pieces(tokenizer: PreTrainedTokenizerBase, texts: Iterable[str]) -> Iterator[list[int]]:
    """Piece ids of each text, without special tokens."""
    chunk: list[str] = []
    for text in texts:
        chunk.append(text)
        if len(chunk) == CHUNK:
            yield from tokenizer(chunk, add_special_tokens=False)["input_ids"]
            chunk = []
    if chunk:
        yield from tokenizer(chunk, add_special_tokens=False)["input_ids"]


def run_texts(splits: Splits, transfer_rows: datasets.Dataset | None = None
              ) -> Iterator[str]:
    """Every text field of the run's training rows (after ``data.train_subset``) and of its
    transfer rows. Augmented rows are made later, with the student's tokenizer already
    fixed: their new words map to kept sub-pieces or ``[UNK]`` for the student."""
    fields = splits.task.text_fields
    for rows in (splits.raw["train"], transfer_rows):
        for field in fields if rows is not None else ():
            yield from (text for text in rows[field] if text)


def read_corpus(files: Sequence[str]) -> Iterator[str]:
    """The non-empty lines of text files (a text per line)."""
    for file in files:
        with open(file, encoding="utf-8") as fh:
            yield from (line.strip() for line in fh if line.strip())


def kept_pieces(tokenizer: PreTrainedTokenizerBase, texts: Iterable[str], extra: int = 0,
                corpus: Iterable[str] = ()) -> list[int]:
    """Ids (of ``tokenizer``'s vocabulary) a task-pruned student keeps, ascending.

    Args:
        tokenizer: The full tokenizer.
        texts: The run's text (each sentence of a pair as its own text: a pair tokenizes
            into its sentences' pieces).
        extra: Also keep this many of the most frequent other pieces of ``corpus``.
        corpus: Texts to count piece frequencies in (only read when ``extra`` > 0).

    Returns:
        Special and added tokens, every piece of ``texts``, then the extra pieces; sorted.
    """
    kept = set(tokenizer.all_special_ids) | set(tokenizer.added_tokens_decoder)
    for ids in _pieces(tokenizer, texts):
        kept.update(ids)
    if extra:
        counts = Counter(i for ids in _pieces(tokenizer, corpus) for i in ids if i not in kept)
        kept.update(i for i, _ in counts.most_common(extra))
    return sorted(kept)


def _remap_processor(node: dict, new_id: dict[int, int]) -> None:
    """Point a post-processor's special-token ids (``[CLS]``, ``[SEP]``) at their new ids."""
    kind = node.get("type")
    if kind == "Sequence":
        for child in node["processors"]:
            _remap_processor(child, new_id)
    elif kind == "TemplateProcessing":
        for special in node["special_tokens"].values():
            special["ids"] = [new_id[i] for i in special["ids"]]
    elif kind in ("BertProcessing", "RobertaProcessing"):
        for key in ("sep", "cls"):
            node[key] = [node[key][0], new_id[node[key][1]]]


def pruned_tokenizer(tokenizer: PreTrainedTokenizerBase,
                     kept: Sequence[int]) -> PreTrainedTokenizerBase:
    """A copy of a WordPiece tokenizer whose vocabulary is ``kept`` (new id = position)."""
    spec = json.loads(tokenizer.backend_tokenizer.to_str())
    if spec["model"]["type"] != "WordPiece":
        raise ConfigError(f"student.vocab=task supports WordPiece tokenizers (BERT, MiniLM, "
                          f"MPNet), not {spec['model']['type']}")
    new_id = {old: new for new, old in enumerate(kept)}
    piece_of = {i: p for p, i in spec["model"]["vocab"].items()}
    spec["model"]["vocab"] = {piece_of[old]: new for new, old in enumerate(kept)}
    spec["added_tokens"] = [{**t, "id": new_id[t["id"]]} for t in spec["added_tokens"]
                            if t["id"] in new_id]
    if spec.get("post_processor"):
        _remap_processor(spec["post_processor"], new_id)
    if spec.get("padding"):
        spec["padding"]["pad_id"] = new_id[spec["padding"]["pad_id"]]
    pruned = tokenizer.__class__(tokenizer_object=Tokenizer.from_str(json.dumps(spec)),
                                 model_max_length=tokenizer.model_max_length,
                                 **tokenizer.special_tokens_map)
    pruned.name_or_path = f"{tokenizer.name_or_path}[vocab={len(kept)}]"
    return pruned


def restrict_config(config: PretrainedConfig, kept: Sequence[int]) -> None:
    """Set a config's vocabulary size and pad id to the kept pieces' (in place)."""
    if config.pad_token_id is not None and config.pad_token_id not in kept:
        raise ConfigError(f"the pad token id {config.pad_token_id} is not among the kept pieces")
    if config.pad_token_id is not None:
        config.pad_token_id = list(kept).index(config.pad_token_id)
    config.vocab_size = len(kept)


@torch.no_grad()
def prune_vocab(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase,
                kept: Sequence[int]) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Keep only the ``kept`` rows of the word embeddings, and the matching tokenizer.

    The model is changed in place (and returned); ``tokenizer`` is left as it was.
    """
    if model.get_output_embeddings() is not None:
        raise ConfigError(f"{type(model).__name__} has an output vocabulary (an LM head); "
                          "vocabulary pruning supports encoders with a task head")
    old = model.get_input_embeddings()  # [V, H]
    restrict_config(model.config, kept)
    rows = old.weight.index_select(0, torch.as_tensor(kept, device=old.weight.device))
    new = nn.Embedding(len(kept), old.embedding_dim, padding_idx=model.config.pad_token_id,
                       device=old.weight.device, dtype=old.weight.dtype)
    new.weight.copy_(rows)
    model.set_input_embeddings(new)
    return model, pruned_tokenizer(tokenizer, kept)
