"""Every distillation preset trains on tiny models of different widths and depths."""

import csv
from pathlib import Path

import pytest

from litdistill.errors import ConfigError
from litdistill.train import train

# Teacher 4 x 48, student 2 x 32: projections and non-trivial layer maps are exercised.
TINY_PAIR = ["teacher=tiny", "teacher.num_layers=4", "teacher.hidden=48", "student=tiny"]


@pytest.mark.parametrize("preset", ["kd", "distilbert", "pkd", "tinybert", "minilm"])
def test_preset_fast_dev_run(make_cfg, preset):
    results = train(make_cfg(*TINY_PAIR, f"distill={preset}", "trainer.fast_dev_run=true"))
    assert results["status"] == "ok"


def _logged(run_dir: Path) -> list[dict[str, str]]:
    with (run_dir / "csv" / "metrics.csv").open() as fh:
        return [row for row in csv.DictReader(fh) if row.get("train/loss")]


def test_tinybert_switches_phase_at_the_configured_step(make_cfg, tmp_path):
    """64 rows / batch 8 = 8 steps per epoch: phase 2 starts at step 8 and only then logs KD."""
    results = train(make_cfg(*TINY_PAIR, "distill=tinybert", "logger=csv",
                             "trainer.log_every_n_steps=1", "distill.phases.0.epochs=1",
                             "distill.phases.1.epochs=1"))
    assert results["phase_starts"] == [[0, "intermediate"], [8, "prediction"]]
    assert results["global_step"] == 16
    rows = _logged(tmp_path / "run")
    first = [r for r in rows if int(r["step"]) < 7]
    last = [r for r in rows if int(r["step"]) >= 8]
    assert first and all(r["train/loss_hidden"] and not r["train/loss_kd"] for r in first)
    assert last and all(r["train/loss_kd"] and not r["train/loss_hidden"] for r in last)


def test_temperature_schedule_decays(make_cfg, tmp_path):
    train(make_cfg(*TINY_PAIR, "distill=kd", "logger=csv", "trainer.log_every_n_steps=1",
                   "trainer.max_epochs=2", "+distill.schedules.temperature.start=4.0",
                   "+distill.schedules.temperature.end=1.0"))
    temps = [float(r["train/temperature"]) for r in _logged(tmp_path / "run")]
    assert temps[0] == pytest.approx(4.0) and temps == sorted(temps, reverse=True)
    assert temps[-1] < 1.5


def test_attention_terms_need_equal_heads(make_cfg, no_weights):
    with pytest.raises(ConfigError, match="compares heads one to one.*relation"):
        train(make_cfg(*TINY_PAIR, "teacher.heads=4", "distill=tinybert"))


@pytest.mark.parametrize("teacher_layers", [3, 1])
def test_uniform_mapping_fits_any_depths(make_cfg, teacher_layers):
    """A 2-layer student learns from a 3-layer teacher (not a divisor: layers 1.5 -> 2 and 3)
    and from a 1-layer one (deeper than its teacher: both layers learn from layer 1)."""
    results = train(make_cfg("teacher=tiny", f"teacher.num_layers={teacher_layers}",
                             "student=tiny", "distill=tinybert", "trainer.fast_dev_run=true"))
    assert results["status"] == "ok"


def test_layer_map_that_does_not_fit_fails_before_weights(make_cfg, no_weights):
    with pytest.raises(ConfigError, match=r"distill.terms.hidden: explicit layer mapping "
                                          r"\[1, 9\] needs 2 teacher layers in 0..4"):
        train(make_cfg(*TINY_PAIR, "distill=tinybert", "distill.terms.hidden.mapping=[1,9]"))
    with pytest.raises(ConfigError, match="distill.terms.patient: layer mapping 'skip' leaves "
                                          "a 1-layer student no layer"):
        train(make_cfg(*TINY_PAIR, "student.num_layers=1", "distill=pkd"))


def test_intermediate_terms_need_a_teacher(make_cfg, no_weights):
    with pytest.raises(ConfigError, match="distillation needs a teacher"):
        train(make_cfg("distill=distilbert"))


def test_separate_tokenizers_logit_kd(make_cfg, word_tokenizer_dir, tmp_path):
    """A char-vocabulary teacher teaches a word-vocabulary student through its own inputs."""
    student = ["student=sized", "student.num_layers=2", "student.hidden=32", "student.heads=2",
               "student.intermediate=64", f"student.tokenizer_name={word_tokenizer_dir}"]
    results = train(make_cfg("teacher=tiny", *student, "distill=kd",
                             "data.separate_tokenizers=true"))
    assert results["status"] == "ok" and results["teacher"]["score"] is not None
    with pytest.raises(ConfigError, match="only logit-level KD"):
        train(make_cfg("teacher=tiny", *student, "distill=distilbert",
                       "data.separate_tokenizers=true", run_dir=tmp_path / "intermediate"))


def test_dual_tokenization_batches(tiny_glue, tmp_path, word_tokenizer_dir):
    from transformers import AutoTokenizer

    from litdistill.data import DataOptions, build_datamodule
    from litdistill.models import char_tokenizer
    from litdistill.tasks import GLUE_TASKS

    options = DataOptions(glue_dir=str(tiny_glue), cache_dir=str(tmp_path))
    splits = options.read(GLUE_TASKS["mrpc"])
    word = AutoTokenizer.from_pretrained(word_tokenizer_dir)
    dm = build_datamodule(options, splits, word, char_tokenizer())
    batch = next(iter(dm.train_dataloader()))
    assert batch["teacher_input_ids"].shape[0] == batch["input_ids"].shape[0]
    # Characters make longer sequences than words: each side is padded on its own.
    assert batch["teacher_input_ids"].shape[1] > batch["input_ids"].shape[1]
    assert int(batch["teacher_attention_mask"].sum()) > int(batch["attention_mask"].sum())
    build_datamodule(options, splits, word)
    assert len(list(tmp_path.iterdir())) == 4  # the dual tokenization has its own cache keys
