"""Transfer sets and augmentation: rows learned from the teacher only, on tiny models."""

from __future__ import annotations

import json
from pathlib import Path

import datasets
import pytest
import torch

from litdistill import augment as aug_lib
from litdistill.augment import MaskNgramAugment, TinyBertAugment
from litdistill.batching import LABELLED
from litdistill.candidates import embedding_neighbours, mlm_candidates, whole_word_mask
from litdistill.errors import ConfigError
from litdistill.models import Sized, load_tokenizer
from litdistill.module import DistillationModule
from litdistill.objective import Objective
from litdistill.tasks import get_task
from litdistill.train import train
from litdistill.transfer import TransferSet, read_files

KD = ("teacher=tiny", "student=tiny", "distill=kd")


def test_train_rest_rows_are_the_rest_and_cached_like_train(make_cfg, tmp_path):
    """64 tiny SST-2 rows, 16 labelled: the other 48 are transfer rows; an epoch covers all 64
    (batch 8: 8 steps); their teacher logits are a cache entry that a second run reads."""
    first = train(make_cfg(*KD, "transfer=train_rest", "data.max_train_samples=16",
                           run_dir=tmp_path / "a"))
    assert first["transfer"]["labelled_rows"] == 16
    assert first["transfer"]["transfer_rows"] == 48 and first["transfer"]["augmented_rows"] == 0
    assert first["global_step"] == 8
    splits = first["teacher_cache"]["splits"]
    assert set(splits) == {"train", "validation", "transfer"} and not splits["transfer"]["hit"]
    second = train(make_cfg(*KD, "transfer=train_rest", "data.max_train_samples=16",
                            run_dir=tmp_path / "b"))
    assert all(s["hit"] for s in second["teacher_cache"]["splits"].values())
    capped = train(make_cfg(*KD, "transfer=train_rest", "transfer.max_rows=8",
                            "data.max_train_samples=16", run_dir=tmp_path / "c"))
    assert capped["transfer"]["transfer_rows"] == 8
    assert capped["teacher_cache"]["splits"]["transfer"]["key"] != splits["transfer"]["key"]


def test_the_labelled_subset_does_not_move_with_the_run_seed(make_cfg, tmp_path):
    """data.subset_seed fixes L (and so U) for every seed: teachers and students share it."""
    from hydra.utils import instantiate

    def rows(seed: int) -> list[int]:
        cfg = make_cfg("data.max_train_samples=16", "data.subset_seed=0", f"seed={seed}")
        return instantiate(cfg.data).read(get_task(cfg.task)).raw["train"]["idx"]

    assert rows(1) == rows(2)


def test_files_transfer_set_single_and_pair(make_cfg, tmp_path):
    """Label columns are ignored; a pair task needs both fields (file and field named)."""
    texts = tmp_path / "u.jsonl"
    texts.write_text("\n".join(json.dumps({"sentence": f"a good film {i}", "label": 7})
                               for i in range(10)))
    result = train(make_cfg(*KD, "transfer=files", f"transfer.files=[{texts}]"))
    assert result["transfer"]["transfer_rows"] == 10
    plain = tmp_path / "u.txt"
    plain.write_text("good\n\nbad film\n")
    rows, ids = read_files(get_task({"name": "sst2"}), [str(plain)])
    assert rows["sentence"] == ["good", "bad film"] and ids[0].startswith(f"{plain}#sha256=")
    with pytest.raises(ConfigError, match=r"u.jsonl lacks the text field\(s\) \['sentence1'"):
        read_files(get_task({"name": "rte"}), [str(texts)])
    with pytest.raises(ConfigError, match="one text per line.*pairs"):
        read_files(get_task({"name": "rte"}), [str(plain)])


@pytest.mark.parametrize("overrides,message", [
    (["teacher=tiny", "distill=none", "transfer=train_rest", "data.max_train_samples=16"],
     "without labels.*no teacher term"),
    (["teacher=tiny", "distill=none", "augment=mask_ngram"], "no teacher term"),
    ([*KD, "transfer=files", "transfer.files=[/no/such.csv]"], "/no/such.csv.*does not exist"),
    ([*KD, "transfer=train_rest"], "keeps all 64 rows"),
    ([*KD, "transfer=train_rest", "transfer.max_rows=0"], "max_rows=0"),
    ([*KD, "transfer.source=web"], "transfer.source='web'"),
    ([*KD, "augment=tinybert", "augment.copies=0"], "copies=0"),
    ([*KD, "augment=tinybert", "augment.p=1.5"], r"augment.p=1.5.*\[0, 1\]"),
    ([*KD, "augment=mask_ngram", "augment.p_ng=-0.1"], "p_ng=-0.1"),
    ([*KD, "augment=tinybert", "augment.mlm=/no/such/mlm"], "augment.mlm=/no/such/mlm: .*exist"),
])
def test_bad_transfer_and_augment_fail_before_weights(make_cfg, no_weights, overrides, message):
    with pytest.raises(ConfigError, match=message):
        train(make_cfg(*overrides))


