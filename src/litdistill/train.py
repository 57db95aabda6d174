"""Entry point: ``litdistill-train`` (``python -m litdistill.train``) over ``conf/train.yaml``.

``train(cfg)`` is a plain function (tests call it directly) that reads as the recipe:
validate -> prepare data and teacher outputs -> build -> fit -> pick the best checkpoint ->
export and record. Only :func:`app` carries ``@hydra.main`` (configs from
``pkg://litdistill.conf``); :func:`main` checks the config folders the command line adds, then
runs it. Every run writes ``results.json`` atomically in its run dir, ``ok`` or ``failed``
(:class:`~litdistill.runs.RunRecord`), and exports the best student with ``save_pretrained`` to
``<run_dir>/student``.
"""

from __future__ import annotations

import logging
import math
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import datasets
import hydra
import lightning as L
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from lightning.pytorch.callbacks import ModelCheckpoint
from omegaconf import DictConfig, OmegaConf
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from litdistill import atomic, monitors, progress, runs, unlabelled
from litdistill.augment import Augment
from litdistill.callbacks import EpochTimer, PhaseLog, RngState
from litdistill.checks import (
    check_config_dirs,
    check_group_options,
    check_launch,
    check_models,
    device_of,
)
from litdistill.data import GlueDataModule
from litdistill.errors import ConfigError, LaunchError, LitDistillError
from litdistill.finite import check_weights
from litdistill.loggers import keep_logged_rows
from litdistill.models import FromTeacher, ModelSpec
from litdistill.module import DistillationModule
from litdistill.objective import Objective
from litdistill.settings import check_max_length, check_writable, validate_settings
from litdistill.tasks import TaskSpec, get_task
from litdistill.teacher_cache import TeacherCache, check_mode
from litdistill.teachers import SplitSource, TeacherBuilder, check_teacher, teacher_outputs
from litdistill.transfer import TransferSet

log = logging.getLogger("litdistill")
# The frozen teacher is in eval mode on purpose; Lightning warns about any such module.
warnings.filterwarnings("ignore", message=r".*module\(s\) in eval mode.*")

# The configs ship inside the package (a wheel has them too); Hydra finds them as
# pkg://litdistill.conf, and code composing them with initialize_config_dir uses this path.
CONF_DIR = str(Path(__file__).resolve().parent / "conf")


def build(node: Any, **kwargs: Any) -> Any:
    """``hydra.utils.instantiate`` that lets our own errors through unwrapped (Hydra wraps
    every exception of a ``_target_`` in an InstantiationException, losing the one-line
    message and the exit code 2)."""
    try:
        return instantiate(node, **kwargs)
    except InstantiationException as err:
        if isinstance(err.__cause__, LitDistillError):
            raise err.__cause__ from None
        raise


@dataclass(frozen=True)
class Plan:
    """A validated run: everything decided before any weights load."""

    task: TaskSpec
    objective: Objective
    datamodule: GlueDataModule
    teacher: ModelSpec | None
    student: ModelSpec
    separate_tokenizers: bool
    cache_mode: str
    ckpt_path: str | None
    max_epochs: int
    transfer: TransferSet
    augment: Augment
    transfer_rows: datasets.Dataset | None  # capped transfer rows (text only), or None
    transfer_source: str | None  # what they depend on (part of their cache keys)


@dataclass(frozen=True)
class TeacherSide:
    """The teacher once its dev (and maybe train) logits are known."""

    builder: TeacherBuilder
    scores: dict[str, float]  # dev metrics and score of its (cached) logits


