"""Entry point: ``litdistill-train`` (``python -m litdistill.train``) over ``conf/train.yaml``.

``train(cfg)`` is a plain function (tests call it directly); only :func:`main` carries
``@hydra.main``. Every run writes ``results.json`` atomically in its run dir, ``ok`` or
``failed``, and exports the best student with ``save_pretrained`` to ``<run_dir>/student``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import hydra
import lightning as L
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from hydra.utils import instantiate
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import WandbLogger
from omegaconf import DictConfig, OmegaConf, open_dict

from litdistill import atomic
from litdistill.data import GlueDataModule
from litdistill.errors import ConfigError, LaunchError, LitDistillError
from litdistill.intermediate import IntermediateTerms
from litdistill.models import FromTeacher, ModelSpec, Pretrained, count_params
from litdistill.tasks import TaskSpec, get_task
from litdistill.teacher_cache import TeacherCache, check_mode
from litdistill.teachers import TeacherBuilder, check_teacher, teacher_outputs

log = logging.getLogger("litdistill")
# The frozen teacher is in eval mode on purpose; Lightning warns about any such module.
warnings.filterwarnings("ignore", message=r".*module\(s\) in eval mode.*")

CONF_DIR = str(Path(__file__).resolve().parents[2] / "conf")


def _hydra_overrides() -> list[str]:
    return list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else []


def check_launch(cfg: DictConfig) -> None:
    """Refuse Lightning ``ddp`` inside a basic/joblib multirun.

    Measured on lightning 2.6.6 + hydra 1.3.8: Lightning relaunches ``sys.argv`` for each
    extra rank, so the child re-runs the whole sweep (basic launcher) or crashes (joblib, and
    submitit's local executor, whose extra rank re-runs ``submitit.core._submit``). Under
    SLURM each rank is a task SLURM started, which is what Lightning expects.
    """
    trainer = cfg.trainer
    strategy = str(trainer.get("strategy", "auto"))
    multi_device = str(trainer.get("devices", 1)) not in {"1", "auto"} or \
        int(trainer.get("num_nodes", 1)) > 1
    if not (strategy.startswith("ddp") and "spawn" not in strategy and multi_device):
        return
    if not HydraConfig.initialized() or HydraConfig.get().mode != RunMode.MULTIRUN:
        return
    launcher = str(HydraConfig.get().launcher.get("_target_", ""))
    if not launcher.endswith(".SlurmLauncher"):
        raise LaunchError(
            f"trainer.strategy={strategy} with several devices cannot run inside a --multirun "
            "with the basic, joblib or submitit-local launcher (each rank would relaunch the "
            "sweep); use one device per job (hardware=cpu/gpu), strategy=ddp_spawn, or "
            "hydra/launcher=slurm (one SLURM task per GPU)"
        )


def check_models(task: TaskSpec, teacher: ModelSpec | None, student: ModelSpec,
                 alpha_kd: float, terms: Any = None, separate_tokenizers: bool = False) -> bool:
    """Vocabulary, label-count and layer checks that need configs and tokenizers, not weights.

    Returns:
        Whether teacher and student need their own tokenizations (vocabularies differ and
        ``separate_tokenizers`` allows it).
    """
    s_config = student.hf_config(teacher)  # resolves paths and layer lists; raises on bad ones
    if teacher is None:
        if alpha_kd or terms:
            raise ConfigError("distillation needs a teacher: set teacher=<tiny|pretrained|zoo> "
                              "or use distill=none for plain fine-tuning")
        return False
    t_tok, s_tok = teacher.tokenizer(None), student.tokenizer(teacher)
    separate = t_tok.get_vocab() != s_tok.get_vocab()
    if separate and not separate_tokenizers:
        raise ConfigError(
            f"teacher and student vocabularies differ: teacher {teacher.name} has "
            f"{len(t_tok)} tokens, student {student.name} has {len(s_tok)}; give the student "
            "the teacher's tokenizer, or set data.separate_tokenizers=true (logit KD only)"
        )
    if separate and terms:
        raise ConfigError(
            f"intermediate terms {sorted(terms)} compare token positions, which differ between "
            "two tokenizers; with separate tokenizers only logit-level KD works (distill=kd)")
    if terms:
        IntermediateTerms(terms, s_config, teacher.hf_config(None))  # mapping, heads, widths
    config = teacher.hf_config(None)
    if teacher.has_classifier and config.num_labels != task.num_labels:
        raise ConfigError(
            f"teacher {teacher.name} predicts {config.num_labels} labels but task "
            f"{task.name} has {task.num_labels}; use a teacher fine-tuned on {task.name}"
        )
    if alpha_kd and isinstance(teacher, Pretrained) and not teacher.has_classifier:
        raise ConfigError(
            f"teacher {teacher.name} has no fine-tuned classification head, so its soft "
            f"targets would be noise; fine-tune it first (teacher=none student=pretrained "
            f"student.name_or_path={teacher.name} distill=none) and use its run's student/ "
            "folder as the teacher"
        )
    return separate


def _run_name(cfg: DictConfig) -> str:
    overrides = [o for o in _hydra_overrides() if not o.startswith(("hydra", "paths"))]
    return ",".join(overrides) or f"{cfg.task.name}-{cfg.student.get('name') or 'student'}"


def _group(cfg: DictConfig) -> str | None:
    if cfg.get("group"):
        return str(cfg.group)
    if HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN:
        return Path(HydraConfig.get().sweep.dir).name
    return None


def _choices() -> dict[str, str]:
    """Which option of each config group the job runs (``student: minilm_3l`` ...)."""
    if not HydraConfig.initialized():
        return {}
    return {k: v for k, v in HydraConfig.get().runtime.choices.items()
            if v is not None and not k.startswith("hydra")}


# Keys that change where or how a job runs but not what it computes.
_NOT_IDENTITY = ("paths", "skip_done", "resume", "name", "group", "logger", "callbacks")


def config_sha(cfg: DictConfig) -> str:
    """Hash of the resolved job config minus run-placement keys: what ``skip_done`` compares."""
    tree = {k: v for k, v in cfg.items() if k not in _NOT_IDENTITY}
    try:
        tree = OmegaConf.to_container(OmegaConf.create(tree), resolve=True)
    except Exception:  # an interpolation that needs the Hydra app (outside it: hash unresolved)
        tree = OmegaConf.to_container(OmegaConf.create(tree), resolve=False)
    return hashlib.sha256(json.dumps(tree, sort_keys=True, default=str).encode()).hexdigest()


def _finished(cfg: DictConfig, output_dir: Path) -> dict[str, Any] | None:
    """The results of an earlier ok run of this very config in ``output_dir``, if any.

    Raises:
        ConfigError: ``output_dir`` holds an ok run of a *different* config and ``resume`` is
            off. Hydra numbers sweep jobs by position, so rerunning a changed sweep into the
            same ``hydra.sweep.dir`` would otherwise overwrite finished runs with other ones.
    """
    path = output_dir / "results.json"
    if not cfg.get("skip_done") or not path.is_file():
        return None
    try:
        done = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    if done.get("status") != "ok":
        return None
    if done.get("config_sha") == config_sha(cfg):
        return done
    if _resuming(cfg):
        return None  # continuing in that folder (e.g. for more epochs) is what resume is for
    raise ConfigError(
        f"{output_dir} already holds a finished run of another config (task "
        f"{done.get('task')}, overrides {done.get('overrides')}); not overwriting it. Use a "
        "new hydra.sweep.dir / hydra.run.dir, delete that folder, set skip_done=false to "
        "overwrite it, or resume=true to continue it.")


def _device(cfg: DictConfig) -> torch.device:
    """Where this process's model runs (for the teacher pass before the trainer starts)."""
    accelerator = str(cfg.trainer.get("accelerator", "auto"))
    if accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available()):
        # SLURM sets SLURM_LOCALID per task before Lightning sets LOCAL_RANK.
        rank = os.environ.get("LOCAL_RANK", os.environ.get("SLURM_LOCALID", 0))
        return torch.device("cuda", int(rank))
    return torch.device("cpu")


