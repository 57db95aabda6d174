"""Run bookkeeping: identity (``config_sha``), skip/resume decisions, ``results.json``.

Every run writes ``results.json`` atomically in its run dir, ``ok`` or ``failed`` with the
error: :class:`RunRecord` is the one place that does it, as a context manager around the
run (in the spirit of lightning-hydra-template's ``task_wrapper``), and closes the W&B run
whatever happens.
"""

from __future__ import annotations

import hashlib
import json
import logging
import pickle
import re
import sys
import time
from pathlib import Path
from types import TracebackType
from typing import Any

import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from lightning.pytorch.loggers import Logger, WandbLogger
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from litdistill.errors import ConfigError
from litdistill.models import count_params
from litdistill.rundir import SCHEMA_VERSION, Results, RunDir
from litdistill.tasks import TaskSpec

log = logging.getLogger("litdistill")

# Keys that change where or how a job runs but not what it computes.
_NOT_IDENTITY = ("paths", "skip_done", "resume", "name", "group", "logger", "callbacks")
# Keys added after runs were recorded, with the value that computes what the runs before
# them computed: left out of the identity while they hold it, so ``skip_done`` still knows
# the older runs of a sweep (a new key otherwise re-runs every finished job).
_ADDED_DEFAULTS: dict[tuple[str, ...], object] = {
    ("student", "vocab"): "full", ("student", "vocab_extra"): 0,
    ("student", "vocab_corpus"): None, ("progress",): "auto", ("corpus",): None,
    ("student", "importance"): "activation",
}
# ``data`` built the DataModule itself before the plain reader; same options, same data.
_OLD_DATA_TARGET = {"litdistill.data.DataOptions": "litdistill.data.GlueDataModule"}


def _canonical(tree: dict) -> dict:
    """``tree`` (a config as plain containers) as litdistill 0.1 would have written it."""
    for path, default in _ADDED_DEFAULTS.items():
        *parents, leaf = path
        node = tree
        for key in parents:
            node = node.get(key) if isinstance(node, dict) else None
        if isinstance(node, dict) and leaf in node and node[leaf] == default:
            del node[leaf]
    data = tree.get("data")
    if isinstance(data, dict) and data.get("_target_") in _OLD_DATA_TARGET:
        data.update(_target_=_OLD_DATA_TARGET[data["_target_"]], _partial_=True)
    return tree


def hydra_overrides() -> list[str]:
    """The job's command-line overrides ([] outside a Hydra app)."""
    return list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else []


def multirun() -> bool:
    """Whether this process runs a job of a ``--multirun``."""
    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def choices() -> dict[str, str]:
    """Which option of each config group the job runs (``student: minilm_3l`` ...)."""
    if not HydraConfig.initialized():
        return {}
    return {k: v for k, v in HydraConfig.get().runtime.choices.items()
            if v is not None and not k.startswith("hydra")}


def run_name(cfg: DictConfig) -> str:
    """``name``, else the job's overrides, else ``<task>-<student>`` (logger run names)."""
    if cfg.get("name"):
        return str(cfg.name)
    overrides = [o for o in hydra_overrides() if not o.startswith(("hydra", "paths"))]
    return ",".join(overrides) or f"{cfg.task.name}-{cfg.student.get('name') or 'student'}"


def run_group(cfg: DictConfig) -> str | None:
    """``group``, else the multirun sweep dir's name (one W&B group per sweep)."""
    if cfg.get("group"):
        return str(cfg.group)
    return Path(HydraConfig.get().sweep.dir).name if multirun() else None


def config_sha(cfg: DictConfig) -> str:
    """Hash of the resolved job config minus run-placement keys: what ``skip_done`` compares.

    Placement (``paths.*``: run dir, cache dir) is replaced by placeholders before resolving,
    so values that interpolate it (``data.cache_dir``, ``trainer.default_root_dir``) do not
    make two runs of one config differ, while every other interpolation (``${oc.env:...}``,
    ``${task.name}``) counts with its resolved value.

    Raises:
        ConfigError: An interpolation cannot be resolved.
    """
    tree = OmegaConf.to_container(cfg, resolve=False)
    tree["paths"] = {k: f"<paths.{k}>" for k in tree.get("paths") or {}}
    try:
        resolved = OmegaConf.to_container(OmegaConf.create(tree), resolve=True)
    except OmegaConfBaseException as err:
        raise ConfigError(f"cannot resolve the job config to identify the run: {err}") from None
    identity = _canonical({k: v for k, v in resolved.items() if k not in _NOT_IDENTITY})
    return hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()