def validate(cfg: DictConfig, output_dir: Path) -> Plan:
    """Config, data, tokenizers, label counts: every cheap check, before any weights load."""
    check_launch(cfg)
    validate_settings(cfg)
    task = get_task(cfg.task)
    objective: Objective = build(cfg.distill)
    data_files = cfg.task.get("data_files")
    datamodule: GlueDataModule = build(cfg.data)(
        task=task,
        data_files=OmegaConf.to_container(data_files, resolve=True) if data_files else None)
    datamodule.load_raw()
    task = datamodule.task  # a custom task's classes may come from its training file
    teacher = build(cfg.teacher) if cfg.get("teacher") else None
    student = build(cfg.student)
    separate = check_models(task, teacher, student, objective, datamodule.separate_tokenizers)
    check_max_length(datamodule.max_length, teacher, student)
    transfer = build(cfg.transfer) if cfg.get("transfer") else TransferSet()
    augment = build(cfg.augment) if cfg.get("augment") else Augment()
    unlabelled.check(transfer, augment, objective,
                     lambda: student.tokenizer(teacher).get_vocab())
    rows, source = unlabelled.transfer_rows(datamodule, transfer)
    return Plan(task, objective, datamodule, teacher, student, separate,
                check_mode(str(cfg.get("teacher_cache") or "off")),
                runs.resume_path(cfg, output_dir),
                objective.total_epochs(cfg.trainer.max_epochs), transfer, augment, rows, source)


def _sources(datamodule: GlueDataModule, splits: list[str]) -> dict[str, SplitSource]:
    batch_size = datamodule.eval_batch_size
    return {s: SplitSource(datamodule.cache_key(s), len(datamodule.tokenized(s)),
                           lambda s=s: datamodule.teacher_batches(s, batch_size))
            for s in splits}


def prepare(cfg: DictConfig, plan: Plan, results: dict[str, Any]) -> TeacherSide | None:
    """Tokenize, build the unlabelled rows, then get the teacher's logits (cache or forward
    pass) and check its quality.

    Dev logits come first (score, gate, agreement); train logits only once the teacher
    passed the gate, and only when KD logits are all training needs from it.
    """
    dm, task = plan.datamodule, plan.task
    dm.set_tokenizer(plan.student.tokenizer(plan.teacher),
                     plan.teacher.tokenizer(None) if plan.separate_tokenizers else None)
    if plan.teacher is None:
        return None
    builder = TeacherBuilder(plan.teacher, task, cfg.seed)
    results["transfer"] = unlabelled.attach(dm, plan.transfer, plan.augment, plan.transfer_rows,
                                            plan.transfer_source, builder,
                                            Path(cfg.paths.cache_dir))
    cache = TeacherCache(Path(cfg.paths.cache_dir) / "teacher", plan.cache_mode)
    outputs, info = teacher_outputs(builder, cache, _sources(dm, list(task.eval_splits)),
                                    device_of(cfg))
    scores, results["teacher_gate"] = check_teacher(
        task, plan.teacher.name, [outputs[s] for s in task.eval_splits],
        [dm.tokenized(s)["label"] for s in task.eval_splits], dm.tokenized("train")["label"],
        cfg.get("teacher_gate"))
    if plan.objective.train_logits_cached(plan.cache_mode):
        splits = ["train", *(["transfer"] if dm.has_transfer else [])]
        train, train_info = teacher_outputs(builder, cache, _sources(dm, splits),
                                            device_of(cfg))
        outputs.update(train)
        info["splits"].update(train_info["splits"])
    results["teacher_cache"] = info
    dm.set_teacher_logits(outputs)
    return TeacherSide(builder, scores)


def build_module(cfg: DictConfig, plan: Plan, side: TeacherSide | None) -> DistillationModule:
    """The student (and a live teacher, when the objective needs one) in the module."""
    live = side is not None and plan.objective.teacher_live(plan.cache_mode)
    cut = isinstance(plan.student, FromTeacher) and plan.student.source is None
    teacher: PreTrainedModel | None = side.builder.model() if side and (live or cut) else None
    student = plan.student.build(plan.task.num_labels, plan.task.is_regression,
                                 teacher=plan.teacher, teacher_model=teacher)
    teacher = teacher if live else None  # batches carry the teacher's logits: free it
    if cfg.get("compile"):
        # In place (keeps state_dict keys); dynamic: every batch has its own length.
        for model in (student, teacher):
            if model is not None:
                model.compile(dynamic=True)
    return DistillationModule(
        student, teacher, plan.task, plan.objective, optimizer=build(cfg.optimizer),
        scheduler=build(cfg.scheduler) if cfg.get("scheduler") else None,
        cached_teacher=plan.teacher is not None)


