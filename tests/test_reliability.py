"""Issue 13: bad input fails cleanly before any weights load, non-finite training stops the
run, checkpoints are plain tensors, a failure never replaces an ok result, resume is exact."""

from __future__ import annotations

import csv
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from omegaconf import open_dict

from litdistill.errors import ConfigError, TrainingError
from litdistill.train import train

REPO = Path(__file__).resolve().parents[1]


def _read(run_dir: Path, name: str = "results.json") -> dict:
    return json.loads((run_dir / name).read_text())


def _sst2(root: Path, dev: bytes) -> Path:
    """A GLUE dir whose SST-2 dev.tsv holds ``dev`` (bytes, to plant bad encodings)."""
    (root / "SST-2").mkdir(parents=True)
    (root / "SST-2" / "train.tsv").write_text("sentence\tlabel\ngood\t1\nbad\t0\n")
    (root / "SST-2" / "dev.tsv").write_bytes(dev)
    return root


def _custom(tmp_path: Path, train_text: str, suffix: str = ".csv", regression: bool = False
            ) -> list[str]:
    """Overrides of a ``task=custom`` run whose train file holds ``train_text``."""
    dev = tmp_path / f"dev{suffix}"
    rows = ['{"text": "a good film", "label": 1.5}', '{"text": "dull", "label": 0.5}'] \
        if suffix == ".jsonl" else ["text,label", "a good film,1", "dull,0"]
    dev.write_text("\n".join(rows) + "\n")
    (tmp_path / f"train{suffix}").write_text(train_text)
    task = ["task.is_regression=true"] if regression else []
    return ["task=custom", f"task.data_files.train={tmp_path / f'train{suffix}'}",
            f"task.data_files.validation={dev}", *task]


# ------------------------------------------------------------ bad settings, before weights
@pytest.mark.parametrize("overrides,message", [
    (["teacher=tiny", "distill=kd", "distill.temperature=0"], "temperature must be > 0"),
    (["teacher=tiny", "distill=kd", "distill.temperature=-1"], "finite and >= 0"),
    (["teacher=tiny", "distill=kd", "distill.alpha_kd=-0.5"], "finite and >= 0"),
    (["data.batch_size=0"], r"data.batch_size=0: must be an integer >= 1"),
    (["data.eval_batch_size=0"], r"data.eval_batch_size=0: must be an integer >= 1"),
    (["optimizer.lr=-1"], r"optimizer.lr=-1: must be a finite number > 0"),
    (["optimizer.lr=nan"], r"optimizer.lr=nan: must be a finite number"),
    (["data.max_train_samples=0"], r"data.max_train_samples=0: .*>= 1 \(null: every row\)"),
    (["data.max_train_samples=-1"], r"data.max_train_samples=-1"),
    (["data.max_eval_samples=0"], r"data.max_eval_samples=0"),
    (["data.max_length=0"], r"data.max_length=0: must be an integer >= 1"),
    (["data.max_length=100000"], r"data.max_length=100000 exceeds the 512 positions of the "
                                 r"student tiny-student"),
    (["teacher=tiny", "distill=kd", "teacher.max_position=64", "data.max_length=100"],
     "exceeds the 64 positions of the teacher tiny-teacher"),
    (["data.num_workers=-1"], "data.num_workers=-1"),
    (["callbacks.last_checkpoint.every_n_train_steps=-5"], "every_n_train_steps=-5"),
])
def test_bad_numbers_fail_before_weights(make_cfg, tmp_path, no_weights, overrides, message):
    with pytest.raises(ConfigError, match=message):
        train(make_cfg(*overrides))
    assert _read(tmp_path / "run")["status"] == "failed"


def test_gpu_without_cuda_fails_before_weights(make_cfg, monkeypatch, no_weights):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ConfigError, match="trainer.accelerator=gpu but this machine has no"):
        train(make_cfg("hardware=gpu"))


def test_position_limit_counts_the_padding_offset():
    """RoBERTa/MPNet number positions from padding_idx + 1: 514 embeddings hold 512 tokens."""
    from transformers import BertConfig, MPNetConfig

    from litdistill.settings import position_limit

    assert position_limit(BertConfig(max_position_embeddings=512)) == 512
    assert position_limit(MPNetConfig(max_position_embeddings=514, pad_token_id=1)) == 512


def _unwritable(tmp_path: Path) -> Path:
    """A folder nobody can create, root included: its parent is a regular file."""
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    return blocker / "sub"


def test_unwritable_run_dir_fails_before_weights(make_cfg, tmp_path, no_weights):
    bad = _unwritable(tmp_path)
    with pytest.raises(ConfigError, match=rf"run dir \(paths.output_dir\) {bad} is not writable"):
        train(make_cfg(run_dir=bad))