def test_foreign_masked_lm_is_refused(make_cfg, no_weights, word_tokenizer_dir):
    """The tiny models read the built-in character vocabulary; the MLM's words differ."""
    with pytest.raises(ConfigError, match="augment.mlm=.*vocabulary"):
        train(make_cfg(*KD, "augment=tinybert", f"augment.mlm={word_tokenizer_dir}"))


def test_a_transfer_row_never_contributes_a_task_loss():
    """A batch of transfer rows only: the loss is alpha_kd * kd exactly, whatever labels say."""
    torch.manual_seed(0)
    student = Sized(1, 32, 2, 64).build(2, False).eval()
    module = DistillationModule(student, None, get_task({"name": "sst2"}),
                                Objective(temperature=2.0, alpha_kd=0.5, alpha_task=0.5),
                                optimizer=torch.optim.AdamW, cached_teacher=True).eval()
    batch = {"input_ids": torch.randint(5, 100, (4, 6)), "attention_mask": torch.ones(4, 6),
             "labels": torch.tensor([0, 1, 0, 1]), "teacher_logits": torch.randn(4, 2),
             LABELLED: torch.zeros(4, dtype=torch.long)}
    with torch.no_grad():
        loss = module.training_step(batch, 0)
        flipped = module.training_step({**batch, "labels": 1 - batch["labels"]}, 0)
        from litdistill.losses import kd_loss

        kd = kd_loss(student(**{k: batch[k] for k in ("input_ids", "attention_mask")}).logits,
                     batch["teacher_logits"], 2.0)
    assert loss.item() == pytest.approx(0.5 * kd.item(), rel=1e-5)
    assert flipped.item() == loss.item()


# ------------------------------------------------------------------------- augmentation
@pytest.fixture
def word_tokenizer(word_tokenizer_dir: Path):
    return load_tokenizer(str(word_tokenizer_dir))


def _rows(texts: list[str], field: str = "sentence") -> datasets.Dataset:
    return datasets.Dataset.from_dict({field: texts})


def _embedding_finder(tokenizer, embeddings: torch.Tensor, top_k: int):
    allowed = whole_word_mask(tokenizer)

    def find(masked, pieces):
        return embedding_neighbours(embeddings, pieces, allowed, top_k)

    return find


def _augment(aug, rows, fields, tokenizer, embeddings):
    prepared = aug.prepare(rows, fields, tokenizer)
    if isinstance(aug, TinyBertAugment):
        prepared = aug_lib.attach_candidates(aug, prepared, fields, tokenizer,
                                             _embedding_finder(tokenizer, embeddings, aug.top_k))
    return aug_lib.sample(aug, prepared, fields, tokenizer.mask_token)


def test_embedding_neighbours_are_the_nearest_whole_words(word_tokenizer):
    """Rows of 'good' and 'great' nearly equal, 'bad' opposite: good's nearest is great."""
    vocab = word_tokenizer.get_vocab()
    emb = torch.randn(len(word_tokenizer), 16)
    emb[vocab["great"]] = emb[vocab["good"]] + 0.01
    emb[vocab["bad"]] = -emb[vocab["good"]]
    allowed = whole_word_mask(word_tokenizer)
    assert not allowed[vocab["[MASK]"]] and not allowed[vocab["##a"]]
    (near,) = embedding_neighbours(emb, [[vocab["good"]]], allowed, top_k=3)
    assert near[0] == vocab["great"] and vocab["good"] not in near and vocab["bad"] not in near


def test_tinybert_augmentation_is_deterministic_and_rewrites_words(word_tokenizer):
    emb = torch.randn(len(word_tokenizer), 16)
    rows = _rows(["the movie was good and fun", "a dull plot", "it is great"])
    aug = TinyBertAugment(copies=5, p=0.5, top_k=3, seed=3)
    first = _augment(aug, rows, ("sentence",), word_tokenizer, emb)
    again = _augment(aug, rows, ("sentence",), word_tokenizer, emb)
    assert first["sentence"] == again["sentence"] and len(first) > 0
    assert all(s not in rows["sentence"] for s in first["sentence"])  # no copy of a source
    assert len(first) <= 5 * len(rows)
    # stop words ('the', 'was', 'and', 'a', 'it', 'is') are never replaced
    for text, src in zip(first["sentence"], first["source_row"], strict=True):
        words, orig = text.split(), rows["sentence"][src].split()
        assert all(w == o for w, o in zip(words, orig, strict=True) if o in aug_lib.STOP_WORDS)
    other = _augment(TinyBertAugment(copies=5, p=0.5, top_k=3, seed=4), rows, ("sentence",),
                     word_tokenizer, emb)
    assert other["sentence"] != first["sentence"]


