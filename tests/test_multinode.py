"""Multi-node DDP, verified on one machine.

Two "nodes" run as two ``litdistill.train`` processes on localhost (one CPU rank each, gloo),
started with the environment a cluster launcher gives each node; their run must match the
single-process run. What Lightning 2.6 reads (``lightning.fabric.plugins.environments``):

- ``LightningEnvironment`` (no cluster manager, e.g. a script started on each machine):
  ``MASTER_ADDR``, ``MASTER_PORT``, ``NODE_RANK`` (else ``GROUP_RANK``), ``LOCAL_RANK``; the
  world size is ``num_nodes * devices`` from the Trainer, and without ``LOCAL_RANK`` each node
  starts its own ``devices - 1`` extra processes.
- ``TorchElasticEnvironment`` (torchrun, detected by ``TORCHELASTIC_RUN_ID``): ``RANK``,
  ``LOCAL_RANK``, ``GROUP_RANK`` (the node), ``WORLD_SIZE``, ``MASTER_ADDR``/``MASTER_PORT``;
  it checks ``devices * num_nodes == WORLD_SIZE``.
- ``SLURMEnvironment`` (an ``srun`` task): ``SLURM_NTASKS`` (world size), ``SLURM_PROCID``,
  ``SLURM_LOCALID``, ``SLURM_NODEID``, ``SLURM_NODELIST``; it checks ``SLURM_NTASKS_PER_NODE ==
  devices`` and ``SLURM_NNODES == num_nodes``. No SLURM here: the test checks the sbatch script
  submitit writes, and the Trainer built inside the environment that script's tasks get.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import lightning as L
import pytest
from lightning.fabric.plugins.environments import SLURMEnvironment
from lightning.pytorch.utilities.rank_zero import rank_zero_only as pl_rank_zero_only
from lightning_utilities.core.rank_zero import rank_zero_only as utils_rank_zero_only

from test_slow import (
    _SGD,
    CLI_BASE,
    _env,
    _read,
    _stsb_overrides,
    assert_same_training,
    dropout_free_models,  # noqa: F401  (a fixture)
)
from test_sweeps import _compose, _sbatch_script


# ------------------------------------------------------------------ SLURM (fast)
def _sbatch_options(script: str) -> dict[str, str]:
    return dict(line.removeprefix("#SBATCH --").split("=", 1) for line in script.splitlines()
                if line.startswith("#SBATCH --") and "=" in line)


def test_two_node_sbatch_matches_what_lightning_reads(tmp_path, monkeypatch):
    """``hydra/launcher=slurm hardware=ddp hydra.launcher.nodes=2``: 2 nodes x 1 task x 1 GPU.

    Each of the 2 tasks ``srun`` starts gets the SLURM variables below (from the script's
    ``--nodes`` and ``--ntasks-per-node``). The job's config must then resolve to a Trainer
    of 2 nodes, which Lightning's ``SLURMEnvironment`` accepts and ranks as SLURM says:
    without ``trainer.num_nodes`` following the allocation, Lightning stops (checked last).
    ``devices=-1`` is every GPU a task sees, i.e. ``--gpus-per-node``; with no GPU here the
    Trainer is built on the CPU with that many devices.
    """
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher",
                        reason="the slurm extra is not installed: pip install -e '.[slurm]'")
    overrides = ["hydra.launcher.partition=gpu", "hardware=ddp", "hydra.launcher.nodes=2"]
    options = _sbatch_options(_sbatch_script(tmp_path, monkeypatch, *overrides))
    nodes, per_node = int(options["nodes"]), int(options["ntasks-per-node"])
    assert (nodes, per_node, int(options["gpus-per-node"])) == (2, 1, 1), options

    rank = 1  # the task on the second node
    monkeypatch.setenv("SLURM_JOB_NAME", "litdistill")  # not "bash": a batch job's task
    slurm = {"SLURM_NNODES": nodes, "SLURM_NTASKS": nodes * per_node,
             "SLURM_NTASKS_PER_NODE": per_node, "SLURM_PROCID": rank, "SLURM_LOCALID": 0,
             "SLURM_NODEID": rank, "SLURM_NODELIST": "gpu[01-02]", "SLURM_JOB_ID": 123}
    for key, value in slurm.items():
        monkeypatch.setenv(key, str(value))
    job = _compose("hydra/launcher=slurm", *overrides)
    assert (job.trainer.strategy, job.trainer.devices, job.trainer.num_nodes) == ("ddp", -1, 2)

    # The Trainer makes this process global rank 1 for Lightning's rank_zero_only, which
    # would silence every logger of the tests after this one: restored at the end.
    for rank_zero_only in {pl_rank_zero_only, utils_rank_zero_only}:
        monkeypatch.setattr(rank_zero_only, "rank", rank_zero_only.rank)
    trainer = L.Trainer(accelerator="cpu", devices=int(options["gpus-per-node"]),
                        num_nodes=job.trainer.num_nodes, strategy=job.trainer.strategy,
                        logger=False, enable_checkpointing=False, enable_progress_bar=False)
    assert isinstance(trainer.strategy.cluster_environment, SLURMEnvironment)
    assert (trainer.world_size, trainer.node_rank, trainer.global_rank, trainer.local_rank) == \
        (2, 1, 1, 0)
    with pytest.raises(ValueError, match="num_nodes"):
        SLURMEnvironment().validate_settings(num_devices=1, num_nodes=1)


# ------------------------------------------------------------------ 2 nodes on localhost (slow)
def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _node_env(style: str, node: int, port: int) -> dict[str, str]:
    """What a launcher sets on node ``node`` of 2 (one process per node)."""
    env = _env()
    for key in ("GROUP_RANK", "LOCAL_WORLD_SIZE", "TORCHELASTIC_RUN_ID"):
        env.pop(key, None)
    env.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE="2")
    if style == "lightning":  # a script started on each machine by hand or a scheduler
        env.update(NODE_RANK=str(node))
    else:  # torchrun --nnodes=2 --nproc-per-node=1 --node-rank=<node>
        env.update(RANK=str(node), LOCAL_RANK="0", GROUP_RANK=str(node),
                   LOCAL_WORLD_SIZE="1", TORCHELASTIC_RUN_ID="litdistill-test")
    return env


def _start(args: list[str], cwd: Path, env: dict[str, str]) -> subprocess.Popen:
    cwd.mkdir(parents=True, exist_ok=True)
    with (cwd / "cli.log").open("w") as log:
        return subprocess.Popen([sys.executable, "-m", "litdistill.train", *args], cwd=cwd,
                                env=env, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)


def _wait(procs: dict[Path, subprocess.Popen], timeout: float = 600) -> None:
    """Wait for every process; kill the rest and fail when one fails or hangs."""
    deadline = time.monotonic() + timeout
    try:
        for cwd, proc in procs.items():
            code = proc.wait(timeout=max(1.0, deadline - time.monotonic()))
            if code != 0:
                pytest.fail(f"{cwd.name} exited with {code}:\n"
                            f"{(cwd / 'cli.log').read_text()[-4000:]}")
    except subprocess.TimeoutExpired:
        pytest.fail(f"the runs did not finish within {timeout} s")
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                os.killpg(proc.pid, 9)
                proc.wait()


@pytest.mark.slow
@pytest.mark.parametrize("style", ["lightning", "torchelastic"])
def test_two_nodes_on_localhost_match_one_process(style, tmp_path, tiny_glue,
                                                  dropout_free_models):  # noqa: F811
    """``trainer.num_nodes=2``, one CPU rank per node, trains as one process does.

    The set-up of ``test_slow.py::test_ddp_full_batch_sgd_matches_one_process``: plain SGD,
    dropout-free models, each step on the whole 64-row training set (one batch of 64 in one
    process, one batch of 32 per node). DDP averages the two nodes' gradients of their 32-row
    halves, which is the 64-row mean gradient, so the weights agree up to float32 summation
    order (< 1e-5 after 3 steps). The teacher's dev metrics come from the same logits
    (1e-6); the student's score is compared loosely (1e-2: Spearman can swap near-ties).
    The nodes share no files (each its own run dir and cache), as separate machines.
    """
    common = [*CLI_BASE, f"data.glue_dir={tiny_glue}", *_stsb_overrides(dropout_free_models),
              "data.max_eval_samples=32", *_SGD]
    port = _free_port()
    procs = {tmp_path / "single": _start(
        [*common, "hardware=cpu", "data.batch_size=64", f"paths.cache_dir={tmp_path / 'c0'}",
         f"hydra.run.dir={tmp_path / 'single' / 'run'}"], tmp_path / "single", _env())}
    for node in (0, 1):
        cwd = tmp_path / f"node{node}"
        procs[cwd] = _start(
            [*common, "hardware=ddp_cpu", "trainer.devices=1", "trainer.num_nodes=2",
             "data.batch_size=32", f"paths.cache_dir={tmp_path / f'c{node + 1}'}",
             f"hydra.run.dir={cwd / 'run'}"], cwd, _node_env(style, node, port))
    _wait(procs)

    single, ddp = _read(tmp_path / "single" / "run"), _read(tmp_path / "node0" / "run")
    assert single["status"] == ddp["status"] == "ok", (single["error"], ddp["error"])
    assert single["global_step"] == ddp["global_step"] == 3
    # Node 1 knew it was global rank 1: only rank zero records and exports.
    assert not (tmp_path / "node1" / "run" / "results.json").exists()
    assert not (tmp_path / "node1" / "run" / "student").exists()

    assert_same_training(dropout_free_models["student"], tmp_path / "single" / "run",
                         tmp_path / "node0" / "run", "2-node")