def build_trainer(cfg: DictConfig, plan: Plan) -> tuple[L.Trainer, list[Any], EpochTimer,
                                                        PhaseLog]:
    """Loggers, callbacks (plus the epoch timer, phase log and RNG states) and the Trainer."""
    loggers = [build(c) for c in (cfg.get("logger") or {}).values() if c]
    if plan.ckpt_path:
        keep_logged_rows(loggers, int(runs.read_checkpoint(plan.ckpt_path)["global_step"]))
    timer, phases = EpochTimer(), PhaseLog(plan.objective)
    callbacks = [build(c) for c in (cfg.get("callbacks") or {}).values() if c]
    trainer = build(cfg.trainer, max_epochs=plan.max_epochs, logger=loggers or False,
                    callbacks=[*callbacks, timer, phases, RngState()])
    for logger in loggers:
        logger.log_hyperparams(runs.flatten(OmegaConf.to_container(cfg, resolve=True)))
    return trainer, loggers, timer, phases


def validate_best(trainer: L.Trainer, module: DistillationModule,
                  datamodule: GlueDataModule) -> str:
    """Make the module's weights and ``last_val`` the best checkpoint's; return its path.

    An earlier validation was better (1e-6: the callback stores float32 scores), or the final
    weights were never validated: load the best checkpoint and re-validate, so the exported
    student and the reported metrics are the best checkpoint's. Otherwise the weights in
    memory already score best, and another validation pass would be wasted.
    """
    checkpoint = next((c for c in trainer.callbacks if isinstance(c, ModelCheckpoint)), None)
    best = checkpoint.best_model_path if checkpoint is not None else ""
    best_score = checkpoint.best_model_score if checkpoint is not None else None
    stale = not module.last_val or module.last_val_step != trainer.global_step
    if best and best_score is not None and (
            stale or float(best_score) > module.last_val["score"] + 1e-6):
        trainer.validate(module, datamodule=datamodule, ckpt_path=best, verbose=False,
                         weights_only=True)
    elif stale:
        trainer.validate(module, datamodule=datamodule, verbose=False)
    return best


def export_student(student: PreTrainedModel, tokenizer: PreTrainedTokenizerBase,
                   task: TaskSpec, dest: Path) -> Path:
    """``save_pretrained`` model + tokenizer, with label names, written atomically."""
    if task.label_names and not task.is_regression:
        student.config.id2label = dict(enumerate(task.label_names))
        student.config.label2id = {n: i for i, n in enumerate(task.label_names)}

    def fill(tmp: Path) -> None:
        student.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)

    return atomic.write_dir(dest, fill)


def finish(run: runs.RunRecord, cfg: DictConfig, plan: Plan, side: TeacherSide | None,
           module: DistillationModule, trainer: L.Trainer, best: str,
           clocks: tuple[EpochTimer, PhaseLog], loggers: list[Any]) -> dict[str, Any]:
    """Export the best student and write ``results.json`` ``ok`` (rank zero only)."""
    train_seconds = run.seconds()
    check_weights(module.student, "student")  # never export (or call ok) NaN weights
    student_dir = export_student(module.student, plan.datamodule.tokenizer, plan.task,
                                 Path(run.results["run_dir"]) / "student")
    student = runs.model_entry(plan.student.name, module.student, module.last_val, plan.task)
    student["agreement"] = module.last_agreement
    teacher = None
    if side is not None:
        teacher = runs.model_entry(plan.teacher.name, None, side.scores, plan.task)
        teacher.update(params=side.builder.params(), path=side.builder.folder)
    retention = student["score"] / teacher["score"] if teacher and teacher["score"] else None
    results = run.mark_ok(
        student=student, teacher=teacher, retention=retention, train_seconds=train_seconds,
        distill=plan.objective.as_dict(), seed=cfg.seed, best_checkpoint=best or None,
        student_dir=str(student_dir), global_step=trainer.global_step,
        epochs=trainer.current_epoch, phase_starts=[list(p) for p in clocks[1].starts],
        epoch_seconds=clocks[0].epoch_seconds)
    runs.log_results(loggers, results)
    monitors.finish_run(trainer, loggers, results)  # W&B headline keys, disagreement table
    return run.write()


