"""Vocabulary pruning (``student.vocab=task``): kept pieces, tokenizer, embeddings, a run."""

import json

import pytest
import torch
from transformers import (
    AutoModelForSequenceClassification,
    AutoTokenizer,
    BertConfig,
    BertTokenizer,
)

from litdistill.errors import ConfigError
from litdistill.models import Sized
from litdistill.train import train
from litdistill.vocab import kept_pieces, prune_vocab, pruned_tokenizer

PIECES = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "the", "movie", "good", "goods", "bad",
          "a", "is", "mov", "g", "##s", "##ie", "##o", "##d", "##ood", "."]
TRAIN = ["the movie is good.", "a good movies"]  # pieces: the movie is good . a ##s


@pytest.fixture(scope="module")
def tokenizer() -> BertTokenizer:
    return BertTokenizer(vocab={p: i for i, p in enumerate(PIECES)})


@pytest.fixture(scope="module")
def kept(tokenizer) -> list[int]:
    return kept_pieces(tokenizer, TRAIN)


def _model(vocab_size: int) -> torch.nn.Module:
    torch.manual_seed(0)
    config = BertConfig(vocab_size=vocab_size, hidden_size=16, num_hidden_layers=1,
                        num_attention_heads=2, intermediate_size=32, num_labels=2)
    return AutoModelForSequenceClassification.from_config(config).eval()


def test_kept_pieces_are_the_specials_and_the_texts_pieces(tokenizer, kept):
    assert [PIECES[i] for i in kept] == ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "the",
                                         "movie", "good", "a", "is", "##s", "."]


def test_extra_pieces_are_the_most_frequent_of_the_corpus(tokenizer):
    corpus = ["bad bad bad", "goods goods", "mov"]  # bad x3, goods x2, mov x1
    kept = kept_pieces(tokenizer, TRAIN, extra=2, corpus=corpus)
    assert {PIECES[i] for i in kept} - {PIECES[i] for i in kept_pieces(tokenizer, TRAIN)} == \
        {"bad", "goods"}


def test_covered_text_tokenizes_the_same_and_the_rest_splits_or_is_unk(tokenizer, kept):
    """Greedy longest match keeps every covered piece; "goods" (dropped) splits into the
    kept "good" + "##s"; "bad" (no kept piece matches) is [UNK]."""
    pruned = pruned_tokenizer(tokenizer, kept)
    assert len(pruned) == len(kept) == 12
    for text in [*TRAIN, "the good movie is a movie.", "movies"]:
        full_ids = tokenizer(text)["input_ids"]
        assert [kept[i] for i in pruned(text)["input_ids"]] == full_ids
    assert tokenizer.tokenize("goods") == ["goods"]
    assert pruned.tokenize("goods") == ["good", "##s"]
    assert pruned.tokenize("bad movie") == ["[UNK]", "movie"]
    assert pruned.pad_token_id == 0 and pruned.convert_ids_to_tokens(pruned.cls_token_id) == \
        "[CLS]"


def test_pruned_student_has_the_same_logits_on_covered_rows(tokenizer, kept, tmp_path):
    model = _model(len(PIECES))
    texts = ["the movie is good.", "a good movies", "the movie."]
    with torch.no_grad():
        before = model(**tokenizer(texts, padding=True, return_tensors="pt")).logits
    small, pruned = prune_vocab(model, tokenizer, kept)
    assert small.get_input_embeddings().weight.shape == (12, 16)
    assert small.config.vocab_size == 12 and small.config.pad_token_id == 0
    with torch.no_grad():
        after = small(**pruned(texts, padding=True, return_tensors="pt")).logits
    torch.testing.assert_close(after, before, rtol=0, atol=1e-6)
    # The exported pair is standalone: read back from disk alone, same ids and logits.
    small.save_pretrained(tmp_path)
    pruned.save_pretrained(tmp_path)
    tok2 = AutoTokenizer.from_pretrained(tmp_path)
    model2 = AutoModelForSequenceClassification.from_pretrained(tmp_path).eval()
    assert len(tok2) == 12 and tok2("goods")["input_ids"] == pruned("goods")["input_ids"]
    with torch.no_grad():
        again = model2(**tok2(texts, padding=True, return_tensors="pt")).logits
    torch.testing.assert_close(again, before, rtol=0, atol=1e-6)


def test_spec_vocab_options_are_checked(tmp_path):
    with pytest.raises(ConfigError, match="student.vocab=tiny"):
        Sized(2, 32, 2, 64, vocab="tiny")
    with pytest.raises(ConfigError, match="vocab_corpus"):
        Sized(2, 32, 2, 64, vocab="task", vocab_extra=10)
    with pytest.raises(ConfigError, match="no such file"):
        Sized(2, 32, 2, 64, vocab="task", vocab_extra=10, vocab_corpus=[str(tmp_path / "x")])
    spec = Sized(2, 32, 2, 64, vocab="task")
    with pytest.raises(RuntimeError, match="fit_vocab"):
        spec.tokenizer(None)
    spec.fit_vocab(["abc", "cab"], None)  # the character tokenizer: a b c ##a ##b
    assert len(spec.tokenizer(None)) == 5 + 5 == spec.hf_config(None).vocab_size
    assert spec.build(2, False).get_input_embeddings().num_embeddings == 10


def test_vocab_pruned_student_runs_with_its_own_tokenizer(make_cfg, tmp_path):
    """The teacher keeps its vocabulary (separate tokenizations); the export is standalone."""
    results = train(make_cfg("teacher=tiny", "student=from_teacher", "student.layers=[1]",
                             "student.vocab=task", "distill=kd"))
    assert results["status"] == "ok"
    folder = tmp_path / "run" / "student"
    size = results["student"]["vocab_size"]
    assert 5 < size < 141  # the tiny data uses some of the 141 character pieces
    assert json.loads((folder / "config.json").read_text())["vocab_size"] == size
    assert len(AutoTokenizer.from_pretrained(folder)) == size
    assert results["student"]["params"] == results["teacher"]["params"] - \
        (141 - size) * 32 - sum(p.numel() for p in _layer_of_tiny_teacher())


def _layer_of_tiny_teacher() -> list[torch.Tensor]:
    """The parameters of one layer of ``teacher=tiny`` (hidden 32, FFN 64)."""
    layer = AutoModelForSequenceClassification.from_config(
        BertConfig(vocab_size=10, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                   intermediate_size=64)).bert.encoder.layer[0]
    return list(layer.parameters())