def _resuming(cfg: DictConfig) -> bool:
    return cfg.get("resume") not in (None, False, "false")


def _resume_path(cfg: DictConfig, output_dir: Path) -> str | None:
    if not _resuming(cfg):
        return None
    resume = cfg.resume
    if resume in (True, "true", "auto"):
        last = output_dir / "checkpoints" / "last.ckpt"
        if last.is_file():
            log.info("resuming from %s", last)
            return str(last)
        log.info("resume=true but no %s yet: starting from scratch", last)
        return None
    if not Path(resume).is_file():
        raise ConfigError(f"resume={resume}: no such checkpoint file")
    return str(resume)


def _export_student(module: Any, tokenizer: Any, task: TaskSpec, dest: Path) -> Path:
    student = module.student
    if task.label_names and not task.is_regression:
        student.config.id2label = dict(enumerate(task.label_names))
        student.config.label2id = {n: i for i, n in enumerate(task.label_names)}

    def fill(tmp: Path) -> None:
        student.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)

    return atomic.write_dir(dest, fill)


def _model_entry(name: str, model: torch.nn.Module | None, metrics: dict[str, float] | None,
                 task: TaskSpec) -> dict[str, Any]:
    metrics = dict(metrics or {})
    score = metrics.pop("score", None)
    return {"name": name, "params": count_params(model) if model is not None else None,
            "score": score,
            "metrics": {k: metrics[k] for k in task.metric_names if k in metrics}}