def test_unwritable_litdistill_home_fails_before_weights(make_cfg, tmp_path, monkeypatch,
                                                         no_weights):
    monkeypatch.setenv("LITDISTILL_HOME", str(_unwritable(tmp_path)))
    cfg = make_cfg()
    with open_dict(cfg):  # the default, which make_cfg replaces with a tmp folder
        cfg.paths.cache_dir = "${oc.env:LITDISTILL_HOME}/tokenized"
    with pytest.raises(ConfigError, match="paths.cache_dir .*tokenized is not writable.*"
                                          "LITDISTILL_HOME"):
        train(cfg)


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_read_only_run_dir_fails_before_weights(make_cfg, tmp_path, no_weights):
    run = tmp_path / "ro"
    run.mkdir()
    run.chmod(0o555)
    try:
        with pytest.raises(ConfigError, match="is not writable"):
            train(make_cfg(run_dir=run))
    finally:
        run.chmod(0o755)


def test_cli_unwritable_run_dir_is_one_line_and_exit_2(tmp_path, tiny_glue):
    """Through the CLI Hydra writes its log and .hydra/ into the run dir before ``train``
    runs: the RunDirCheck callback must fail first, with the path."""
    bad = _unwritable(tmp_path)
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", WANDB_MODE="offline")
    proc = subprocess.run(
        [sys.executable, "-m", "litdistill.train", f"data.glue_dir={tiny_glue}", "logger=none",
         f"hydra.run.dir={bad}"], cwd=tmp_path, env=env, capture_output=True, text=True,
        timeout=240)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert proc.stderr.strip().splitlines() == [
        f"error: run dir (hydra.run.dir) {bad} is not writable (Not a directory)"]


# ------------------------------------------------------------ bad files, before weights
def test_latin1_tsv_names_file_and_line(make_cfg, tmp_path, no_weights):
    glue = _sst2(tmp_path / "glue", b"sentence\tlabel\ngood\t1\ncaf\xe9 noir\t0\n")
    with pytest.raises(ConfigError, match=r"dev\.tsv:3: bytes b'\\xe9' are not UTF-8"):
        train(make_cfg(f"data.glue_dir={glue}"))


def test_latin1_custom_csv_names_file_and_line(make_cfg, tmp_path, no_weights):
    overrides = _custom(tmp_path, "text,label\ngood,1\n")
    (tmp_path / "train.csv").write_bytes(b"text,label\ngood,1\nna\xefve,0\n")
    with pytest.raises(ConfigError, match=r"train\.csv:3: bytes b'\\xef' are not UTF-8"):
        train(make_cfg(*overrides))


@pytest.mark.parametrize("suffix,text", [(".csv", "text,label\n"), (".csv", "text,label\n\n"),
                                         (".jsonl", ""), (".jsonl", "\n"), (".json", "[]")])
def test_custom_file_without_rows_is_named(make_cfg, tmp_path, no_weights, suffix, text):
    with pytest.raises(ConfigError, match=rf"train{suffix}: no data rows"):
        train(make_cfg(*_custom(tmp_path, text, suffix)))


def test_regression_labels_must_be_finite(make_cfg, tmp_path, no_weights):
    overrides = _custom(tmp_path, "text,label\ngood,1.0\nbad,inf\n", regression=True)
    with pytest.raises(ConfigError, match=r"train\.csv: row 2: label inf is not a finite"):
        train(make_cfg(*overrides))
    overrides = _custom(tmp_path, '{"text": "good", "label": 1.0}\n{"text": "x", "label": NaN}\n',
                        ".jsonl", regression=True)
    with pytest.raises(ConfigError, match=r"train\.jsonl: row 2: label nan is not a finite"):
        train(make_cfg(*overrides))


def test_stsb_tsv_with_inf_label_is_refused(make_cfg, tmp_path, tiny_glue, no_weights):
    """The GLUE reader checks regression labels row by row as well."""
    glue = tmp_path / "glue" / "STS-B"
    glue.mkdir(parents=True)
    for name in ("train.tsv", "dev.tsv"):
        lines = (tiny_glue / "STS-B" / name).read_text().splitlines()
        if name == "dev.tsv":
            lines[2] = lines[2].rsplit("\t", 1)[0] + "\tinf"
        (glue / name).write_text("\n".join(lines) + "\n")
    with pytest.raises(ConfigError, match=r"dev\.tsv:3: label 'inf' is not a finite number"):
        train(make_cfg("task=stsb", f"data.glue_dir={glue.parent}"))


