"""The teacher-output cache: keys, concurrency, crash safety, equality with a live teacher,
no teacher weights read on a hit, and the teacher sanity gate."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import open_dict

from litdistill import models
from litdistill.data import DataOptions, GlueDataModule
from litdistill.errors import ConfigError
from litdistill.models import Sized, char_tokenizer
from litdistill.module import DistillationModule
from litdistill.objective import Objective
from litdistill.reader import eval_batches, split_key, split_logits, tokenize_split
from litdistill.tasks import get_task
from litdistill.teacher_cache import TeacherCache, entry_key, weights_fingerprint
from litdistill.train import train


@pytest.fixture(scope="module")
def fine_tuned_teacher(tmp_path_factory, tiny_glue, word_tokenizer_dir) -> Path:
    """A 2-layer BERT fine-tuned on the tiny SST-2 (a real, file-backed teacher that beats
    the majority class; settings of test_fine_tuning_learns_and_exports_a_pipeline_model)."""
    from litdistill.conf import compose

    run = tmp_path_factory.mktemp("teacher_run")
    cfg = compose([
        "logger=none", "callbacks=none", "trainer.max_epochs=12", "student=sized",
        "student.num_layers=2", "student.hidden=32", "student.heads=2",
        "student.intermediate=64", f"student.tokenizer_name={word_tokenizer_dir}",
        "++trainer.enable_progress_bar=false", "trainer.enable_model_summary=false",
        "optimizer.lr=3e-3", "scheduler=none", "data.batch_size=8",
        f"data.glue_dir={tiny_glue}"])
    with open_dict(cfg):
        cfg.paths.output_dir = str(run)
        cfg.paths.cache_dir = str(run / "cache")
    results = train(cfg)
    assert results["student"]["score"] > 0.7, results["student"]
    return run / "student"


def _key(glue: Path, split: str = "train", task: str = "sst2", **kwargs) -> str:
    """The tokenized split's cache key (what the teacher cache keys on)."""
    options = DataOptions(glue_dir=str(glue), **kwargs)
    return split_key(options.read(get_task({"name": task})), split, char_tokenizer(),
                     options.max_length)


def test_key_changes_with_every_input(tiny_glue, tmp_path):
    spec = Sized(2, 32, 2, 64)
    torch.manual_seed(0)
    teacher_a = weights_fingerprint(None, spec.build(2, False))
    torch.manual_seed(1)
    teacher_b = weights_fingerprint(None, spec.build(2, False))
    assert teacher_a != teacher_b  # other weights
    keys = {entry_key(teacher_a, _key(tiny_glue)),
            entry_key(teacher_b, _key(tiny_glue)),  # teacher
            entry_key(teacher_a, _key(tiny_glue, "validation")),  # split
            entry_key(teacher_a, _key(tiny_glue, max_length=16)),  # preprocessing
            entry_key(teacher_a, _key(tiny_glue, max_train_samples=10))}  # subsampling
    other_data = tmp_path / "glue"
    shutil.copytree(tiny_glue, other_data)
    with (other_data / "SST-2" / "train.tsv").open("a") as fh:
        fh.write("one more good line\t1\n")
    keys.add(entry_key(teacher_a, _key(other_data)))
    keys.add(entry_key(teacher_a, _key(tiny_glue, task="cola")))  # task
    assert len(keys) == 7
    # and a folder teacher is keyed by its files' bytes
    folder = tmp_path / "t"
    spec.build(2, False).save_pretrained(folder)
    before = weights_fingerprint(folder)
    assert weights_fingerprint(folder) == before
    (folder / "config.json").write_text((folder / "config.json").read_text() + " ")
    assert weights_fingerprint(folder) != before


_WRITER = """
import sys, time
import numpy as np
from litdistill.teacher_cache import TeacherCache

root, marker, out = sys.argv[1:]

def compute():
    with open(marker, "a") as fh:
        fh.write("computed\\n")
    time.sleep(1.0)  # long enough for the other writers to find the lock taken
    return np.arange(20, dtype=np.float32).reshape(10, 2)

np.save(out, TeacherCache(root, "auto").get("k", 10, compute, {"teacher": "t"}))
"""


def test_concurrent_writers_compute_once(tmp_path):
    marker = tmp_path / "marker"
    procs = [subprocess.Popen([sys.executable, "-c", _WRITER, str(tmp_path / "cache"),
                               str(marker), str(tmp_path / f"out{i}.npy")])
             for i in range(3)]
    assert [p.wait(120) for p in procs] == [0, 0, 0]
    assert marker.read_text().count("computed") == 1
    arrays = [np.load(tmp_path / f"out{i}.npy") for i in range(3)]
    for a in arrays:
        np.testing.assert_array_equal(a, arrays[0])
    assert arrays[0].dtype == np.float16
    assert not [p for p in (tmp_path / "cache").iterdir() if p.name.startswith(".")]


