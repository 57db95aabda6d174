"""Width pruning (``student=pruned``): shapes, importance, slicing, and a run end to end."""

import json

import datasets
import pytest
import torch
from transformers import AutoModelForSequenceClassification, MPNetConfig

from litdistill.errors import ConfigError
from litdistill.models import FromTeacher, Pruned, Sized, char_tokenizer, count_params
from litdistill.pruning import Calibration, check_shape, gradient_importance, importance
from litdistill.train import train

TEACHER = Sized(num_layers=3, hidden=32, heads=2, intermediate=64, name="t")  # head size 16
TEXTS = ["the quick brown fox", "jumps over the lazy dog", "a movie to see", "dull, dull"] * 8


@pytest.fixture
def teacher() -> torch.nn.Module:
    torch.manual_seed(0)
    return TEACHER.build(2, False).eval()


def _calibration() -> Calibration:
    tokenizer = char_tokenizer()
    return Calibration([datasets.Dataset.from_dict(dict(tokenizer(TEXTS)))], tokenizer)


def _logits(model: torch.nn.Module, texts: list[str] = TEXTS[:4]) -> torch.Tensor:
    batch = char_tokenizer()(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        return model.eval()(**batch).logits


@pytest.mark.parametrize("layers", [None, [0, 2]])
def test_nothing_pruned_equals_from_teacher(teacher, layers):
    """Full hidden/heads/FFN: the same weights and logits as the plain layer cut."""
    cut = FromTeacher(layers or [0, 1, 2]).build(2, False, TEACHER, teacher)
    pruned = Pruned(layers=layers).build(2, False, TEACHER, teacher, _calibration())
    a, b = cut.state_dict(), pruned.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert torch.equal(_logits(cut), _logits(pruned))


def test_pruned_student_is_a_valid_model_of_the_asked_shape(teacher, tmp_path):
    spec = Pruned(layers=[0, 2], hidden=16, intermediate=24)
    student = spec.build(2, False, TEACHER, teacher, _calibration())
    config = student.config
    assert (config.num_hidden_layers, config.hidden_size, config.num_attention_heads,
            config.intermediate_size) == (2, 16, 1, 24)
    known = spec.hf_config(TEACHER)  # before any weights
    assert {k: getattr(known, k) for k in ("hidden_size", "num_attention_heads",
                                           "intermediate_size", "num_hidden_layers")} == \
        {k: getattr(config, k) for k in ("hidden_size", "num_attention_heads",
                                         "intermediate_size", "num_hidden_layers")}
    # 141 x 16 word + 512 x 16 position + 2 x 16 type + 2 x 16 LN embeddings; per layer
    # Q/K/V/O 4 x (16x16+16), LN 2 x 32, FFN 16x24+24 + 24x16+16; pooler 16x16+16; head 34
    emb = (141 + 512 + 2) * 16 + 32
    layer = 4 * (16 * 16 + 16) + 2 * 32 + (16 * 24 + 24) + (24 * 16 + 16)
    assert count_params(student) == emb + 2 * layer + (16 * 16 + 16) + (16 * 2 + 2)
    logits = _logits(student)
    assert logits.shape == (4, 2) and torch.isfinite(logits).all()
    student.save_pretrained(tmp_path)
    again = AutoModelForSequenceClassification.from_pretrained(tmp_path)
    assert torch.equal(_logits(again), logits)


def test_dead_ffn_neurons_are_the_ones_pruned_and_cost_nothing(teacher):
    """Neurons 40..63 of every layer output GELU(-30) = 0: their importance is 0, pruning the
    FFN to 40 keeps exactly neurons 0..39, and (hidden untouched) the logits do not move."""
    with torch.no_grad():
        for layer in teacher.bert.encoder.layer:
            layer.intermediate.dense.weight[40:] = 0
            layer.intermediate.dense.bias[40:] = -30
    student = Pruned(intermediate=40).build(2, False, TEACHER, teacher, _calibration())
    for t_layer, s_layer in zip(teacher.bert.encoder.layer, student.bert.encoder.layer,
                                strict=True):
        s_ffn, t_ffn = s_layer.intermediate.dense, t_layer.intermediate.dense
        assert torch.equal(s_ffn.weight, t_ffn.weight[:40])
        assert torch.equal(s_layer.output.dense.weight, t_layer.output.dense.weight[:, :40])
    torch.testing.assert_close(_logits(student), _logits(teacher), rtol=0, atol=1e-6)


def test_silent_head_and_small_hidden_dims_are_pruned(teacher):
    """Head 0 of layer 1 has zero value weights (its context is 0) -> head 1 is kept there;
    the weights are the teacher's rows/columns at the kept head and hidden dims."""
    with torch.no_grad():
        attn = teacher.bert.encoder.layer[1].attention.self
        attn.value.weight[:16] = 0
        attn.value.bias[:16] = 0
    scores = importance(teacher, _calibration().batches(32, 0), [0, 1, 2])
    assert scores["heads"][1, 0] == 0 and scores["heads"][1, 1] > 0
    assert scores["hidden"].shape == (32,) and scores["neurons"].shape == (3, 64)
    student = Pruned(hidden=16).build(2, False, TEACHER, teacher, _calibration())
    kept = scores["hidden"].topk(16).indices.sort().values
    t = teacher.bert.encoder.layer[1].attention.self.query.weight
    torch.testing.assert_close(student.bert.encoder.layer[1].attention.self.query.weight,
                               t[16:][:, kept], rtol=0, atol=0)
    torch.testing.assert_close(student.bert.embeddings.word_embeddings.weight,
                               teacher.bert.embeddings.word_embeddings.weight[:, kept])
    torch.testing.assert_close(student.classifier.weight, teacher.classifier.weight[:, kept])


def _loud_unread_head(teacher: torch.nn.Module) -> None:
    """Layer 1, head 0: values x 10 (the loudest context) but zero output-projection columns
    (nothing reads it): activation importance keeps it, gradient importance scores it 0."""
    with torch.no_grad():
        attn = teacher.bert.encoder.layer[1].attention
        attn.self.value.weight[:16] *= 10
        attn.self.value.bias[:16] *= 10
        attn.output.dense.weight[:, :16] = 0


def test_gradient_importance_scores_an_unread_head_zero(teacher):
    _loud_unread_head(teacher)
    batches = list(_calibration().batches(32, 0))
    loud = importance(teacher, iter(batches), [0, 1, 2])
    grad = gradient_importance(teacher, iter(batches), [0, 1, 2])
    assert loud["heads"][1, 0] > loud["heads"][1, 1]
    assert grad["heads"][1, 0] == 0 and grad["heads"][1, 1] > 0
    assert torch.equal(grad["hidden"], loud["hidden"])  # hidden dims: activation either way
    assert grad["heads"].shape == (3, 2) and grad["neurons"].shape == (3, 64)
    spec = {"hidden": 16, "intermediate": 64}  # one head (16 wide) per layer
    kept = {how: Pruned(importance=how, **spec).build(2, False, TEACHER, teacher, _calibration())
            for how in ("activation", "gradient")}
    value = teacher.bert.encoder.layer[1].attention.self.value.weight
    hidden = loud["hidden"].topk(16).indices.sort().values
    for how, head in (("activation", 0), ("gradient", 1)):  # the head each estimator keeps
        rows = kept[how].bert.encoder.layer[1].attention.self.value.weight
        assert torch.equal(rows, value[16 * head:16 * head + 16][:, hidden])


def test_gradient_importance_is_the_derivative_of_the_loss(teacher):
    """One row: the score of head h is |dL/ds| for the head's values scaled by s at s = 1
    (the context is linear in the values), by central differences in float64."""
    teacher = teacher.double()
    batch = next(_calibration().batches(1, 3))
    score = gradient_importance(teacher, iter([batch]), [0, 1, 2])["heads"]
    label = teacher(**batch).logits.argmax(-1)
    value = teacher.bert.encoder.layer[2].attention.self.value

    def loss(scale: float) -> float:
        with torch.no_grad():
            value.weight[16:] *= scale
            value.bias[16:] *= scale
            out = torch.nn.functional.cross_entropy(teacher(**batch).logits, label)
            value.weight[16:] /= scale
            value.bias[16:] /= scale
        return out.item()

    eps = 1e-4
    expected = abs(loss(1 + eps) - loss(1 - eps)) / (2 * eps)
    assert expected > 1e-6
    assert score[2, 1].item() == pytest.approx(expected, rel=1e-5)


def test_an_unknown_importance_estimator_is_refused():
    with pytest.raises(ConfigError, match="valid: activation, gradient"):
        Pruned(hidden=16, importance="fisher")


def test_calibration_rows_are_seeded_and_capped():
    calibration = _calibration()
    first = [b["input_ids"] for b in calibration.batches(8, seed=1, batch_size=4)]
    again = [b["input_ids"] for b in calibration.batches(8, seed=1, batch_size=4)]
    other = [b["input_ids"] for b in calibration.batches(8, seed=2, batch_size=4)]
    assert len(first) == 2 and all(torch.equal(a, b) for a, b in zip(first, again, strict=True))
    assert any(not torch.equal(a, b) for a, b in zip(first, other, strict=True))
    assert sum(len(b["input_ids"]) for b in calibration.batches(1000, 0)) == len(TEXTS)


def test_calibration_maps_a_pruned_students_ids_to_the_full_vocabulary():
    """A student cut from its own source and vocabulary-pruned: its columns hold new ids,
    the source reads the full vocabulary's (kept[new id])."""
    rows = datasets.Dataset.from_dict({"input_ids": [[2, 1, 3]], "attention_mask": [[1, 1, 1]]})
    batch = next(Calibration([rows], char_tokenizer(), id_map=[0, 5, 7, 9]).batches(1, 0))
    assert batch["input_ids"].tolist() == [[7, 5, 9]]


@pytest.mark.parametrize(("sizes", "message"), [
    (dict(hidden=48), "student.hidden=48"),
    (dict(hidden=24), "multiple of the teacher's head size 16"),
    (dict(hidden=16, heads=2), "heads = 1"),
    (dict(intermediate=65), "FFN size 64"),
    (dict(layers=[0, 3]), "out of range"),
    (dict(layers=[]), "out of range"),
])
def test_bad_shapes_fail_before_weights(sizes, message, no_weights):
    with pytest.raises(ConfigError, match=message):
        Pruned(**sizes).hf_config(TEACHER)


def test_mpnet_is_refused_by_name():
    with pytest.raises(ConfigError, match="'mpnet'"):
        check_shape(MPNetConfig(), None, 384, None, None)


@pytest.mark.parametrize("estimator", ["activation", "gradient"])
def test_pruned_student_trains_end_to_end(make_cfg, tmp_path, estimator):
    """``teacher=tiny student=pruned student.hidden=16``: a run with an exported student."""
    results = train(make_cfg("teacher=tiny", "student=pruned", "student.hidden=16",
                             "student.rows=16", "distill=kd", f"student.importance={estimator}"))
    assert results["status"] == "ok"
    config = json.loads((tmp_path / "run" / "student" / "config.json").read_text())
    assert (config["hidden_size"], config["num_attention_heads"]) == (16, 1)
    assert results["student"]["params"] < results["teacher"]["params"]
    assert results["student"]["vocab_size"] == len(char_tokenizer())
    assert results["student"]["size_mb"] > 0


def test_pruned_from_a_source_folder_without_a_teacher(make_cfg, teacher, tmp_path):
    """The no-KD baseline of a width- and vocabulary-pruned student (``teacher=none``): the
    importance pass reads the student's own (vocabulary-pruned) rows mapped back."""
    teacher.save_pretrained(tmp_path / "source")
    char_tokenizer().save_pretrained(tmp_path / "source")
    results = train(make_cfg("teacher=none", "distill=none", "student=pruned",
                             f"student.source={tmp_path / 'source'}", "student.hidden=16",
                             "student.layers=[0,2]", "student.vocab=task", "student.rows=16"))
    assert results["status"] == "ok"
    config = json.loads((tmp_path / "run" / "student" / "config.json").read_text())
    assert (config["num_hidden_layers"], config["hidden_size"]) == (2, 16)
    assert config["vocab_size"] == results["student"]["vocab_size"] < len(char_tokenizer())


def test_the_default_estimator_keeps_earlier_runs_config_sha(make_cfg):
    """``student.importance`` came after the first pruned runs: at its default it is left out
    of the identity skip_done compares (those runs stay done); ``gradient`` is a new run."""
    from omegaconf import open_dict

    from litdistill.runs import config_sha

    cfg = make_cfg("teacher=tiny", "student=pruned", "student.hidden=16")
    before = cfg.copy()
    with open_dict(before):
        del before.student.importance
    assert config_sha(cfg) == config_sha(before)
    assert config_sha(make_cfg("teacher=tiny", "student=pruned", "student.hidden=16",
                               "student.importance=gradient")) != config_sha(cfg)
