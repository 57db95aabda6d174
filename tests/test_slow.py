"""Slow integration tests: multirun sweeps, DDP on CPU, resuming, and the real GLUE files.

Every test here is marked ``slow`` (``make test-slow``). Runs that need a fresh interpreter
(``--multirun``, and ``strategy=ddp`` whose second rank re-runs ``sys.argv``) go through the
``litdistill.train`` CLI in subprocesses; the rest call :func:`litdistill.train.train`
in-process with configs from the ``make_cfg`` fixture.

Each subprocess spends about 10 s importing torch and Lightning, and a DDP run's second rank
starts importing only once the first rank has, so running the subprocesses one after another
leaves the CPUs idle much of the time. The module therefore starts the CLI runs of all
selected tests up front (:class:`_Background`, a few at a time), runs the in-process tests
meanwhile, and each subprocess test then waits for its own runs and checks their output.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import lightning as L
import pytest
import torch
from omegaconf import open_dict
from safetensors.torch import load_file

from litdistill.reader import read_splits
from litdistill.tasks import get_task
from litdistill.train import train

REAL_GLUE = Path(__file__).resolve().parents[2] / "shared" / "data" / "glue"

# Keep subprocess runs quiet and free of progress bars; ``++`` adds or overrides a key.
CLI_BASE = [
    "logger=none",
    "teacher_gate=null",
    "trainer.enable_model_summary=false",
    "trainer.num_sanity_val_steps=0",
    "++trainer.enable_progress_bar=false",
    "++callbacks.progress_bar=null",
]


# ----------------------------------------------------------------------------- helpers
def _env() -> dict[str, str]:
    """The parent's environment, offline, with one intra-op thread per process.

    The tiny models gain nothing from several threads, and several processes share two
    cores here; oversubscribed OpenMP threads make every step several times slower.
    """
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1",
               TRANSFORMERS_OFFLINE="1", WANDB_MODE="offline", TOKENIZERS_PARALLELISM="false",
               OMP_NUM_THREADS="1")
    # Each DDP run must pick its own free port, not inherit one.
    for key in ("MASTER_ADDR", "MASTER_PORT", "WORLD_SIZE", "RANK", "LOCAL_RANK", "NODE_RANK"):
        env.pop(key, None)
    return env


def _launch(args: list[str], cwd: Path) -> subprocess.Popen:
    """Start ``python -m litdistill.train ARGS`` in its own process group, without waiting.

    Args:
        args: Command-line arguments (Hydra overrides and flags).
        cwd: Working directory of the child; its combined output goes to ``cwd/cli.log``.

    Returns:
        The running process.
    """
    cwd.mkdir(parents=True, exist_ok=True)
    with (cwd / "cli.log").open("w") as log:
        return subprocess.Popen([sys.executable, "-m", "litdistill.train", *args], cwd=cwd,
                                env=_env(), stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)


def _read(run_dir: Path) -> dict[str, Any]:
    return json.loads((run_dir / "results.json").read_text())


class _Background:
    """CLI runs started together and awaited one by one, at most ``max_running`` at once.

    Args:
        jobs: ``name -> (CLI arguments, working directory)``, in start order.
        max_running: Runs (process groups) alive at the same time; a DDP run is two
            processes, a joblib multirun three.
    """

    def __init__(self, jobs: dict[str, tuple[list[str], Path]], max_running: int = 3) -> None:
        self.cwd = {name: cwd for name, (_, cwd) in jobs.items()}
        self._pending = list(jobs.items())
        self._running: dict[str, subprocess.Popen] = {}
        self._codes: dict[str, int] = {}
        self._max_running = max_running
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._schedule, name="cli-runs", daemon=True)
        self._thread.start()

    def _schedule(self) -> None:
        while not self._stop.is_set():
            with self._lock:
                for name, proc in list(self._running.items()):
                    if proc.poll() is not None:
                        self._codes[name] = proc.returncode
                        del self._running[name]
                while self._pending and len(self._running) < self._max_running:
                    name, (args, cwd) = self._pending.pop(0)
                    self._running[name] = _launch(args, cwd)
                if not self._pending and not self._running:
                    return
            self._stop.wait(0.2)

    def wait(self, name: str, timeout: float = 600) -> Path:
        """Block until run ``name`` ends; fail the test (not xfail) unless it exited 0.

        Returns:
            The run's working directory.
        """
        if name not in self.cwd:
            pytest.fail(f"no background run {name!r}: add it to _JOBS for this test")
        deadline = time.monotonic() + timeout
        while (code := self._codes.get(name)) is None:
            if time.monotonic() > deadline:
                pytest.fail(f"background run {name!r} still running after {timeout} s")
            time.sleep(0.2)
        if code != 0:
            tail = (self.cwd[name] / "cli.log").read_text()[-4000:]
            pytest.fail(f"litdistill.train run {name!r} exited with {code}:\n{tail}")
        return self.cwd[name]

    def close(self) -> None:
        """Stop starting runs and kill the process groups of those still running."""
        self._stop.set()
        self._thread.join()
        for proc in self._running.values():
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait()


def _stsb_overrides(models: dict[str, Path]) -> list[str]:
    """STS-B distillation between the :func:`dropout_free_models`, evaluated in batches of 8."""
    return ["task=stsb", "distill=kd", "seed=7", "data.eval_batch_size=8",
            "teacher=pretrained", f"teacher.name_or_path={models['teacher']}",
            "student=pretrained", f"student.name_or_path={models['student']}"]


# Subprocess runs: name -> (the test that checks it, CLI arguments but the shared ones).
_SGD = ["optimizer._target_=torch.optim.SGD", "~optimizer.betas", "~optimizer.eps",
        "optimizer.lr=0.1", "scheduler=none", "trainer.max_epochs=3",
        "callbacks.model_checkpoint.monitor=null"]  # export the last epoch's student
_MULTIRUN = ["teacher=tiny", "student=tiny", "distill=kd", "student.hidden=32,48",
             "trainer.max_epochs=1", "data.batch_size=8", "data.max_train_samples=16",
             "data.max_eval_samples=16"]
_LR0 = ["optimizer.lr=0", "trainer.max_epochs=1", "data.batch_size=8"]
_JOBS: dict[str, tuple[str, list[str]]] = {
    "lr0-ddp": ("test_ddp_two_cpu_ranks_report_the_same_metrics_as_one_process",
                ["hardware=ddp_cpu", "data.max_eval_samples=32", *_LR0]),
    "lr0-single": ("test_ddp_two_cpu_ranks_report_the_same_metrics_as_one_process",
                   ["hardware=cpu", "data.max_eval_samples=32", *_LR0]),
    "sgd-ddp": ("test_ddp_full_batch_sgd_matches_one_process",
                ["hardware=ddp_cpu", "data.max_eval_samples=32", "data.batch_size=32", *_SGD]),
    "sgd-single": ("test_ddp_full_batch_sgd_matches_one_process",
                   ["hardware=cpu", "data.max_eval_samples=32", "data.batch_size=64", *_SGD]),
    "uneven-ddp": ("test_ddp_scores_an_uneven_eval_set_once_per_row",
                   ["hardware=ddp_cpu", "data.max_eval_samples=31", *_LR0]),
    "uneven-single": ("test_ddp_scores_an_uneven_eval_set_once_per_row",
                      ["hardware=cpu", "data.max_eval_samples=31", *_LR0]),
    "multirun-basic": ("test_multirun_sweeps_two_students[basic]", _MULTIRUN),
    "multirun-joblib": ("test_multirun_sweeps_two_students[joblib]",
                        [*_MULTIRUN, "hydra/launcher=joblib", "hydra.launcher.n_jobs=2"]),
}


# ----------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module", autouse=True)
def _one_torch_thread():
    """In-process runs use one intra-op thread too: they share the CPUs with the CLI runs."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def dropout_free_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Two tiny STS-B regression BERTs saved with ``save_pretrained``: teacher and student.

    Unlike ``teacher=tiny``/``student=tiny`` they have no dropout (so a DDP rank and a single
    process draw no different random masks) and a wider initialisation (0.2 instead of 0.02):
    with the default one all predictions lie within about 1e-5 of each other, which turns
    Pearson into float32 rounding noise and Spearman into a ranking of near-ties.
    """
    from transformers import BertConfig, BertForSequenceClassification

    from litdistill.models import char_tokenizer

    tokenizer = char_tokenizer()
    folders = {}
    for role, seed in (("teacher", 1), ("student", 0)):
        torch.manual_seed(seed)
        config = BertConfig(
            vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id, hidden_size=32,
            num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
            hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, initializer_range=0.2,
            num_labels=1, problem_type="regression")
        folder = tmp_path_factory.mktemp(role)
        BertForSequenceClassification(config).save_pretrained(folder)
        tokenizer.save_pretrained(folder)
        folders[role] = folder
    return folders


@pytest.fixture(scope="module", autouse=True)
def background(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory,
               tiny_glue: Path, dropout_free_models: dict[str, Path]):
    """Start the CLI runs of the selected tests of this module; kill leftovers at the end.

    All runs share one tokenized-data cache, as runs on one machine do, so concurrent
    writers of the same cache entry are exercised too.
    """
    selected = {item.name for item in request.session.items
                if getattr(item, "module", None) is request.module}
    root = tmp_path_factory.mktemp("cli")
    jobs = {}
    for name, (test, args) in _JOBS.items():
        if test not in selected:
            continue
        cwd = root / name
        common = [*CLI_BASE, f"data.glue_dir={tiny_glue}", f"paths.cache_dir={root / 'cache'}"]
        if name.startswith("multirun"):  # flags go before the overrides
            common = ["--multirun", *common, f"hydra.sweep.dir={cwd / 'sweep'}"]
        else:
            common += [*_stsb_overrides(dropout_free_models), f"hydra.run.dir={cwd / 'run'}"]
        jobs[name] = ([*common, *args], cwd)
    runs = _Background(jobs)
    yield runs
    runs.close()


# ----------------------------------------------------------------------------- resume
class StepRecorder(L.Callback):
    """Record where training starts and which rows each step trains on, into a JSON file.

    Injected through the config (``_target_``), so the test reads the file, not the object.

    Args:
        path: Where to write ``{"start_step", "start_epoch", "steps", "batches"}``; the
            batches are the ``idx`` (row ids) of each training batch.
    """

    def __init__(self, path: str) -> None:
        self.path = Path(path)
        self.record: dict[str, Any] = {"start_step": None, "start_epoch": None, "steps": [],
                                       "batches": []}

    def _dump(self) -> None:
        self.path.write_text(json.dumps(self.record))

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.record.update(start_step=trainer.global_step, start_epoch=trainer.current_epoch)
        self._dump()

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule,
                             batch: Any, batch_idx: int) -> None:
        self.record["steps"].append(trainer.global_step)
        self.record["batches"].append(batch["idx"].tolist())
        self._dump()


def _with_callbacks(cfg, **extra: dict[str, Any]):
    """Add callback configs (``name={_target_: ..., ...}``) to a composed config."""
    with open_dict(cfg):
        for name, node in extra.items():
            cfg.callbacks[name] = node
    return cfg


def _recorder(path: Path) -> dict[str, Any]:
    return {"_target_": f"{StepRecorder.__module__}.StepRecorder", "path": str(path)}


@pytest.mark.slow
def test_resume_continues_an_interrupted_run_from_last_ckpt(make_cfg, tmp_path):
    """A run that crashes in epoch 2 resumes from epoch 1's ``last.ckpt`` with ``resume=true``.

    ``tiny_glue`` has 64 training rows, so batches of 8 make 8 steps per epoch; the crash
    fires at step 12, after epoch 1 (steps 0-7) wrote ``last.ckpt``. The resumed run must
    start at step 8 / epoch index 1, run only steps 8-15, and finish at step 16.
    """
    run_dir = tmp_path / "run"
    overrides = ("teacher=tiny", "distill=kd", "trainer.max_epochs=2")
    crashing = _with_callbacks(
        make_cfg(*overrides, run_dir=run_dir),
        crash={"_target_": "helpers.CrashAfterSteps", "steps": 12},
        recorder=_recorder(tmp_path / "first.json"))
    with pytest.raises(RuntimeError, match="simulated crash at step 12"):
        train(crashing)
    failed = _read(run_dir)
    assert failed["status"] == "failed" and failed["error"].startswith("RuntimeError")
    first = json.loads((tmp_path / "first.json").read_text())
    assert first["steps"] == list(range(12))
    last = run_dir / "checkpoints" / "last.ckpt"
    saved = torch.load(last, map_location="cpu", weights_only=False)
    assert (saved["global_step"], saved["epoch"]) == (8, 0)

    resumed = _with_callbacks(make_cfg(*overrides, "resume=true", run_dir=run_dir),
                              recorder=_recorder(tmp_path / "second.json"))
    results = train(resumed)
    assert results["status"] == "ok" and _read(run_dir)["status"] == "ok"
    assert results["global_step"] == 16 and results["epochs"] == 2
    second = json.loads((tmp_path / "second.json").read_text())
    assert (second["start_step"], second["start_epoch"]) == (8, 1)
    assert second["steps"] == list(range(8, 16))
    assert Path(results["best_checkpoint"]).is_file()
    assert torch.load(last, map_location="cpu", weights_only=False)["global_step"] == 16
    # Epoch 1 and the first 4 batches of epoch 2 ran before the crash: a faithful resume
    # trains epoch 2 on the rows the interrupted run was using, which differ from epoch 1's.
    assert first["batches"][8:12] != first["batches"][:4]
    # The sampler's order depends on (seed, epoch) only, so the resumed epoch 2 sees the
    # rows the interrupted run was seeing.
    assert second["batches"][:4] == first["batches"][8:12]


@pytest.mark.slow
def test_resume_true_without_a_checkpoint_starts_fresh(make_cfg, tmp_path):
    """``resume=true`` in a run dir that has no ``last.ckpt`` yet trains from step 0."""
    run_dir = tmp_path / "fresh"
    cfg = _with_callbacks(make_cfg("resume=true", run_dir=run_dir),
                          recorder=_recorder(tmp_path / "fresh.json"))
    results = train(cfg)
    assert results["status"] == "ok" and results["global_step"] == 8
    record = json.loads((tmp_path / "fresh.json").read_text())
    assert (record["start_step"], record["start_epoch"]) == (0, 0)
    assert record["steps"] == list(range(8))
    assert (run_dir / "checkpoints" / "last.ckpt").is_file()


# ----------------------------------------------------------------------------- real GLUE
@pytest.fixture(scope="module")
def real_glue() -> Path:
    """The shared copy of the official GLUE files, or a skip when this checkout lacks it."""
    if not (REAL_GLUE / "SST-2" / "train.tsv").is_file():
        pytest.skip(f"real GLUE data not found at {REAL_GLUE} (expected "
                    "<repo>/../shared/data/glue/SST-2/train.tsv)")
    return REAL_GLUE


@pytest.mark.slow
@pytest.mark.parametrize("task,metrics", [
    ("sst2", ["accuracy"]),
    ("mrpc", ["f1", "accuracy"]),
])
def test_distillation_on_real_glue(make_cfg, real_glue, task, metrics):
    """Tiny teacher and student distil on a subsample of the real files, end to end."""
    results = train(make_cfg(f"task={task}", "teacher=tiny", "distill=kd",
                             f"data.glue_dir={real_glue}", "data.max_train_samples=256",
                             "data.max_eval_samples=128", "data.batch_size=32",
                             "data.max_length=64"))
    assert results["status"] == "ok" and results["error"] is None
    assert results["metric_names"] == metrics
    for who in ("student", "teacher"):
        assert list(results[who]["metrics"]) == metrics
        assert all(0.0 <= v <= 1.0 for v in results[who]["metrics"].values())
    assert results["global_step"] == 256 // 32


# Data rows of the official files (headers excluded), as listed in GLUE's own statistics.
REAL_ROWS = {
    "sst2": {"train": 67349, "validation": 872},
    "mrpc": {"train": 3668, "validation": 408},
    "cola": {"train": 8551, "validation": 1043},
    "stsb": {"train": 5749, "validation": 1500},
    "rte": {"train": 2490, "validation": 277},
}


@pytest.mark.slow
@pytest.mark.parametrize("task", sorted(REAL_ROWS))
def test_real_glue_files_load_completely(real_glue, task):
    """Every row of each official file is read, with labels in the task's range."""
    spec = get_task({"name": task})
    if not (real_glue / spec.glue_dir_name).is_dir():
        pytest.skip(f"{real_glue / spec.glue_dir_name} is not in this copy of GLUE")
    raw = read_splits(spec, glue_dir=str(real_glue)).raw
    assert {split: len(ds) for split, ds in raw.items()} == REAL_ROWS[task]
    for ds in raw.values():
        labels = ds["label"]
        if spec.is_regression:
            assert min(labels) >= 0.0 and max(labels) <= 5.0
            assert any(y != int(y) for y in labels)  # real-valued, not rounded to classes
        else:
            assert set(labels) == set(range(spec.num_labels))
        for field in spec.text_fields:
            assert all(text.strip() for text in ds[field][:50])