def train(cfg: DictConfig) -> dict[str, Any]:
    """Fine-tune or distill one student as ``cfg`` says; return what results.json holds.

    Args:
        cfg: The composed ``conf/train.yaml`` (never modified).

    Returns:
        The results dict (also written to ``<paths.output_dir>/results.json``).

    Raises:
        ConfigError: Bad input, found before any weights load (results.json says ``failed``).
    """
    output_dir = Path(cfg.paths.output_dir)
    if (done := runs.finished(cfg, output_dir)) is not None:
        log.info("skip_done: %s already finished ok; skipping", output_dir)
        return done
    # Before the record opens: it could not even write its "failed".
    check_writable(output_dir, "run dir (paths.output_dir)")
    with runs.RunRecord(cfg, output_dir) as run:
        progress.apply(cfg.get("progress") or "auto")  # library bars: before any tokenizing
        plan = validate(cfg, output_dir)
        run.results["metric_names"] = plan.task.metric_names
        run.results["label_names"] = list(plan.task.label_names or []) or None
        L.seed_everything(cfg.seed, workers=True)
        side = prepare(cfg, plan, run.results)
        module = build_module(cfg, plan, side)
        # The job as it runs (logged as hyper-parameters, named in loggers); cfg stays as is.
        job = OmegaConf.merge(cfg, {"name": runs.run_name(cfg), "group": runs.run_group(cfg),
                                    "trainer": {"max_epochs": plan.max_epochs}})
        trainer, loggers, timer, phases = build_trainer(job, plan)
        run.is_zero = trainer.is_global_zero
        # weights_only: checkpoints hold tensors and plain types only (RNG states included),
        # so loading one runs no pickled code.
        trainer.fit(module, datamodule=plan.datamodule, ckpt_path=plan.ckpt_path,
                    weights_only=True)
        best = validate_best(trainer, module, plan.datamodule)
        if trainer.is_global_zero:
            finish(run, cfg, plan, side, module, trainer, best, (timer, phases), loggers)
    return run.results


@hydra.main(version_base="1.3", config_path="pkg://litdistill.conf", config_name="train")
def app(cfg: DictConfig) -> float:
    """Hydra app; returns the student's score (for sweepers such as Optuna).

    In a ``--multirun`` a failing job is isolated: its results.json already says
    ``failed`` with the error, the error is logged, and the job returns NaN (Optuna records
    the trial as failed) so the sweep goes on. A single run exits 2 on bad input.
    """
    try:
        results = train(cfg)
    except Exception as err:
        if runs.multirun() and not isinstance(err, LaunchError):
            log.error("job %s failed, the sweep goes on: %s: %s",
                      cfg.paths.output_dir, type(err).__name__, err)
            return math.nan
        if isinstance(err, LitDistillError):
            print(f"error: {err}", file=sys.stderr)
            sys.exit(2)
        raise
    score = (results.get("student") or {}).get("score")
    return math.nan if score is None else float(score)


def main() -> None:
    """``litdistill-train``: check the config folders the command line adds, then run
    :func:`app`. A missing one is bad input: a one-line ``error:`` and exit 2."""
    try:
        check_config_dirs(sys.argv[1:])
        check_group_options(sys.argv[1:])
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    app()


if __name__ == "__main__":
    main()