def test_a_crashed_writer_leaves_no_entry(tmp_path):
    cache = TeacherCache(tmp_path, "auto")

    def crash() -> np.ndarray:
        raise KeyboardInterrupt  # killed mid-computation

    with pytest.raises(KeyboardInterrupt):
        cache.get("k", 4, crash, {})
    assert not cache.has("k", 4)
    assert [p.name for p in tmp_path.iterdir()] == ["k.lock"]
    calls = []
    got = cache.get("k", 4, lambda: calls.append(1) or np.ones((4, 3)), {})
    assert calls == [1] and got.shape == (4, 3)
    # a truncated logits file is not a valid entry
    (tmp_path / "k" / "logits.npy").write_bytes(b"\x93NUMPY")
    assert not cache.has("k", 4)
    with pytest.raises(ConfigError, match="teacher_cache=auto"):
        TeacherCache(tmp_path, "read").get("missing", 4, np.ones, {})


def test_cached_logits_give_the_live_loss(tiny_glue, tmp_path):
    """KD loss of a batch with the teacher run live == with its logits read from the cache."""
    task = get_task({"name": "sst2"})
    torch.manual_seed(0)
    teacher = Sized(2, 32, 2, 64).build(2, False)
    with torch.no_grad():  # a confident teacher, so the KD term is far from zero
        teacher.classifier.weight.mul_(200.0)
    student = Sized(1, 32, 2, 64).build(2, False)
    options, tokenizer = DataOptions(glue_dir=str(tiny_glue)), char_tokenizer()
    splits = options.read(task)
    tokenized = {s: tokenize_split(splits, s, tokenizer, max_length=options.max_length).data
                 for s in splits.raw}
    rows = len(tokenized["train"])
    logits = TeacherCache(tmp_path / "teacher", "auto").get(
        "k", rows,
        lambda: split_logits(teacher, eval_batches(tokenized["train"], tokenizer, 16), rows), {})
    dm = GlueDataModule(task, tokenized, tokenizer, options, teacher_logits={"train": logits})
    batch = next(iter(dm.train_dataloader()))
    assert batch["teacher_logits"].shape == (dm.batch_size, 2)
    assert batch["teacher_logits"].dtype == torch.float32

    def loss(module: DistillationModule, batch: dict) -> float:
        module.train()
        torch.manual_seed(1)  # the same dropout masks in the student
        with torch.no_grad():
            return float(module.training_step(batch, 0))

    kwargs = dict(task=task, optimizer=torch.optim.AdamW,
                  objective=Objective(temperature=2.0, alpha_kd=1.0, alpha_task=0.0))
    cached = loss(DistillationModule(student, None, cached_teacher=True, **kwargs), batch)
    live_batch = {k: v for k, v in batch.items() if k != "teacher_logits"}
    live = loss(DistillationModule(student, teacher, **kwargs), live_batch)
    assert cached == pytest.approx(live, rel=2e-3)  # fp16 storage of the logits
    assert cached > 0.01


def test_second_job_reads_the_cache_without_loading_the_teacher(
        make_cfg, tmp_path, fine_tuned_teacher, monkeypatch):
    overrides = ["teacher=pretrained", f"teacher.name_or_path={fine_tuned_teacher}",
                 "student=tiny", "distill=kd", "teacher_gate=0.01"]
    first = train(make_cfg(*overrides, run_dir=tmp_path / "a"))
    splits = first["teacher_cache"]["splits"]
    assert set(splits) == {"train", "validation"}
    assert not any(s["hit"] for s in splits.values())
    assert first["teacher"]["path"] == str(fine_tuned_teacher)

    real_build = models.Pretrained.build

    def refuse_teacher(self, *args, **kwargs):
        if self.path == str(fine_tuned_teacher):
            raise AssertionError("the teacher's weights were loaded despite a full cache")
        return real_build(self, *args, **kwargs)

    monkeypatch.setattr(models.Pretrained, "build", refuse_teacher)
    second = train(make_cfg(*overrides, "seed=7", run_dir=tmp_path / "b"))
    assert all(s["hit"] for s in second["teacher_cache"]["splits"].values())
    assert second["teacher"]["score"] == first["teacher"]["score"]
    assert second["teacher"]["params"] == first["teacher"]["params"] > 0
    with pytest.raises(ConfigError, match="teacher_cache=read"):
        train(make_cfg(*overrides, "teacher_cache=read", "data.max_length=20",
                       run_dir=tmp_path / "c"))


def test_teacher_no_better_than_majority_is_refused(make_cfg, tmp_path):
    """A 'fine-tuned' teacher whose head outputs zeros always predicts class 0: at best the
    majority class, so distilling from it stops before any training."""
    model = Sized(2, 32, 2, 64).build(2, False)
    torch.nn.init.zeros_(model.classifier.weight)
    torch.nn.init.zeros_(model.classifier.bias)
    model.save_pretrained(tmp_path / "bad")
    char_tokenizer().save_pretrained(tmp_path / "bad")
    cfg = make_cfg("teacher=pretrained", f"teacher.name_or_path={tmp_path / 'bad'}",
                   "student=tiny", "distill=kd", "teacher_gate=0.01")
    with pytest.raises(ConfigError, match="majority class.*fine-tune the teacher first"):
        train(cfg)
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert results["status"] == "failed" and "majority" in results["error"]
    assert not (tmp_path / "run" / "checkpoints").exists()  # stopped before training


def test_bad_cache_mode_fails_before_weights(make_cfg, no_weights):
    with pytest.raises(ConfigError, match="teacher_cache='sometimes'.*off, read, write, auto"):
        train(make_cfg("teacher=tiny", "distill=kd", "teacher_cache=sometimes"))