# ----------------------------------------------------------------------------- multirun
@pytest.mark.slow
@pytest.mark.parametrize("launcher", ["basic", "joblib"])
def test_multirun_sweeps_two_students(background, launcher):
    """A two-job ``--multirun`` writes one complete ``results.json`` per job directory.

    The joblib variant runs both jobs at once in separate worker processes, sharing one
    tokenized-data cache (whose writes must be atomic).
    """
    sweep = background.wait(f"multirun-{launcher}") / "sweep"
    found = sorted(p.relative_to(sweep).as_posix() for p in sweep.rglob("results.json"))
    assert found == ["0/results.json", "1/results.json"]
    results = [_read(sweep / str(job)) for job in (0, 1)]
    for job, (res, hidden) in enumerate(zip(results, (32, 48), strict=True)):
        assert res["status"] == "ok" and res["error"] is None, res
        assert res["run_dir"] == str(sweep / str(job))
        assert f"student.hidden={hidden}" in res["overrides"]
        assert res["global_step"] == 2 and res["epochs"] == 1  # 16 rows, batches of 8
        exported = json.loads((sweep / str(job) / "student" / "config.json").read_text())
        assert exported["hidden_size"] == hidden
        assert 0.0 <= res["student"]["score"] <= 1.0
    assert results[0]["student"]["params"] < results[1]["student"]["params"]
    # The teacher is the same seeded tiny model in both jobs.
    assert results[0]["teacher"] == results[1]["teacher"]
    assert (sweep / "multirun.yaml").is_file()


