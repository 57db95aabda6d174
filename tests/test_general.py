"""General distillation: the objectives' maths, misconfigurations, a tiny end-to-end run."""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

import pytest
import torch
from omegaconf import open_dict
from transformers import AutoModel, BertConfig, BertForMaskedLM

from conftest import FILLER, WORDS_NEG, WORDS_POS
from litdistill import losses
from litdistill.errors import ConfigError
from litdistill.general import GeneralObjective, has_mlm_head, train_general
from litdistill.general_module import Masking, mask_tokens
from litdistill.models import char_tokenizer
from litdistill.train import train

TINY = ["teacher=tiny", "student=tiny", "trainer.max_epochs=1", "data.batch_size=8",
        "corpus.heldout_rows=8", "corpus.max_length=32"]


def write_text(path: Path, rows: int = 72, seed: int = 0) -> Path:
    rng = random.Random(seed)
    words = FILLER + WORDS_POS + WORDS_NEG
    path.write_text("\n".join(" ".join(rng.choices(words, k=rng.randint(3, 12)))
                              for _ in range(rows)) + "\n")
    return path


@pytest.fixture
def corpus_file(tmp_path: Path) -> Path:
    return write_text(tmp_path / "wiki.txt")


# ------------------------------------------------------------------ losses (analytic)
def test_token_kd_loss_is_kd_over_real_tokens_only():
    s = torch.tensor([[[0.0, 0.0], [5.0, -5.0]]])  # (B=1, T=2, V=2)
    t = torch.tensor([[[math.log(3.0), 0.0], [0.0, 0.0]]])
    mask = torch.tensor([[1, 0]])  # the second token is padding: left out
    # KL([3/4, 1/4] || [1/2, 1/2]) at T=1.
    expected = 0.75 * math.log(1.5) + 0.25 * math.log(0.5)
    assert losses.token_kd_loss(s, t, mask).item() == pytest.approx(expected, rel=1e-5)
    # T^2 scaling: at T=2 logits are halved before the softmax.
    p = torch.softmax(t[0, 0] / 2, -1)
    expected_t2 = 4 * float((p * (p.log() - math.log(0.5))).sum())
    assert losses.token_kd_loss(s, t, mask, 2.0).item() == pytest.approx(expected_t2, rel=1e-5)


def test_mlm_loss_counts_masked_positions_only():
    logits = torch.zeros(1, 3, 4)
    logits[0, 1, 2] = math.log(3.0)  # p(2) = 3 / 6 at position 1
    labels = torch.tensor([[-100, 2, -100]])
    assert losses.mlm_loss(logits, labels).item() == pytest.approx(-math.log(0.5), rel=1e-6)


def test_mask_tokens_rates_and_specials():
    torch.manual_seed(0)
    ids = torch.randint(5, 50, (64, 64))
    ids[:, 0], ids[:, -1] = 1, 2  # [CLS] ... [SEP]
    mask = torch.ones_like(ids)
    masking = Masking(mask_id=3, vocab_size=50, special_ids=(0, 1, 2, 3), probability=0.15)
    masked, labels = mask_tokens(ids, mask, masking, torch.Generator().manual_seed(1))
    chosen = labels != -100
    assert not chosen[:, 0].any() and not chosen[:, -1].any()
    assert chosen.float().mean().item() == pytest.approx(0.15 * 62 / 64, abs=0.02)
    assert torch.equal(labels[chosen], ids[chosen])
    as_mask = (masked[chosen] == 3).float().mean().item()
    assert as_mask == pytest.approx(0.8, abs=0.05)
    assert torch.equal(masked[~chosen], ids[~chosen])


def test_cosine_term_is_zero_for_parallel_states():
    h = torch.randn(2, 3, 4)
    mask = torch.ones(2, 3)
    assert losses.cosine_hidden_loss(2 * h, h, mask).item() == pytest.approx(0.0, abs=1e-6)
    assert losses.cosine_hidden_loss(-h, h, mask).item() == pytest.approx(2.0, abs=1e-6)