def config_key(overrides: list[str]) -> tuple[str, ...]:
    """The overrides that define a configuration (what the report groups seeds by): no
    ``seed``, no ``hydra``/``paths`` ones."""
    keep = []
    for override in overrides:
        name = override.lstrip("+~").split("=", 1)[0]
        if name != "seed" and re.split(r"[./]", name)[0] not in ("hydra", "paths"):
            keep.append(override)
    return tuple(sorted(keep))


def legacy_config_sha(cfg: DictConfig) -> str:
    """The identity runs of litdistill <= 0.1 recorded: the *unresolved* config minus the
    placement keys (resolving it always failed on ``${paths.cache_dir}`` and fell back to
    this). Still accepted by :func:`finished`, so sweeps started before resume with skip_done.
    """
    tree = {k: v for k, v in cfg.items() if k not in _NOT_IDENTITY}
    tree = _canonical(OmegaConf.to_container(OmegaConf.create(tree), resolve=False))
    return hashlib.sha256(json.dumps(tree, sort_keys=True, default=str).encode()).hexdigest()


def resuming(cfg: DictConfig) -> bool:
    """Whether ``resume`` asks to continue a checkpoint."""
    return cfg.get("resume") not in (None, False, "false")


def finished(cfg: DictConfig, output_dir: Path) -> Results | None:
    """The results of an earlier ok run of this very config in ``output_dir``, if any (a
    damaged results.json counts as not done: the job runs again and replaces it).

    Raises:
        ConfigError: ``output_dir`` holds an ok run of a *different* config and ``resume`` is
            off. Hydra numbers sweep jobs by position, so rerunning a changed sweep into the
            same ``hydra.sweep.dir`` would otherwise overwrite finished runs with other ones.
    """
    if not cfg.get("skip_done"):
        return None
    done = RunDir(output_dir).ok_results()
    if done is None:
        return None
    if done.get("config_sha") in (config_sha(cfg), legacy_config_sha(cfg)):
        return done
    if resuming(cfg):
        return None  # continuing in that folder (e.g. for more epochs) is what resume is for
    raise ConfigError(
        f"{output_dir} already holds a finished run of another config (task "
        f"{done.get('task')}, overrides {done.get('overrides')}); not overwriting it. Use a "
        "new hydra.sweep.dir / hydra.run.dir, delete that folder, set skip_done=false to "
        "overwrite it, or resume=true to continue it.")


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """A Lightning checkpoint, memory-mapped (tensors stay on disk until used) and read with
    ``weights_only=True`` (tensors and plain types only: no pickled code runs).

    Raises:
        ConfigError: The file is truncated, corrupt, holds pickled objects, or is no
            Lightning training checkpoint; the message names it.
    """
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except (OSError, RuntimeError, EOFError, ValueError, pickle.UnpicklingError) as err:
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ConfigError(f"checkpoint {path} is unreadable (truncated or corrupt? {reason}); "
                          "delete it to start over, or pass resume=<another .ckpt>") from None
    if not isinstance(checkpoint, dict) or not {"state_dict", "loops"} <= set(checkpoint):
        raise ConfigError(f"checkpoint {path} is not a Lightning training checkpoint (no "
                          "state_dict/loops); resume from a run's checkpoints/last.ckpt")
    return checkpoint


