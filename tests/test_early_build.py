"""Issue 19, item 5: every configured object (optimizer and scheduler factories, loggers,
callbacks, Trainer) is built before any weights load, so a typo there costs no teacher load
and no teacher pass."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import AutoModelForSequenceClassification, PreTrainedModel

from litdistill import models, teachers
from litdistill import train as train_module
from litdistill.errors import ConfigError
from litdistill.optim import probe_factories
from litdistill.train import train

KD = ["teacher=tiny", "distill=kd"]


@pytest.fixture
def nothing_loads(monkeypatch: pytest.MonkeyPatch, no_weights: None) -> None:
    """``no_weights`` (the specs' build) plus every other way to weights: transformers'
    loaders, the layer cut, the teacher's model and its logits pass."""

    def refuse(*args, **kwargs):
        raise AssertionError("weights were loaded (or the teacher ran) before the config "
                             "was validated")

    monkeypatch.setattr(PreTrainedModel, "from_pretrained", classmethod(refuse))
    monkeypatch.setattr(AutoModelForSequenceClassification, "from_pretrained",
                        classmethod(refuse))
    monkeypatch.setattr(AutoModelForSequenceClassification, "from_config",
                        classmethod(refuse))
    monkeypatch.setattr(models, "cut_layers", refuse)
    monkeypatch.setattr(teachers.TeacherBuilder, "model", refuse)
    monkeypatch.setattr(teachers, "teacher_outputs", refuse)
    if hasattr(train_module, "teacher_outputs"):
        monkeypatch.setattr(train_module, "teacher_outputs", refuse)


@pytest.mark.parametrize("overrides,message", [
    (["optimizer.lr=-1"], r"optimizer.lr=-1: must be a finite number"),
    (["optimizer._target_=torch.optim.NoSuch"],
     r"^optimizer: Error locating target 'torch.optim.NoSuch'$"),
    (["+optimizer.momentun=0.9"], r"^optimizer: .*unexpected keyword argument 'momentun'"),
    (["optimizer.betas=[0.9,2.0]"], r"^optimizer: Invalid beta parameter at index 1: 2.0"),
    (["optimizer.eps=-1"], r"^optimizer: Invalid epsilon value: -1"),
    (["~optimizer._partial_"], r"^optimizer: set optimizer._partial_=true"),
    (["scheduler._partial_=false"], r"^scheduler: set scheduler._partial_=true"),
    (["scheduler.warmup_ratio=2"], r"scheduler.warmup_ratio=2: must be a number in \[0, 1\]"),
    (["+scheduler.cycles=3"], r"^scheduler: .*unexpected keyword argument 'cycles'"),
    (["scheduler._target_=litdistill.optim.no_such"],
     r"^scheduler: Error locating target 'litdistill.optim.no_such'"),
    (["trainer.max_epochs=abc"], r"trainer.max_epochs='abc': must be an integer >= 1"),
    (["trainer.max_epochs=0"], r"trainer.max_epochs=0: must be an integer >= 1"),
    (["trainer.gradient_clip_val=-1"], r"trainer.gradient_clip_val=-1"),
    (["+trainer.max_epoch=3"],
     r"^trainer: Trainer.__init__\(\) got an unexpected keyword argument 'max_epoch'$"),
    (["trainer.accumulate_grad_batches=0"], r"trainer.accumulate_grad_batches=0: must be an "
                                            r"integer >= 1"),
    (["callbacks.model_checkpoint.mode=maximum"],
     r"^callbacks.model_checkpoint: `mode` can be min, max but got maximum$"),
    (["+callbacks.model_checkpoint.every_n_epoch=1"],
     r"^callbacks.model_checkpoint: .*unexpected keyword argument 'every_n_epoch'"),
    (["+callbacks.early.stopping._target_=lightning.pytorch.callbacks.EarlyStoping"],
     r"^callbacks.early: Error locating target"),
    (["logger=csv", "+logger.csv.flush_every=3"],
     r"^logger.csv: .*unexpected keyword argument 'flush_every'"),
])
def test_bad_settings_fail_before_any_weights(make_cfg, tmp_path, nothing_loads, overrides,
                                              message):
    with pytest.raises(ConfigError, match=message):
        train(make_cfg(*KD, *overrides))
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert results["status"] == "failed" and "ConfigError" in results["error"]


def test_the_guard_would_catch_a_weight_load(make_cfg, nothing_loads):
    """The guard is real: with a good config the run reaches the teacher and stops there."""
    with pytest.raises(AssertionError, match="before the config was validated"):
        train(make_cfg(*KD))


def test_probe_builds_the_configured_optimizer_and_schedule():
    """A factory that works passes; the probe sees the two parameter groups the student gets
    (decayed weights, biases without decay)."""
    seen = []

    def factory(groups):
        seen.append(groups)
        return torch.optim.AdamW(groups, lr=1e-3)

    probe_factories(factory, None)
    assert [len(g["params"]) for g in seen[0]] == [1, 1] and seen[0][1]["weight_decay"] == 0.0
    with pytest.raises(ConfigError, match="not a torch.optim.Optimizer"):
        probe_factories(lambda groups: groups, None)