# ------------------------------------------------------------------ validation
def test_objective_rejects_bad_options():
    with pytest.raises(ConfigError, match="kind"):
        GeneralObjective(kind="bert")
    with pytest.raises(ConfigError, match="unknown distill.terms"):
        GeneralObjective(kind="tinybert", terms={"hiden": {}})
    with pytest.raises(ConfigError, match="distilbert only"):
        GeneralObjective(kind="tinybert", terms={"hidden": {}}, alpha_kd=1.0)
    with pytest.raises(TypeError):
        GeneralObjective(kind="tinybert", terms={"hidden": {}}, alpha=1.0)


def test_mlm_head_is_decided_from_the_config():
    assert has_mlm_head(BertConfig(architectures=["BertForMaskedLM"]))
    assert has_mlm_head(BertConfig(architectures=["BertForPreTraining"]))
    assert not has_mlm_head(BertConfig(architectures=["BertModel"]))


def test_general_objective_without_corpus_fails_clearly(make_cfg):
    cfg = make_cfg("distill=tinybert_general", "teacher=tiny", "student=tiny")
    with pytest.raises(ConfigError, match="needs a corpus"):
        train(cfg)
    failed = json.loads((Path(cfg.paths.output_dir) / "results.json").read_text())
    assert failed["status"] == "failed"


def test_corpus_with_task_objective_fails_clearly(make_cfg, corpus_file):
    cfg = make_cfg("distill=kd", "corpus=files", f"corpus.files=[{corpus_file}]",
                   "teacher=tiny", "student=tiny")
    with pytest.raises(ConfigError, match="a corpus is for general distillation"):
        train(cfg)


def test_distilbert_general_needs_an_mlm_head_before_weights_load(make_cfg, corpus_file,
                                                                  tmp_path, monkeypatch):
    folder = tmp_path / "encoder"
    AutoModel.from_config(BertConfig(vocab_size=len(char_tokenizer()), hidden_size=16,
                                     num_hidden_layers=1, num_attention_heads=2,
                                     intermediate_size=32)).save_pretrained(folder)
    char_tokenizer().save_pretrained(folder)
    monkeypatch.setattr("litdistill.general.build_teacher",
                        lambda plan: pytest.fail("weights loaded before the check"))
    cfg = make_cfg("distill=distilbert_general", "corpus=files", f"corpus.files=[{corpus_file}]",
                   "teacher=pretrained", f"teacher.name_or_path={folder}", "student=tiny")
    with pytest.raises(ConfigError, match="masked-LM head"):
        train(cfg)


def test_layer_map_and_heads_are_checked_before_weights_load(make_cfg, corpus_file,
                                                            monkeypatch):
    monkeypatch.setattr("litdistill.general.build_teacher",
                        lambda plan: pytest.fail("weights loaded before the check"))
    cfg = make_cfg("distill=tinybert_general", "corpus=files", f"corpus.files=[{corpus_file}]",
                   "teacher=tiny", "student=tiny", "student.num_layers=3",
                   "distill.terms.hidden.mapping=last")
    with pytest.raises(ConfigError, match="no deeper"):
        train(cfg)
    cfg = make_cfg("distill=tinybert_general", "corpus=files", f"corpus.files=[{corpus_file}]",
                   "teacher=tiny", "student=tiny", "student.heads=4")
    with pytest.raises(ConfigError, match="heads"):
        train(cfg)


# ------------------------------------------------------------------ end to end
@pytest.mark.parametrize(("objective", "width"), [("tinybert_general", 16),
                                               ("minilm_general", 16)])