# ----------------------------------------------------------------------------- DDP on CPU
def _pair(background: _Background, name: str) -> tuple[dict, dict]:
    """The ``results.json`` of the ``hardware=cpu`` and ``hardware=ddp_cpu`` runs ``name``."""
    single = _read(background.wait(f"{name}-single") / "run")
    ddp = _read(background.wait(f"{name}-ddp") / "run")
    assert single["status"] == ddp["status"] == "ok", (single["error"], ddp["error"])
    return single, ddp


@pytest.mark.slow
def test_ddp_two_cpu_ranks_report_the_same_metrics_as_one_process(background):
    """Validation metrics are reduced over both DDP ranks, not taken from rank zero.

    ``optimizer.lr=0`` keeps the student at its initial weights in both runs (AdamW with a
    zero learning rate also applies no weight decay), so the two runs score the very same
    models on the very same 32 dev rows and must agree to float precision. This checks the
    cross-rank reduction of the metric states (Pearson's running moments, Spearman's gathered
    predictions) and of the one-off teacher score, not optimisation. The 32 eval rows are a
    multiple of 2 ranks x 8 rows per batch, so ``DistributedSampler`` pads no duplicates.
    """
    single, ddp = _pair(background, "lr0")
    # 64 train rows: 8 steps of 8 in one process, 4 steps of 8 per rank with two ranks.
    assert (single["global_step"], ddp["global_step"]) == (8, 4)
    for who in ("student", "teacher"):
        assert set(single[who]["metrics"]) == {"pearson", "spearmanr"}
        assert ddp[who]["metrics"] == pytest.approx(single[who]["metrics"], abs=1e-6)
        assert ddp[who]["score"] == pytest.approx(single[who]["score"], abs=1e-6)
        # Not a degenerate value that any subset of the rows would give as well.
        assert abs(single[who]["metrics"]["pearson"]) > 1e-3