def resume_path(cfg: DictConfig, output_dir: Path) -> str | None:
    """The checkpoint to continue from: ``resume=true`` -> ``checkpoints/last.ckpt`` when it
    exists, a path -> that file, else None. The file is read once here, so a damaged one
    fails before any weights load.

    Raises:
        ConfigError: No such file, or an unreadable one (:func:`read_checkpoint`).
    """
    if not resuming(cfg):
        return None
    resume = cfg.resume
    if resume in (True, "true", "auto"):
        last = RunDir(output_dir).last_checkpoint
        if not last.is_file():
            log.info("resume=true but no %s yet: starting from scratch", last)
            return None
        log.info("resuming from %s", last)
        resume = last
    if not Path(resume).is_file():
        raise ConfigError(f"resume={resume}: no such checkpoint file")
    read_checkpoint(resume)
    return str(resume)


def model_entry(name: str, model: torch.nn.Module | None, metrics: dict[str, float] | None,
                task: TaskSpec) -> dict[str, Any]:
    """``results.json``'s ``student``/``teacher`` entry: name, params, score, metrics."""
    metrics = dict(metrics or {})
    score = metrics.pop("score", None)
    return {"name": name, "params": count_params(model) if model is not None else None,
            "score": score,
            "metrics": {k: metrics[k] for k in task.metric_names if k in metrics}}


def flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a/b": 1}``, so dashboards can filter on every key."""
    if not isinstance(tree, dict):
        return {prefix: tree}
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        flat.update(flatten(value, f"{prefix}/{key}" if prefix else str(key)))
    return flat


def log_results(loggers: list[Logger], results: dict[str, Any]) -> None:
    """The run's headline figures to every logger; W&B's run summary = results.json, flat,
    so dashboards filter and group on every key."""
    student = results.get("student") or {}
    for logger in loggers:
        logger.log_metrics({"results/student_score": student.get("score") or 0.0,
                            "results/retention": results.get("retention") or 0.0})
        if isinstance(logger, WandbLogger):
            logger.experiment.summary.update(
                {k: v for k, v in flatten(results).items() if v is not None})


def finish_wandb() -> None:
    """Close the W&B run so the next multirun job gets its own run."""
    if "wandb" in sys.modules:
        import wandb

        if wandb.run is not None:
            wandb.finish()


class RunRecord:
    """``results.json`` of one run, written ``failed`` on any exception, ``ok`` by
    :meth:`mark_ok` + :meth:`write`; W&B is closed on exit either way.

    A failure never replaces an ``ok`` results.json already there (e.g. a ``resume=true``
    that fails on a finished run): it goes to ``results.failed.json`` beside it.

    Args:
        cfg: The job config (identity and overrides).
        output_dir: The run dir.
    """

    def __init__(self, cfg: DictConfig, output_dir: Path) -> None:
        self.run_dir = RunDir(output_dir)
        self.path = self.run_dir.results_path
        # A failure never replaces an ok results.json (a damaged one it does).
        self._failed_aside = self.run_dir.ok_results() is not None
        self.results: Results = {
            "schema_version": SCHEMA_VERSION, "status": "failed", "task": cfg.task.get("name"),
            "overrides": hydra_overrides(), "run_dir": str(output_dir), "choices": choices(),
            "config_sha": config_sha(cfg)}
        self.is_zero = True  # only rank zero writes (set once the trainer knows its rank)
        self._start = time.perf_counter()

    def seconds(self) -> float:
        """Wall time since the run started, rounded to ms."""
        return round(time.perf_counter() - self._start, 3)

    def mark_ok(self, **entries: Any) -> Results:
        """The results of a finished run: ``ok`` plus ``entries`` (not written yet)."""
        self.results.update(status="ok", error=None, **entries)
        return self.results

    def write(self) -> Results:
        """Write results.json (atomically) as it stands."""
        self.run_dir.write_results(self.results)
        return self.results

    def __enter__(self) -> RunRecord:
        return self

    def __exit__(self, kind: type[BaseException] | None, err: BaseException | None,
                 tb: TracebackType | None) -> None:
        try:
            if err is not None and self.is_zero:
                self.results.setdefault("student", None)
                self.results.setdefault("teacher", None)
                self.results.update(status="failed", error=f"{type(err).__name__}: {err}",
                                    retention=None, train_seconds=self.seconds())
                self.run_dir.write_results(self.results, failed=self._failed_aside)
        finally:
            finish_wandb()