def test_tiny_general_run_writes_results_and_student(make_cfg, corpus_file, objective, width):
    # A student narrower than the teacher (32): a projection (TinyBERT), relation heads (MiniLM).
    cfg = make_cfg(f"distill={objective}", "corpus=files", f"corpus.files=[{corpus_file}]",
                   *TINY, f"student.hidden={width}")
    results = train(cfg)
    assert results["status"] == "ok" and results["kind"] == "general"
    rows = results["corpus"]["rows"]
    assert rows["heldout"] >= 8 and results["global_step"] == math.ceil(rows["train"] / 8)
    assert results["tokens_seen"] > rows["train"]  # at least [CLS] [SEP] per row
    assert math.isfinite(results["heldout_loss"]) and results["student"]["params"] > 0
    on_disk = json.loads((Path(cfg.paths.output_dir) / "results.json").read_text())
    assert on_disk["tokens_seen"] == results["tokens_seen"]
    student = AutoModel.from_pretrained(results["student_dir"])
    assert student.config.num_hidden_layers == 2 and student.config.hidden_size == width
    assert (Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt").is_file()


def test_a_width_pruned_student_is_general_distilled(make_cfg, corpus_file):
    """student=pruned keeps its width in general distillation (calibrated on the corpus):
    never silently just the layer cut. (MiniLM's relations: any head count.)"""
    cfg = make_cfg("distill=minilm_general", "corpus=files", f"corpus.files=[{corpus_file}]",
                   *[o for o in TINY if not o.startswith("student")], "student=pruned",
                   "student.layers=[0]", "student.hidden=16", "student.intermediate=24",
                   "student.rows=16")
    results = train(cfg)
    assert results["status"] == "ok"
    config = AutoModel.from_pretrained(results["student_dir"]).config
    assert (config.num_hidden_layers, config.hidden_size, config.num_attention_heads,
            config.intermediate_size) == (1, 16, 1, 24)


@pytest.mark.parametrize(("option", "message"), [
    ("student.vocab=task", "general distillation reads the teacher's whole vocabulary"),
    ("student.importance=gradient", "needs a task head's logits"),
])
def test_what_general_distillation_cannot_do_to_a_pruned_student_fails_clearly(
        make_cfg, corpus_file, no_weights, option, message):
    cfg = make_cfg("distill=minilm_general", "corpus=files", f"corpus.files=[{corpus_file}]",
                   *[o for o in TINY if not o.startswith("student")], "student=pruned",
                   "student.hidden=16", option)
    with pytest.raises(ConfigError, match=message):
        train(cfg)


def test_distilbert_general_on_a_tiny_masked_lm_teacher(make_cfg, corpus_file, tmp_path):
    folder = tmp_path / "mlm"
    tok = char_tokenizer()
    BertForMaskedLM(BertConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=2,
                               num_attention_heads=2, intermediate_size=64,
                               architectures=["BertForMaskedLM"])).save_pretrained(folder)
    tok.save_pretrained(folder)
    cfg = make_cfg("distill=distilbert_general", "corpus=files", f"corpus.files=[{corpus_file}]",
                   "teacher=pretrained", f"teacher.name_or_path={folder}",
                   "student=from_teacher", "student.layers=[0]", *TINY[2:])
    results = train(cfg)
    assert results["status"] == "ok" and results["tokens_seen"] > 0
    assert BertForMaskedLM.from_pretrained(results["student_dir"]).config.num_hidden_layers == 1


def test_resume_mid_epoch_is_exact(make_cfg, corpus_file, tmp_path):
    args = ["distill=tinybert_general", "corpus=files", f"corpus.files=[{corpus_file}]", *TINY,
            "trainer.max_epochs=2", "callbacks.last_checkpoint.every_n_train_steps=5"]
    once = train(make_cfg(*args, run_dir=tmp_path / "once"))
    crash = ["+callbacks.crash._target_=helpers.CrashAfterSteps", "+callbacks.crash.steps=7"]
    cfg = make_cfg(*args, *crash, run_dir=tmp_path / "resumed")
    with pytest.raises(RuntimeError, match="simulated crash"):
        train(cfg)
    with open_dict(cfg):
        cfg.resume = True
        del cfg.callbacks.crash
    resumed = train_general(cfg)
    assert resumed["global_step"] == once["global_step"]
    assert resumed["tokens_seen"] == once["tokens_seen"]
    assert resumed["heldout_loss"] == pytest.approx(once["heldout_loss"], rel=1e-5)


def test_task_run_starts_from_a_general_student(make_cfg, corpus_file, tmp_path):
    general = train(make_cfg("distill=tinybert_general", "corpus=files",
                             f"corpus.files=[{corpus_file}]", *TINY))
    task = train(make_cfg("student=pretrained", f"student.name_or_path={general['student_dir']}",
                          "data.max_train_samples=16", run_dir=tmp_path / "task"))
    assert task["status"] == "ok" and task["student"]["score"] is not None