def train(cfg: DictConfig) -> dict[str, Any]:
    """Fine-tune or distill one student as ``cfg`` says; return what results.json holds.

    Args:
        cfg: The composed ``conf/train.yaml``.

    Returns:
        The results dict (also written to ``<paths.output_dir>/results.json``).

    Raises:
        ConfigError: Bad input, found before any weights load (results.json says ``failed``).
    """
    output_dir = Path(cfg.paths.output_dir)
    if (done := _finished(cfg, output_dir)) is not None:
        log.info("skip_done: %s already finished ok; skipping", output_dir)
        return done
    results: dict[str, Any] = {"status": "failed", "task": cfg.task.get("name"),
                               "overrides": _hydra_overrides(), "run_dir": str(output_dir),
                               "choices": _choices(), "config_sha": config_sha(cfg)}
    start = time.perf_counter()
    is_zero = True
    try:
        # ---- validate everything cheap first: config, data, tokenizers, label counts
        check_launch(cfg)
        task = get_task(cfg.task)
        results["metric_names"] = task.metric_names
        distill = instantiate(cfg.distill)  # partial DistillationModule
        alpha_kd = float(distill.keywords.get("alpha_kd", 0.0))
        phases = distill.keywords.get("phases") or []
        alpha_kd = max([alpha_kd, *(float(p.get("alpha_kd", 0.0)) for p in phases)])
        if phases:
            # A phased objective (TinyBERT, MiniLM) defines the run's length itself.
            with open_dict(cfg):
                cfg.trainer.max_epochs = sum(int(p["epochs"]) for p in phases)
        data_files = cfg.task.get("data_files")
        datamodule: GlueDataModule = instantiate(cfg.data)(
            task=task, data_files=OmegaConf.to_container(data_files) if data_files else None)
        datamodule.load_raw()
        teacher_spec = instantiate(cfg.teacher) if cfg.get("teacher") else None
        student_spec = instantiate(cfg.student)
        terms = distill.keywords.get("terms")
        separate = check_models(task, teacher_spec, student_spec, alpha_kd, terms,
                                datamodule.separate_tokenizers)
        cache_mode = check_mode(str(cfg.get("teacher_cache") or "off"))
        ckpt_path = _resume_path(cfg, output_dir)

        # ---- now build: teacher outputs (cached or live), weights, module, trainer
        L.seed_everything(cfg.seed, workers=True)
        regression = task.is_regression
        tokenizer = student_spec.tokenizer(teacher_spec)
        datamodule.set_tokenizer(tokenizer, teacher_spec.tokenizer(None) if separate else None)
        teacher, device = None, _device(cfg)
        if teacher_spec is not None:
            builder = TeacherBuilder(teacher_spec, task, cfg.seed)
            cache = TeacherCache(Path(cfg.paths.cache_dir) / "teacher", cache_mode)
            # Dev logits first (score, gate, agreement), train logits only once the teacher
            # passed the gate, and only when KD logits are all training needs from it.
            outputs, info = teacher_outputs(datamodule, builder, cache, task.eval_splits,
                                            device, datamodule.eval_batch_size)
            results["teacher_gate"] = check_teacher(task, teacher_spec.name, datamodule,
                                                    outputs, cfg.get("teacher_gate"))
            from_cache = alpha_kd > 0 and not terms and cache_mode != "off"
            live = bool(terms) or (alpha_kd > 0 and not from_cache)
            if from_cache:
                train_out, train_info = teacher_outputs(datamodule, builder, cache, ["train"],
                                                        device, datamodule.eval_batch_size)
                outputs.update(train_out)
                info["splits"].update(train_info["splits"])
            results["teacher_cache"] = info
            datamodule.set_teacher_logits(outputs)
            needs_model = live or (isinstance(student_spec, FromTeacher)
                                   and student_spec.source is None)
            teacher = builder.model() if needs_model else None
        student = student_spec.build(task.num_labels, regression, teacher=teacher_spec,
                                     teacher_model=teacher)
        if teacher is not None and not live:
            teacher = None  # batches carry the teacher's logits: free its weights
        if cfg.get("compile"):
            # In place (keeps state_dict keys); dynamic: every batch has its own length.
            for model in (student, teacher):
                if model is not None:
                    model.compile(dynamic=True)
        module = distill(student=student, teacher=teacher, task=task,
                         cached_teacher=teacher_spec is not None,
                         optimizer=instantiate(cfg.optimizer),
                         scheduler=instantiate(cfg.scheduler) if cfg.get("scheduler") else None)

        with open_dict(cfg):
            cfg.name = cfg.get("name") or _run_name(cfg)
            cfg.group = _group(cfg)
        loggers = [instantiate(c) for c in (cfg.get("logger") or {}).values() if c]
        callbacks = [instantiate(c) for c in (cfg.get("callbacks") or {}).values() if c]
        trainer = instantiate(cfg.trainer, logger=loggers or False, callbacks=callbacks)
        is_zero = trainer.is_global_zero
        flat = OmegaConf.to_container(cfg, resolve=True)
        for logger in loggers:
            logger.log_hyperparams(_flatten(flat))

        trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path)
        checkpoint = next((c for c in trainer.callbacks if isinstance(c, ModelCheckpoint)),
                          None)
        best = checkpoint.best_model_path if checkpoint is not None else ""
        best_score = checkpoint.best_model_score if checkpoint is not None else None
        stale = not module.last_val or module.last_val_step != trainer.global_step
        if best and best_score is not None and (
                stale or float(best_score) > module.last_val["score"] + 1e-6):
            # An earlier validation was better (1e-6: the callback stores float32 scores),
            # or the final weights were never validated:
            # load the best checkpoint and re-validate, so the exported student and the
            # reported metrics are the best checkpoint's. Otherwise the weights in memory
            # already score best, and another validation pass would be wasted.
            trainer.validate(module, datamodule=datamodule, ckpt_path=best, verbose=False)
        elif stale:
            trainer.validate(module, datamodule=datamodule, verbose=False)
        train_seconds = time.perf_counter() - start

        if trainer.is_global_zero:
            student_dir = _export_student(module, tokenizer, task, output_dir / "student")
            s_entry = _model_entry(student_spec.name, student, module.last_val, task)
            s_entry["agreement"] = module.last_agreement
            t_entry = None
            if teacher_spec is not None:
                t_entry = _model_entry(teacher_spec.name, None, module.teacher_scores, task)
                t_entry.update(params=builder.params(), path=builder.folder)
            retention = (s_entry["score"] / t_entry["score"]
                         if t_entry and t_entry["score"] else None)
            results.update(
                status="ok", student=s_entry, teacher=t_entry, retention=retention,
                train_seconds=round(train_seconds, 3), error=None,
                distill={k: v for k, v in distill.keywords.items()}, seed=cfg.seed,
                best_checkpoint=best or None, student_dir=str(student_dir),
                global_step=trainer.global_step, epochs=trainer.current_epoch,
                phase_starts=[list(p) for p in module.phase_starts],
                epoch_seconds=module.epoch_seconds,
            )
            for logger in loggers:
                logger.log_metrics({"results/student_score": s_entry["score"] or 0.0,
                                    "results/retention": retention or 0.0})
                if isinstance(logger, WandbLogger):
                    # The run's summary is results.json, flat, so dashboards filter on it.
                    logger.experiment.summary.update(
                        {k: v for k, v in _flatten(results).items() if v is not None})
            atomic.write_json(output_dir / "results.json", results)
        return results
    except BaseException as err:
        if is_zero:
            results.setdefault("student", None)
            results.setdefault("teacher", None)
            results.update(status="failed", error=f"{type(err).__name__}: {err}",
                           retention=None,
                           train_seconds=round(time.perf_counter() - start, 3))
            atomic.write_json(output_dir / "results.json", results)
        raise
    finally:
        _finish_wandb()