@pytest.mark.slow
def test_ddp_full_batch_sgd_matches_one_process(background, dropout_free_models):
    """With a real learning rate, DDP training follows the single-process trajectory.

    Each optimizer step sees the whole 64-row training set: one batch of 64 in one process,
    one batch of 32 per rank under DDP. DDP averages the two half-batch gradients, which
    equals the full-batch gradient, so with no dropout and plain SGD (unlike AdamW, SGD
    exposes a gradient summed instead of averaged over ranks) both runs must end with the
    same weights up to float rounding. Mini-batches would not do: the single-process sampler
    and ``DistributedSampler`` order rows differently, so the trajectories would differ for
    reasons unrelated to DDP, and a loose comparison of tiny-model scores would prove nothing.
    The exported students are compared tightly; the scores, loosely (Spearman can swap the
    ranks of near-ties).
    """
    single, ddp = _pair(background, "sgd")
    assert single["global_step"] == ddp["global_step"] == 3

    assert_same_training(dropout_free_models["student"], background.cwd["sgd-single"] / "run",
                         background.cwd["sgd-ddp"] / "run", "DDP")


def assert_same_training(initial_dir: Path, single_run: Path, ddp_run: Path, what: str) -> None:
    """The distributed run's exported student equals the single-process one (float rounding),
    training moved it (else the comparison is vacuous), and the scores agree."""
    initial = load_file(initial_dir / "model.safetensors")
    one = load_file(single_run / "student" / "model.safetensors")
    two = load_file(ddp_run / "student" / "model.safetensors")
    assert set(one) == set(two) == set(initial)
    moved = max((one[k] - initial[k]).abs().max().item() for k in one)
    apart = max((one[k] - two[k]).abs().max().item() for k in one)
    assert moved > 1e-2, "training did not change the student: the comparison is vacuous"
    assert apart < 1e-5, f"{what} and single-process weights differ by {apart}"
    single, ddp = _read(single_run), _read(ddp_run)
    assert ddp["student"]["score"] == pytest.approx(single["student"]["score"], abs=1e-2)
    assert ddp["teacher"]["metrics"] == pytest.approx(single["teacher"]["metrics"], abs=1e-6)


@pytest.mark.slow
def test_ddp_scores_an_uneven_eval_set_once_per_row(background):
    """DDP scores every eval row exactly once, even when the ranks get unequal shares.

    As the ``optimizer.lr=0`` test above, with 31 eval rows on 2 ranks. Lightning's default
    ``DistributedSampler`` would pad them to 32 with a repeated row, which then counts twice.
    Real dev sets are rarely multiples of the world size (CoLA has 1043 rows, RTE 277), so
    otherwise the scores reported under ``hardware=ddp`` would not be the dev-set scores.
    """
    single, ddp = _pair(background, "uneven")
    for who in ("student", "teacher"):
        assert ddp[who]["metrics"] == pytest.approx(single[who]["metrics"], abs=1e-6)
