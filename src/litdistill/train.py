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
import numpy as np
from lightning.pytorch.callbacks import ModelCheckpoint
from omegaconf import DictConfig, OmegaConf
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from litdistill import general, monitors, progress, runs, unlabelled, vocab
from litdistill.augment import Augment
from litdistill.batching import TEACHER_PREFIX
from litdistill.builders import Setup, build, build_setup
from litdistill.callbacks import EpochTimer, PhaseLog
from litdistill.checks import (
    check_config_dirs,
    check_group_options,
    check_launch,
    check_models,
    device_of,
)
from litdistill.conf import CONF_DIR  # noqa: F401  (litdistill.train.CONF_DIR stays)
from litdistill.data import DataOptions, GlueDataModule, build_datamodule
from litdistill.errors import ConfigError, LaunchError, LitDistillError, fail
from litdistill.finite import check_weights
from litdistill.model_files import size_mb
from litdistill.models import Calibration, FromTeacher, ModelSpec
from litdistill.module import DistillationModule
from litdistill.objective import Objective
from litdistill.outputs import dev_predictions, export_student, write_predictions
from litdistill.reader import Splits, TokenizedSplit, eval_batches
from litdistill.rundir import RunDir
from litdistill.settings import check_max_length, check_writable, validate_settings
from litdistill.tasks import TaskSpec, get_task
from litdistill.teacher_cache import TeacherCache, check_mode
from litdistill.teachers import SplitSource, TeacherBuilder, check_teacher, teacher_outputs
from litdistill.transfer import TransferSet

log = logging.getLogger("litdistill")
# The frozen teacher is in eval mode on purpose; Lightning warns about any such module.
warnings.filterwarnings("ignore", message=r".*module\(s\) in eval mode.*")


@dataclass(frozen=True)
class Plan:
    """A validated run: everything decided before any weights load."""

    task: TaskSpec
    objective: Objective
    data: DataOptions
    splits: Splits  # the raw splits, read and validated
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
    data: DataOptions = build(cfg.data)
    splits = data.read(task, OmegaConf.to_container(data_files, resolve=True)
                       if data_files else None)
    task = splits.task  # a custom task's classes may come from its training file
    teacher = build(cfg.teacher) if cfg.get("teacher") else None
    student = build(cfg.student)
    transfer = build(cfg.transfer) if cfg.get("transfer") else TransferSet()
    rows, source = unlabelled.transfer_rows(splits, transfer,
                                            [data.max_train_samples, data.subset_seed])
    student.fit_vocab(vocab.run_texts(splits, rows), teacher)  # student.vocab=task
    separate = check_models(task, teacher, student, objective,
                            data.separate_tokenizers or student.vocab != "full")
    check_max_length(data.max_length, teacher, student)
    augment = build(cfg.augment) if cfg.get("augment") else Augment()
    unlabelled.check(transfer, augment, objective,
                     lambda: student.tokenizer(teacher).get_vocab())
    return Plan(task, objective, data, splits, teacher, student, separate,
                check_mode(str(cfg.get("teacher_cache") or "off")),
                runs.resume_path(cfg, output_dir),
                objective.total_epochs(cfg.trainer.max_epochs), transfer, augment, rows, source)


def _sources(tokenized: dict[str, TokenizedSplit], tokenizer: PreTrainedTokenizerBase,
             teacher_tokenizer: PreTrainedTokenizerBase | None,
             batch_size: int) -> dict[str, SplitSource]:
    # The teacher reads its own tokenization when the vocabularies differ.
    prefix = TEACHER_PREFIX if teacher_tokenizer is not None else ""
    pad = teacher_tokenizer or tokenizer
    return {s: SplitSource(t.key, len(t.data),
                           lambda t=t: eval_batches(t.data, pad, batch_size, prefix=prefix))
            for s, t in tokenized.items()}


def _teacher_logits(cfg: DictConfig, plan: Plan, builder: TeacherBuilder,
                    sources: dict[str, SplitSource], labels: dict[str, list],
                    results: dict[str, Any]) -> tuple[TeacherSide, dict[str, np.ndarray]]:
    """Dev logits first (score, gate, agreement); train (and transfer) logits only once the
    teacher passed the gate, and only when KD logits are all training needs from it."""
    task, evals = plan.task, list(plan.task.eval_splits)
    cache = TeacherCache(Path(cfg.paths.cache_dir) / "teacher", plan.cache_mode)
    outputs, info = teacher_outputs(builder, cache, {s: sources[s] for s in evals},
                                    device_of(cfg))
    scores, results["teacher_gate"] = check_teacher(
        task, plan.teacher.name, [outputs[s] for s in evals], [labels[s] for s in evals],
        labels["train"], cfg.get("teacher_gate"))
    if plan.objective.train_logits_cached(plan.cache_mode):
        rest = {s: source for s, source in sources.items() if s not in evals}
        train, train_info = teacher_outputs(builder, cache, rest, device_of(cfg))
        outputs.update(train)
        info["splits"].update(train_info["splits"])
    results["teacher_cache"] = info
    return TeacherSide(builder, scores), outputs


