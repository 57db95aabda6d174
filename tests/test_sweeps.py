"""Sweeps: the shipped launcher and search configs, failure isolation and ``skip_done``.

The configs are composed in-process (fast); the sweeps themselves run through the
``litdistill.train`` CLI in subprocesses (``slow``), on tiny models and tiny GLUE data. The
SLURM and Optuna parts need the ``slurm`` / ``optuna`` extras and are skipped without them.
Lightning ``ddp`` inside a basic/joblib multirun is refused: see
``test_train.py::test_ddp_inside_multirun_is_refused``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import yaml
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from conftest import write_tiny_glue
from litdistill.conf import compose
from test_slow import CLI_BASE, _env

# One epoch of two batches of 8 rows, validated on 16 rows: seconds per job.
TINY = ["trainer.max_epochs=1", "data.batch_size=8", "data.max_train_samples=16",
        "data.max_eval_samples=16"]


def _compose(*overrides: str) -> DictConfig:
    """``conf/train.yaml`` with its ``hydra`` node, as a ``--multirun`` would see it."""
    return compose(overrides, return_hydra_config=True)


def _multirun(args: list[str], cwd: Path, timeout: float = 400) -> subprocess.CompletedProcess:
    """Run ``python -m litdistill.train --multirun ARGS`` in ``cwd``; output in ``cwd/cli.log``."""
    cwd.mkdir(parents=True, exist_ok=True)
    env = _env()
    env.pop("LITDISTILL_JOBS", None)  # the configs' own default
    with (cwd / "cli.log").open("w") as log:
        return subprocess.run([sys.executable, "-m", "litdistill.train", "--multirun",
                               *CLI_BASE, *args], cwd=cwd, env=env, stdout=log,
                              stderr=subprocess.STDOUT, timeout=timeout)


def _check_exit(proc: subprocess.CompletedProcess, cwd: Path) -> None:
    if proc.returncode != 0:
        tail = (cwd / "cli.log").read_text()[-4000:]
        pytest.fail(f"the sweep exited with {proc.returncode}:\n{tail}")


def _results(sweep: Path) -> dict[int, dict[str, Any]]:
    return {int(p.parent.name): json.loads(p.read_text())
            for p in sweep.glob("*/results.json")}


def _snapshot(sweep: Path) -> dict[str, bytes]:
    """Every results.json and exported model of a sweep, byte for byte."""
    files = [*sweep.glob("*/results.json"), *sweep.glob("*/student/model.safetensors")]
    return {p.relative_to(sweep).as_posix(): p.read_bytes() for p in files}


# ------------------------------------------------------------------ configs (fast)
def test_parallel_launcher_extends_the_joblib_plugin(monkeypatch):
    """``hydra/launcher=parallel`` is the joblib plugin's config with our defaults.

    Named so that it does not shadow the plugin's own ``joblib`` config: that would trigger
    Hydra's deprecated automatic schema matching, and its warning, on every run.
    """
    monkeypatch.delenv("LITDISTILL_JOBS", raising=False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        launcher = _compose("hydra/launcher=parallel").hydra.launcher
    assert not [w for w in caught if "schema" in str(w.message)]
    assert launcher._target_.endswith("JoblibLauncher")
    assert (launcher.n_jobs, launcher.backend) == (2, "loky")
    monkeypatch.setenv("LITDISTILL_JOBS", "3")
    assert _compose("hydra/launcher=parallel").hydra.launcher.n_jobs == 3
    # The plugin's config itself stays reachable under its own name.
    assert _compose("hydra/launcher=joblib").hydra.launcher.n_jobs == -1


class _Submitted(Exception):
    """Raised instead of submitting: the test reads the sbatch script and stops there."""


def _sbatch_script(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, *overrides: str) -> str:
    """The sbatch script ``hydra/launcher=slurm`` would submit for one job of ``overrides``.

    The plugin's own ``launch`` builds the executor; only the submission is intercepted, and
    ``srun``/``sbatch`` are stand-ins (submitit checks that ``srun`` exists).
    """
    import submitit

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    for tool in ("srun", "sbatch"):
        (bin_dir / tool).write_text("#!/bin/sh\nexit 1\n")
        (bin_dir / tool).chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    cfg = _compose("hydra/launcher=slurm", *overrides, f"hydra.sweep.dir={tmp_path / 'sweep'}")
    scripts = []

    def capture(executor, fn, *iterables):
        scripts.append(executor._executor._make_submission_file_text("COMMAND", "UID"))
        raise _Submitted

    monkeypatch.setattr(submitit.AutoExecutor, "map_array", capture)
    launcher = instantiate(cfg.hydra.launcher)
    launcher.setup(hydra_context=None, task_function=None, config=cfg)
    with pytest.raises(_Submitted):
        launcher.launch([["seed=1"]], initial_job_idx=0)
    return scripts[0]


def test_slurm_launcher_submits_one_task_per_gpu(tmp_path, monkeypatch):
    """The sbatch script of ``hydra/launcher=slurm`` with 4 GPUs per job for ``hardware=ddp``.

    Lightning's SLURM environment takes one process per GPU from SLURM, so
    ``--ntasks-per-node`` must follow ``gpus_per_node``.
    """
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher",
                        reason="the slurm extra is not installed: pip install -e '.[slurm]'")
    overrides = ("hydra.launcher.partition=gpu", "hydra.launcher.gpus_per_node=4",
                 "hardware=ddp")
    cfg = _compose("hydra/launcher=slurm", *overrides)
    params = OmegaConf.to_container(cfg.hydra.launcher, resolve=True)
    assert params["_target_"].endswith("SlurmLauncher")
    assert (params["gpus_per_node"], params["tasks_per_node"], params["nodes"]) == (4, 4, 1)
    assert (cfg.trainer.strategy, cfg.trainer.devices) == ("ddp", -1)
    script = _sbatch_script(tmp_path, monkeypatch, *overrides)
    lines = set(script.splitlines())
    for option in ("--partition=gpu", "--gpus-per-node=4", "--ntasks-per-node=4",
                   "--nodes=1", "--cpus-per-task=8", "--mem=64GB", "--time=240"):
        assert f"#SBATCH {option}" in lines, script


def test_optuna_search_space():
    """``hparams_search=optuna``: TPE, maximize, and the three distributions it searches."""
    pytest.importorskip("hydra_plugins.hydra_optuna_sweeper",
                        reason="the optuna extra is not installed: pip install -e '.[optuna]'")
    from hydra_plugins.hydra_optuna_sweeper._impl import create_params_from_overrides
    from optuna.distributions import LogUniformDistribution, UniformDistribution

    sweeper = _compose("hparams_search=optuna").hydra.sweeper
    assert sweeper._target_.endswith("OptunaSweeper")
    assert sweeper.direction == "maximize" and sweeper.n_trials == 20
    assert sweeper.sampler._target_ == "optuna.samplers.TPESampler"
    assert sweeper.sampler.seed == 42
    space, fixed = create_params_from_overrides([f"{k}={v}" for k, v in sweeper.params.items()])
    assert fixed == {}
    assert space == {"distill.temperature": UniformDistribution(1.0, 8.0),
                     "distill.alpha_kd": UniformDistribution(0.1, 0.9),
                     "optimizer.lr": LogUniformDistribution(1e-5, 1e-3)}


# ------------------------------------------------------------------ sweeps (slow)
@pytest.fixture(scope="module")
def parallel_sweep(tmp_path_factory: pytest.TempPathFactory, tiny_glue: Path) -> SimpleNamespace:
    """A 3-job ``hydra/launcher=parallel`` sweep over ``data.glue_dir``, run once.

    Jobs 0 and 1 read two tiny GLUE folders; job 2 reads ``later/``, which does not exist
    yet, so it passes config composition and fails inside ``train()``. The rerun fixture
    below creates it. Returns the sweep's folder, exit code, and results as first written.
    """
    root = tmp_path_factory.mktemp("parallel")
    second = write_tiny_glue(root / "glue2", seed=1)
    later = root / "later"
    args = ["hydra/launcher=parallel", f"hydra.sweep.dir={root / 'sweep'}",
            f"paths.cache_dir={root / 'cache'}", *TINY,
            f"data.glue_dir={tiny_glue},{second},{later}"]
    proc = _multirun(args, root)
    sweep = root / "sweep"
    return SimpleNamespace(root=root, args=args, later=later, sweep=sweep, proc=proc,
                           results=_results(sweep), files=_snapshot(sweep))


@pytest.mark.slow
def test_parallel_sweep_runs_jobs_side_by_side(parallel_sweep):
    """The joblib jobs finish ok, each in its own run dir, under the launcher configured."""
    _check_exit(parallel_sweep.proc, parallel_sweep.root)
    sweep, results = parallel_sweep.sweep, parallel_sweep.results
    assert sorted(results) == [0, 1, 2]
    for job in (0, 1):
        assert results[job]["status"] == "ok" and results[job]["error"] is None, results[job]
        assert results[job]["run_dir"] == str(sweep / str(job))
        assert results[job]["global_step"] == 2  # 16 rows, batches of 8
        assert 0.0 <= results[job]["student"]["score"] <= 1.0
        assert (sweep / str(job) / "student" / "model.safetensors").is_file()
    launcher = OmegaConf.load(sweep / "multirun.yaml").hydra.launcher
    assert launcher._target_.endswith("JoblibLauncher")
    assert (launcher.n_jobs, launcher.backend) == (2, "loky")


@pytest.mark.slow
def test_failed_job_is_recorded_and_the_sweep_goes_on(parallel_sweep):
    """A job that raises in ``train()`` says so in its results.json; the others and the
    sweep itself finish normally (exit code 0)."""
    assert parallel_sweep.proc.returncode == 0
    failed = parallel_sweep.results[2]
    assert failed["status"] == "failed" and failed["student"] is None
    assert failed["error"].startswith("ConfigError: missing data file")
    assert str(parallel_sweep.later) in failed["error"]
    assert [parallel_sweep.results[job]["status"] for job in (0, 1)] == ["ok", "ok"]


@pytest.fixture(scope="module")
def parallel_rerun(parallel_sweep: SimpleNamespace, tiny_glue: Path) -> SimpleNamespace:
    """The same sweep command into the same sweep dir, once job 2's data exists."""
    write_tiny_glue(parallel_sweep.later, seed=2)
    cwd = parallel_sweep.root / "rerun"
    proc = _multirun(parallel_sweep.args, cwd)
    return SimpleNamespace(cwd=cwd, proc=proc, results=_results(parallel_sweep.sweep),
                           files=_snapshot(parallel_sweep.sweep))