# ------------------------------------------------------------ checkpoints
def test_truncated_checkpoint_is_one_line_and_keeps_the_ok_result(make_cfg, tmp_path):
    """A finished run, then ``resume=true`` on a damaged ``last.ckpt``: a one-line error
    naming the file, before any weights load; the ok results.json stays, the failure is
    written beside it."""
    run = tmp_path / "run"
    results = train(make_cfg("teacher=tiny", "distill=kd", "logger=csv"))
    last = run / "checkpoints" / "last.ckpt"
    saved = torch.load(last, map_location="cpu", weights_only=True)  # tensors and lists only
    assert saved["global_step"] == results["global_step"] == 8  # written at the last epoch end
    assert {"RngState", "EpochTimer", "PhaseLog"} <= set(saved["callbacks"])
    assert saved["GlueDataModule"] == {"train_batches": 8}
    before = (run / "results.json").read_bytes()
    last.write_bytes(last.read_bytes()[:5000])
    with pytest.raises(ConfigError, match=rf"checkpoint {last} is unreadable"):
        train(make_cfg("teacher=tiny", "distill=kd", "resume=true", "trainer.max_epochs=2"))
    assert (run / "results.json").read_bytes() == before
    failed = _read(run, "results.failed.json")
    assert failed["status"] == "failed" and "unreadable" in failed["error"]
    assert len(str(failed["error"]).splitlines()) == 1


def test_checkpoint_with_pickled_objects_is_refused(make_cfg, tmp_path, no_weights):
    path = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {}, "loops": {}, "payload": Path("x")}, path)
    with pytest.raises(ConfigError, match=f"checkpoint {path} is unreadable"):
        train(make_cfg(f"resume={path}"))


def test_rng_states_survive_a_weights_only_round_trip(tmp_path):
    import random

    import numpy as np

    from litdistill.callbacks import rng_states, set_rng_states

    torch.save(rng_states(), tmp_path / "rng.pt")
    draws = (random.random(), float(np.random.rand()), float(torch.rand(1)))
    set_rng_states(torch.load(tmp_path / "rng.pt", weights_only=True))
    assert (random.random(), float(np.random.rand()), float(torch.rand(1))) == draws


def test_loader_resumes_at_its_position():
    from litdistill.batching import LoaderPosition, ResumableLoader

    position = LoaderPosition()
    loader = ResumableLoader(list(range(10)), batch_size=3, position=position)
    iterator = iter(loader)
    assert [next(iterator).tolist() for _ in range(2)] == [[0, 1, 2], [3, 4, 5]]
    assert loader.state_dict() == {"batches": 2}
    copy = ResumableLoader(list(range(10)), batch_size=3, position=LoaderPosition(skip=2))
    assert [b.tolist() for b in copy] == [[6, 7, 8], [9]]
    assert [b.tolist() for b in copy][0] == [0, 1, 2]  # the next pass starts at 0
    whole = ResumableLoader(list(range(10)), batch_size=3, position=LoaderPosition(skip=4))
    assert len(list(whole)) == 4  # a finished pass: the next epoch is a full one


def test_wandb_run_id_is_kept_for_resume(tmp_path):
    from litdistill.loggers import wandb_run_id

    first = wandb_run_id(str(tmp_path), resume=False)
    assert wandb_run_id(str(tmp_path), resume=True) == first
    assert wandb_run_id(str(tmp_path), resume=False) != first


# ------------------------------------------------------------ non-finite training
def test_watch_names_the_first_non_finite_term_and_step():
    from litdistill.finite import FiniteWatch

    watch = FiniteWatch("training")
    one = torch.tensor(1.0)
    watch.update({"loss": one, "loss_kd": one}, step=0)
    assert watch.failure() is None
    watch.update({"loss": torch.tensor(math.nan), "loss_kd": torch.tensor(math.inf)}, step=3)
    watch.update({"loss": torch.tensor(math.nan), "loss_kd": one}, step=4)
    assert watch.failure() == "training loss_kd non-finite (NaN/inf) at step 3"
    with pytest.raises(TrainingError, match="at step 3; the run stops"):
        watch.raise_if_failed()


def test_diverging_run_fails_without_exporting(make_cfg, tmp_path):
    """lr 1e30 sends the weights to inf after one AdamW step: the run ends failed at the
    first check, naming the terms and the step; no student, no NaN checkpoint."""
    with pytest.raises(TrainingError, match=r"training loss_task, loss_kd non-finite \(NaN/inf"
                                            r"\) at step 1"):
        train(make_cfg("teacher=tiny", "distill=kd", "optimizer.lr=1e30",
                       "trainer.gradient_clip_val=null", "scheduler=none"))
    run = tmp_path / "run"
    results = _read(run)
    assert results["status"] == "failed" and "TrainingError" in results["error"]
    assert not (run / "student").exists() and not list(run.glob("checkpoints/*.ckpt"))


