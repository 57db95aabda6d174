"""Model specs, layer cutting, and the frozen teacher."""

from pathlib import Path

import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader
from transformers import AutoModelForSequenceClassification, BertConfig

from litdistill.checks import check_models
from litdistill.errors import ConfigError
from litdistill.models import FromTeacher, Pretrained, Sized, char_tokenizer, cut_layers
from litdistill.module import DistillationModule
from litdistill.objective import Objective
from litdistill.tasks import GLUE_TASKS

KD = Objective(temperature=2.0, alpha_kd=1.0, alpha_task=0.0)


def _bert(layers: int = 4, labels: int = 2) -> torch.nn.Module:
    config = BertConfig(vocab_size=len(char_tokenizer()), hidden_size=32, num_hidden_layers=layers,
                        num_attention_heads=2, intermediate_size=64, num_labels=labels)
    return AutoModelForSequenceClassification.from_config(config)


def _save(model: torch.nn.Module, folder: Path) -> Path:
    model.save_pretrained(folder)
    char_tokenizer().save_pretrained(folder)
    return folder


def test_cut_layers_copies_chosen_layers():
    torch.manual_seed(0)
    teacher = _bert(4)
    student = cut_layers(teacher, [0, 3])
    assert student.config.num_hidden_layers == 2
    t, s = teacher.state_dict(), student.state_dict()
    for s_i, t_i in ((0, 0), (1, 3)):
        key = "bert.encoder.layer.{}.attention.self.query.weight"
        torch.testing.assert_close(s[key.format(s_i)], t[key.format(t_i)])
    for key in ("bert.embeddings.word_embeddings.weight", "classifier.weight"):
        torch.testing.assert_close(s[key], t[key])
    assert all(p.requires_grad for p in student.parameters())
    batch = char_tokenizer()(["a good film"], return_tensors="pt")
    assert student(**batch).logits.shape == (1, 2)


def test_from_teacher_checks_layer_range(tmp_path: Path):
    spec = FromTeacher([0, 7])
    with pytest.raises(ConfigError, match=r"student.layers \[7\] out of range"):
        spec.hf_config(Pretrained(str(_save(_bert(4), tmp_path / "t"))))
    with pytest.raises(ConfigError, match="needs a teacher, or student.source"):
        FromTeacher([0]).tokenizer(None)


def test_vocabulary_mismatch_names_both(word_tokenizer_dir: Path):
    teacher = Sized(2, 32, 2, 64, name="char-teacher")
    student = Sized(2, 32, 2, 64, tokenizer_name=str(word_tokenizer_dir), name="word-student")
    with pytest.raises(ConfigError, match=r"vocabularies differ.*char-teacher has 141.*"
                                          r"word-student has \d+"):
        check_models(GLUE_TASKS["sst2"], teacher, student, KD)


def test_teacher_label_count_must_match_task(tmp_path: Path):
    teacher = Pretrained(str(_save(_bert(2, labels=3), tmp_path / "t3")))
    with pytest.raises(ConfigError, match="predicts 3 labels but task sst2 has 2"):
        check_models(GLUE_TASKS["sst2"], teacher, Sized(2, 32, 2, 64), KD)


def test_teacher_without_head_is_refused_for_kd(tmp_path: Path):
    from transformers import BertModel

    folder = tmp_path / "encoder"
    BertModel(_bert(2).config).save_pretrained(folder)
    char_tokenizer().save_pretrained(folder)
    with pytest.raises(ConfigError, match="no fine-tuned classification head.*fine-tune it"):
        check_models(GLUE_TASKS["sst2"], Pretrained(str(folder)), Sized(2, 32, 2, 64), KD)


def test_hub_name_offline_fails_fast():
    with pytest.raises(ConfigError, match="Hub is offline.*zoo name.*minilm_l6"):
        Pretrained("bert-base-uncased").hf_config(None)
    with pytest.raises(ConfigError, match="does not exist"):
        Pretrained("./no/such/folder").hf_config(None)


class _AssertTeacherFrozen(L.Callback):
    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        assert module.teacher.training is False
        assert module.student.training is True


def test_teacher_frozen_unchanged_and_not_checkpointed(tmp_path: Path):
    torch.manual_seed(0)
    # Both in train mode / eval mode the wrong way round, as from_pretrained() leaves them.
    teacher, student = _bert(2).train(), _bert(2).eval()
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    module = DistillationModule(student, teacher, GLUE_TASKS["sst2"],
                                Objective(alpha_kd=1.0, alpha_task=1.0),
                                optimizer=lambda p: torch.optim.AdamW(p, lr=1e-2))
    assert not any(p.requires_grad for p in module.teacher.parameters())
    optimizer = module.configure_optimizers()
    opt_params = {id(p) for g in optimizer.param_groups for p in g["params"]}
    assert opt_params == {id(p) for p in student.parameters()}
    assert opt_params.isdisjoint(id(p) for p in teacher.parameters())

    tok = char_tokenizer()
    enc = tok(["a good film", "bad", "fun movie", "dull plot"], padding=True,
              return_tensors="pt")
    # batch_size=None: the loader yields these ready-made batches as they are.
    batches = DataLoader([dict(enc, labels=torch.tensor([1, 0, 1, 0]))] * 3, batch_size=None)
    trainer = L.Trainer(max_steps=3, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False,
                        callbacks=[_AssertTeacherFrozen()], default_root_dir=tmp_path)
    student_before = student.classifier.weight.clone()
    trainer.fit(module, train_dataloaders=batches)
    for key, value in teacher.state_dict().items():
        torch.testing.assert_close(value, before[key])
    assert not torch.equal(student.classifier.weight, student_before)
    trainer.save_checkpoint(tmp_path / "m.ckpt")
    state = torch.load(tmp_path / "m.ckpt", weights_only=False)["state_dict"]
    assert state and not any(k.startswith("teacher.") for k in state)
