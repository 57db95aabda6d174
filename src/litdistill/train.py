"""Entry point: ``litdistill-train`` (``python -m litdistill.train``) over ``conf/train.yaml``.

``train(cfg)`` is a plain function (tests call it directly); only :func:`main` carries
``@hydra.main``. Every run writes ``results.json`` atomically in its run dir, ``ok`` or
``failed``, and exports the best student with ``save_pretrained`` to ``<run_dir>/student``.
"""

from __future__ import annotations

import logging
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
from omegaconf import DictConfig, OmegaConf, open_dict

from litdistill import atomic
from litdistill.data import GlueDataModule
from litdistill.errors import ConfigError, LitDistillError
from litdistill.intermediate import IntermediateTerms
from litdistill.models import ModelSpec, Pretrained, count_params
from litdistill.tasks import TaskSpec, get_task

log = logging.getLogger("litdistill")
# The frozen teacher is in eval mode on purpose; Lightning warns about any such module.
warnings.filterwarnings("ignore", message=r".*module\(s\) in eval mode.*")

CONF_DIR = str(Path(__file__).resolve().parents[2] / "conf")


def _hydra_overrides() -> list[str]:
    return list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else []


def check_launch(cfg: DictConfig) -> None:
    """Refuse Lightning ``ddp`` inside a basic/joblib multirun.

    Measured on lightning 2.6.6 + hydra 1.3.8: Lightning relaunches ``sys.argv`` for each
    extra rank, so the child re-runs the whole sweep (basic launcher) or crashes (joblib).
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
    if "submitit" not in launcher.lower():
        raise ConfigError(
            f"trainer.strategy={strategy} with several devices cannot run inside a --multirun "
            "with the basic or joblib launcher (each rank would relaunch the sweep); use one "
            "device per job (hardware=cpu/gpu), strategy=ddp_spawn, or hydra/launcher="
            "submitit_slurm"
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


def _resume_path(cfg: DictConfig, output_dir: Path) -> str | None:
    resume = cfg.get("resume")
    if resume in (None, False, "false"):
        return None
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


def _model_entry(name: str, model: torch.nn.Module, metrics: dict[str, float] | None,
                 task: TaskSpec) -> dict[str, Any]:
    metrics = dict(metrics or {})
    score = metrics.pop("score", None)
    return {"name": name, "params": count_params(model), "score": score,
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
    results: dict[str, Any] = {"status": "failed", "task": cfg.task.get("name"),
                               "overrides": _hydra_overrides(), "run_dir": str(output_dir)}
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
        separate = check_models(task, teacher_spec, student_spec, alpha_kd,
                                distill.keywords.get("terms"), datamodule.separate_tokenizers)
        ckpt_path = _resume_path(cfg, output_dir)

        # ---- now build: weights, module, trainer
        L.seed_everything(cfg.seed, workers=True)
        regression = task.is_regression
        teacher = teacher_spec.build(task.num_labels, regression) if teacher_spec else None
        student = student_spec.build(task.num_labels, regression, teacher=teacher_spec,
                                     teacher_model=teacher)
        tokenizer = student_spec.tokenizer(teacher_spec)
        datamodule.set_tokenizer(tokenizer, teacher_spec.tokenizer(None) if separate else None)
        module = distill(student=student, teacher=teacher, task=task,
                         optimizer=instantiate(cfg.optimizer),
                         scheduler=instantiate(cfg.scheduler) if cfg.get("scheduler") else None)

        with open_dict(cfg):
            cfg.name = cfg.get("name") or _run_name(cfg)
            cfg.group = _group(cfg)
        loggers = [instantiate(c) for c in (cfg.get("logger") or {}).values() if c]
        callbacks = [instantiate(c) for c in (cfg.get("callbacks") or {}).values() if c]
        trainer: L.Trainer = instantiate(cfg.trainer, logger=loggers or False,
                                         callbacks=callbacks)
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
            t_entry = (_model_entry(teacher_spec.name, teacher, module.teacher_scores, task)
                       if teacher is not None else None)
            retention = (s_entry["score"] / t_entry["score"]
                         if t_entry and t_entry["score"] else None)
            results.update(
                status="ok", student=s_entry, teacher=t_entry, retention=retention,
                train_seconds=round(train_seconds, 3), error=None,
                distill={k: v for k, v in distill.keywords.items()}, seed=cfg.seed,
                best_checkpoint=best or None, student_dir=str(student_dir),
                global_step=trainer.global_step, epochs=trainer.current_epoch,
                phase_starts=[list(p) for p in module.phase_starts],
            )
            for logger in loggers:
                logger.log_metrics({"results/student_score": s_entry["score"] or 0.0,
                                    "results/retention": retention or 0.0})
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
def main(cfg: DictConfig) -> float | None:
    """Hydra app; returns the student's score (for sweepers such as Optuna)."""
    try:
        results = train(cfg)
    except LitDistillError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    student = results.get("student") or {}
    return student.get("score")


if __name__ == "__main__":
    main()