def _flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a/b": 1}``, so dashboards can filter on every key."""
    if not isinstance(tree, dict):
        return {prefix: tree}
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        flat.update(_flatten(value, f"{prefix}/{key}" if prefix else str(key)))
    return flat


def _finish_wandb() -> None:
    """Close the W&B run so the next multirun job gets its own run."""
    if "wandb" in sys.modules:
        import wandb

        if wandb.run is not None:
            wandb.finish()


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="train")
def main(cfg: DictConfig) -> float:
    """Hydra app; returns the student's score (for sweepers such as Optuna).

    In a ``--multirun`` a failing job is isolated: its results.json already says
    ``failed`` with the error, the error is logged, and the job returns NaN (Optuna records
    the trial as failed) so the sweep goes on. A single run exits 2 on bad input.
    """
    multirun = HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN
    try:
        results = train(cfg)
    except Exception as err:
        if multirun and not isinstance(err, LaunchError):
            log.error("job %s failed, the sweep goes on: %s: %s",
                      cfg.paths.output_dir, type(err).__name__, err)
            return math.nan
        if isinstance(err, LitDistillError):
            print(f"error: {err}", file=sys.stderr)
            sys.exit(2)
        raise
    student = results.get("student") or {}
    score = student.get("score")
    return math.nan if score is None else float(score)


if __name__ == "__main__":
    main()