def prepare(cfg: DictConfig, plan: Plan, results: dict[str, Any]
            ) -> tuple[GlueDataModule, TeacherSide | None]:
    """The data, one way: raw splits -> unlabelled rows (transfer set, augmentation) ->
    tokenized splits -> the teacher's logits (cache or forward pass, quality gate) -> the
    DataModule, assembled once."""
    task, data = plan.task, plan.data
    tokenizer = plan.student.tokenizer(plan.teacher)
    if plan.teacher is None:
        return build_datamodule(data, plan.splits, tokenizer), None
    teacher_tokenizer = plan.teacher.tokenizer(None) if plan.separate_tokenizers else None
    builder = TeacherBuilder(plan.teacher, task, cfg.seed)
    wanted = unlabelled.Unlabelled(plan.transfer, plan.augment, plan.transfer_rows,
                                   plan.transfer_source,
                                   [data.max_train_samples, data.subset_seed])
    splits, results["transfer"] = unlabelled.with_unlabelled(
        plan.splits, wanted, builder, teacher_tokenizer or tokenizer, Path(cfg.paths.cache_dir))
    tokenized = data.tokenize(splits, tokenizer, teacher_tokenizer)
    sources = _sources(tokenized, tokenizer, teacher_tokenizer, data.eval_batch_size)
    labels = {s: t.data["label"] for s, t in tokenized.items() if s != "transfer"}
    side, logits = _teacher_logits(cfg, plan, builder, sources, labels, results)
    datamodule = GlueDataModule(task, {s: t.data for s, t in tokenized.items()}, tokenizer,
                                data, teacher_tokenizer, logits)
    return datamodule, side


def build_module(cfg: DictConfig, plan: Plan, side: TeacherSide | None, setup: Setup,
                 datamodule: GlueDataModule) -> DistillationModule:
    """The student (and a live teacher, when the objective needs one) in the module."""
    live = side is not None and plan.objective.teacher_live(plan.cache_mode)
    cut = isinstance(plan.student, FromTeacher) and plan.student.source is None
    teacher: PreTrainedModel | None = side.builder.model() if side and (live or cut) else None
    student = plan.student.build(plan.task.num_labels, plan.task.is_regression,
                                 teacher=plan.teacher, teacher_model=teacher,
                                 calibration=Calibration.of(datamodule, cut,
                                                            plan.student.kept_ids))
    teacher = teacher if live else None  # batches carry the teacher's logits: free it
    if cfg.get("compile"):
        # In place (keeps state_dict keys); dynamic: every batch has its own length.
        for model in (student, teacher):
            if model is not None:
                model.compile(dynamic=True)
    return DistillationModule(
        student, teacher, plan.task, plan.objective, optimizer=setup.optimizer,
        scheduler=setup.scheduler, cached_teacher=plan.teacher is not None)


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


def finish(run: runs.RunRecord, cfg: DictConfig, plan: Plan, side: TeacherSide | None,
           module: DistillationModule, trainer: L.Trainer, best: str,
           clocks: tuple[EpochTimer, PhaseLog], loggers: list[Any]) -> dict[str, Any]:
    """Export the best student and write ``results.json`` ``ok`` (rank zero only)."""
    train_seconds = run.seconds()
    check_weights(module.student, "student")  # never export (or call ok) NaN weights
    run_dir, dm = RunDir(run.results["run_dir"]), trainer.datamodule
    student_dir = export_student(module.student, dm.tokenizer, plan.task, run_dir.student_dir)
    predictions = dev_predictions(module.student, dm.tokenizer, dm.splits,
                                  list(plan.task.eval_splits), dm.eval_batch_size, module.device)
    write_predictions(run_dir.predictions_path, predictions)
    student = runs.model_entry(plan.student.name, module.student, module.last_val, plan.task)
    student["agreement"] = module.last_agreement
    student.update(vocab_size=module.student.config.vocab_size, size_mb=size_mb(student_dir))
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
    table = monitors.disagreement_rows(predictions, plan.splits.raw[plan.task.eval_splits[0]],
                                       plan.task, monitors.table_size(trainer))
    monitors.finish_run(loggers, results, table)  # W&B headline keys, disagreement table
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
    if general.is_general(cfg):  # task-agnostic distillation on a corpus: litdistill.general
        return general.train_general(cfg)
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
        # The job as it runs (logged as hyper-parameters, named in loggers); cfg stays as is.
        job = OmegaConf.merge(cfg, {"name": runs.run_name(cfg), "group": runs.run_group(cfg),
                                    "trainer": {"max_epochs": plan.max_epochs}})
        # Every configured object, before any weights load.
        setup = build_setup(job, plan.objective, plan.ckpt_path, plan.max_epochs)
        trainer = setup.trainer
        run.is_zero = trainer.is_global_zero
        datamodule, side = prepare(cfg, plan, run.results)
        module = build_module(cfg, plan, side, setup, datamodule)
        setup.log_config(job)
        # weights_only: checkpoints hold tensors and plain types only (RNG states included),
        # so loading one runs no pickled code.
        trainer.fit(module, datamodule=datamodule, ckpt_path=plan.ckpt_path,
                    weights_only=True)
        best = validate_best(trainer, module, datamodule)
        if trainer.is_global_zero:
            finish(run, cfg, plan, side, module, trainer, best, (setup.timer, setup.phases),
                   setup.loggers)
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
            sys.exit(fail(err))
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
        sys.exit(fail(err))
    app()


if __name__ == "__main__":
    main()