@pytest.mark.slow
def test_rerun_skips_finished_jobs_and_retries_failed_ones(parallel_sweep, parallel_rerun):
    """``skip_done``: rerunning a sweep completes it without redoing what finished ok.

    Jobs 0 and 1 return their stored results: their results.json and exported students are
    the very bytes of the first sweep (a rerun would rewrite both, with new timings). Job 2,
    whose first attempt failed, runs again with the same config and now finishes ok.
    """
    _check_exit(parallel_rerun.proc, parallel_rerun.cwd)
    first, again = parallel_sweep.files, parallel_rerun.files
    for job in (0, 1):
        for name in (f"{job}/results.json", f"{job}/student/model.safetensors"):
            assert again[name] == first[name], f"{name} was rewritten"
    retried = parallel_rerun.results[2]
    assert retried["status"] == "ok" and retried["error"] is None
    assert retried["config_sha"] == parallel_sweep.results[2]["config_sha"]
    assert "2/student/model.safetensors" in again and "2/student/model.safetensors" not in first


@pytest.mark.slow
def test_optuna_sweep_maximizes_the_student_score(tmp_path, tiny_glue):
    """Two TPE trials of KD between tiny models; the study is stored in SQLite."""
    pytest.importorskip("hydra_plugins.hydra_optuna_sweeper",
                        reason="the optuna extra is not installed: pip install -e '.[optuna]'")
    import optuna

    sweep, db = tmp_path / "sweep", tmp_path / "optuna.db"
    proc = _multirun(["hparams_search=optuna", "hydra.sweeper.n_trials=2",
                      f"hydra.sweeper.storage=sqlite:///{db}", "hydra.sweeper.study_name=tiny",
                      "teacher=tiny", "distill=kd", f"data.glue_dir={tiny_glue}",
                      f"paths.cache_dir={tmp_path / 'cache'}", f"hydra.sweep.dir={sweep}",
                      *TINY], tmp_path)
    _check_exit(proc, tmp_path)
    results = _results(sweep)
    assert sorted(results) == [0, 1]
    assert all(r["status"] == "ok" for r in results.values()), results
    best = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    assert set(best["best_params"]) == {"distill.temperature", "distill.alpha_kd",
                                        "optimizer.lr"}
    assert best["best_value"] == max(r["student"]["score"] for r in results.values())
    for r in results.values():  # each trial ran with the values Optuna proposed
        assert any(o.startswith("distill.temperature=") for o in r["overrides"])
    study = optuna.load_study(study_name="tiny", storage=f"sqlite:///{db}")
    assert [t.state.name for t in study.trials] == ["COMPLETE", "COMPLETE"]
    assert study.direction.name == "MAXIMIZE"


@pytest.mark.slow
def test_submitit_local_sweep_runs_a_job(tmp_path, tiny_glue):
    """``hydra/launcher=slurm_local``: the submitit path of the SLURM launcher, one local job."""
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher",
                        reason="the slurm extra is not installed: pip install -e '.[slurm]'")
    sweep = tmp_path / "sweep"
    proc = _multirun(["hydra/launcher=slurm_local", f"data.glue_dir={tiny_glue}",
                      f"paths.cache_dir={tmp_path / 'cache'}", f"hydra.sweep.dir={sweep}",
                      *TINY, "seed=3"], tmp_path)
    _check_exit(proc, tmp_path)
    results = _results(sweep)
    assert list(results) == [0] and results[0]["status"] == "ok", results
    assert results[0]["seed"] == 3
    assert list((sweep / ".submitit").glob("*/*_0_log.out"))  # it ran as a submitit job