def test_pair_tasks_rewrite_one_field_per_copy(word_tokenizer):
    emb = torch.randn(len(word_tokenizer), 16)
    rows = datasets.Dataset.from_dict({"sentence1": ["good fun movie"],
                                       "sentence2": ["boring ugly plot"]})
    out = _augment(TinyBertAugment(copies=6, p=1.0, top_k=3), rows,
                   ("sentence1", "sentence2"), word_tokenizer, emb)
    for a, b in zip(out["sentence1"], out["sentence2"], strict=True):
        assert (a == "good fun movie") != (b == "boring ugly plot")  # exactly one rewritten


def test_mask_ngram_masks_and_samples(word_tokenizer):
    rows = _rows(["good great fun lovely superb charming movie film plot"] * 2)
    masked = _augment(MaskNgramAugment(copies=4, p_mask=1.0, p_ng=0.0), rows, ("sentence",),
                      word_tokenizer, None)
    assert set(masked["sentence"]) == {" ".join(["[MASK]"] * 9)}  # duplicates dropped per row
    grams = _augment(MaskNgramAugment(copies=8, p_mask=0.0, p_ng=1.0, max_n=2), rows,
                     ("sentence",), word_tokenizer, None)
    assert all(1 <= len(s.split()) <= 2 for s in grams["sentence"])
    assert grams["sentence"] == _augment(MaskNgramAugment(copies=8, p_mask=0.0, p_ng=1.0,
                                                          max_n=2), rows, ("sentence",),
                                         word_tokenizer, None)["sentence"]


def test_batched_mlm_candidates_match_one_forward_per_word(word_tokenizer):
    """A tiny BertForMaskedLM (random, from a config): batching the masked copies gives the
    same candidates as one forward per word (eval mode: padding is masked out)."""
    from transformers import BertConfig, BertForMaskedLM

    torch.manual_seed(0)
    mlm = BertForMaskedLM(BertConfig(vocab_size=len(word_tokenizer), hidden_size=32,
                                     num_hidden_layers=2, num_attention_heads=2,
                                     intermediate_size=64)).eval()
    allowed = whole_word_mask(word_tokenizer)
    masked = [(["good", "movie"], 0), (["a", "dull", "boring", "plot"], 2), (["fun"], 0)]
    batched = mlm_candidates(mlm, word_tokenizer, masked, allowed, top_k=4, batch_size=8)
    single = [mlm_candidates(mlm, word_tokenizer, [m], allowed, top_k=4)[0] for m in masked]
    assert batched == single
    vocab = word_tokenizer.get_vocab()
    assert all(vocab[w] not in ids for (ws, i), ids in zip(masked, batched, strict=True)
               for w in [ws[i]])
    assert all(allowed[ids].all() and len(ids) == 4 for ids in batched)


def test_augmentation_run_with_a_masked_lm_and_its_cache(make_cfg, tmp_path, word_tokenizer_dir):
    """augment.mlm=<folder> with the models' own vocabulary; a second run of the same config
    reads the cache (rows and their teacher logits), a changed parameter recomputes it."""
    from transformers import BertConfig, BertForMaskedLM, BertTokenizer

    tokenizer = BertTokenizer.from_pretrained(word_tokenizer_dir)
    mlm_dir = tmp_path / "mlm"
    BertForMaskedLM(BertConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=1,
                               num_attention_heads=2, intermediate_size=64)).save_pretrained(
        mlm_dir)
    tokenizer.save_pretrained(mlm_dir)
    common = [*KD, f"+teacher.tokenizer_name={word_tokenizer_dir}", "augment=tinybert",
              f"augment.mlm={mlm_dir}", "augment.copies=2", "data.max_train_samples=16"]
    first = train(make_cfg(*common, run_dir=tmp_path / "a"))
    assert 0 < first["transfer"]["augmented_rows"] <= 32
    assert first["transfer"]["augment"]["mlm"] == str(mlm_dir)
    cache = tmp_path / "cache" / "augment"
    entries = set(cache.iterdir())
    second = train(make_cfg(*common, run_dir=tmp_path / "b"))
    assert set(cache.iterdir()) == entries  # read, not recomputed
    assert second["teacher_cache"]["splits"]["transfer"]["hit"]
    train(make_cfg(*common, "augment.p=0.2", run_dir=tmp_path / "c"))
    assert len(set(cache.iterdir()) - entries) == 1


def test_transfer_options_describe_themselves():
    assert TransferSet().enabled is False
    assert TransferSet("files", files="a.csv").describe()["files"] == ["a.csv"]