def test_non_finite_validation_score_fails(make_cfg, tmp_path, monkeypatch):
    """A metric that is NaN with finite predictions (Pearson of a constant) is no score."""
    from litdistill import metrics

    real = metrics.compute
    monkeypatch.setattr(metrics, "compute", lambda task, c, **kw: {
        k: math.nan for k in real(task, c, **kw)})
    with pytest.raises(TrainingError, match="validation accuracy, score non-finite at step 8"):
        train(make_cfg())
    assert _read(tmp_path / "run")["status"] == "failed"
    assert not (tmp_path / "run" / "student").exists()


@pytest.mark.slow
def test_cli_diverging_run_is_one_line_and_nonzero(tmp_path, tiny_glue):
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", WANDB_MODE="offline")
    proc = subprocess.run(
        [sys.executable, "-m", "litdistill.train", f"data.glue_dir={tiny_glue}", "logger=none",
         "optimizer.lr=1e30", "trainer.gradient_clip_val=null", "scheduler=none",
         "trainer.max_epochs=1", f"hydra.run.dir={tmp_path / 'run'}",
         "++trainer.enable_progress_bar=false", "++callbacks.progress_bar=null"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 2
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("error: training loss_task non-finite (NaN/inf) at step 1")
    assert "Traceback" not in proc.stderr


# ------------------------------------------------------------ exact resume
def _digest(folder: Path) -> str:
    """sha256 over the exported student's tensors."""
    import hashlib

    from safetensors.torch import load_file

    weights = load_file(folder / "student" / "model.safetensors")
    digest = hashlib.sha256()
    for key in sorted(weights):
        digest.update(key.encode() + weights[key].numpy().tobytes())
    return digest.hexdigest()


@pytest.mark.slow
def test_killed_run_resumes_to_the_uninterrupted_result(tmp_path, tiny_glue):
    """SIGKILL a CLI run mid-epoch, ``resume=true`` it: same metrics, weights and CSV logs as
    the run never interrupted.

    2 epochs of 8 steps with dropout (random masks), ``last.ckpt`` every 3 steps and at each
    epoch end; the kill at step 11 leaves step 9's, mid-epoch 2, so the resume must put back
    the loader's position, the RNG states, optimizer and scheduler. On CPU the arithmetic is
    deterministic, so the comparison is exact.
    """
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", WANDB_MODE="offline",
               OMP_NUM_THREADS="1", PYTHONPATH=str(REPO / "tests"))
    args = ["teacher=tiny", "distill=kd", "trainer.max_epochs=2", "logger=csv",
            "trainer.log_every_n_steps=1", "callbacks.last_checkpoint.every_n_train_steps=3",
            "teacher_gate=null", "trainer.num_sanity_val_steps=0", "data.batch_size=8",
            f"data.glue_dir={tiny_glue}", f"paths.cache_dir={tmp_path / 'cache'}",
            "++trainer.enable_progress_bar=false", "++callbacks.progress_bar=null"]

    def start(run: Path, *extra: str) -> subprocess.Popen:
        return subprocess.Popen([sys.executable, "-m", "litdistill.train", *args, *extra,
                                 f"hydra.run.dir={run}"], cwd=tmp_path, env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)

    ref, run = tmp_path / "ref", tmp_path / "run"
    whole = start(ref)
    killed = start(run, "+callbacks.kill._target_=helpers.KillAtStep", "+callbacks.kill.step=11")
    assert killed.wait(timeout=300) == -9, killed.stderr.read()[-3000:]
    assert whole.wait(timeout=300) == 0, whole.stderr.read()[-3000:]
    assert torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 9
    resumed = start(run, "resume=true")
    assert resumed.wait(timeout=300) == 0, resumed.stderr.read()[-3000:]

    keys = ("status", "student", "global_step", "epochs", "phase_starts")
    expected, got = _read(ref), _read(run)
    assert {k: got[k] for k in keys} == {k: expected[k] for k in keys}
    assert Path(got["best_checkpoint"]).name == Path(expected["best_checkpoint"]).name
    assert len(got["epoch_seconds"]) == 2
    assert _digest(run) == _digest(ref)
    # Every logged value but wall-clock ones (throughput, epoch seconds) is the same.
    assert _untimed_log(run) == _untimed_log(ref)


def _untimed_log(run: Path) -> list[dict[str, str]]:
    """metrics.csv rows without the columns that measure time (they differ run to run)."""
    with open(run / "csv" / "metrics.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    timed = ("_per_sec", "_seconds")
    untimed = [{k: v for k, v in r.items() if not k.endswith(timed)} for r in rows]
    # A row that held only timings is left out with them.
    return [r for r in untimed if any(v for k, v in r.items() if k not in ("epoch", "step"))]
