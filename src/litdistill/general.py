"""General (task-agnostic) distillation: a headless student learns from a teacher on raw text.

``litdistill-train distill=tinybert_general corpus=files 'corpus.files=[wiki.txt]'
teacher=zoo teacher.name=minilm_l6 student=tinybert_4l``. :func:`train.train
<litdistill.train.train>` hands a run here when its ``distill`` is a
:class:`GeneralObjective`; there is no task head, dev metric or teacher gate. The run writes
``results.json`` (``kind: general``: corpus, tokens seen, final and held-out losses, time,
student parameters) and ``student/`` (``save_pretrained`` + tokenizer), which a task run
starts from with ``student=pretrained student.name_or_path=<run>/student``. Checkpoints
(``last.ckpt`` every N steps) and ``resume=true`` work as in task distillation.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import datasets
import lightning as L
import torch
from omegaconf import DictConfig, OmegaConf
from transformers import (
    AutoModel,
    AutoModelForMaskedLM,
    PretrainedConfig,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from litdistill import pruning, runs
from litdistill.builders import build, build_option
from litdistill.callbacks import RngState
from litdistill.corpus import Corpus
from litdistill.cutting import cut_layers
from litdistill.errors import ConfigError
from litdistill.finite import check_weights
from litdistill.general_module import GeneralDataModule, GeneralDistillationModule, Masking
from litdistill.intermediate import IntermediateTerms
from litdistill.models import FromTeacher, ModelSpec, Pretrained, Pruned, count_params
from litdistill.objective import TERMS
from litdistill.outputs import export_student
from litdistill.rundir import RunDir
from litdistill.settings import check_writable
from litdistill.terms import make_term

log = logging.getLogger("litdistill")
KINDS = ("tinybert", "minilm", "distilbert")
TARGET = f"{__name__}.GeneralObjective"


@dataclass
class GeneralObjective:
    """What a general-distillation student learns from (``conf/distill/*_general.yaml``).

    Attributes:
        kind: ``tinybert`` (embedding + hidden MSE + attention scores), ``minilm`` (last-layer
            attention + value relations) or ``distilbert`` (MLM soft targets + MLM + cosine;
            the teacher needs its MLM head).
        terms: Intermediate terms as in task distillation (``{name: {weight, ...}}``).
        temperature: Temperature of the soft-target KL over MLM logits.
        alpha_kd: Weight of that KL (``distilbert`` only).
        alpha_mlm: Weight of the student's own MLM loss (``distilbert`` only).
        mlm_probability: Share of tokens masked per batch (dynamic masking, 80/10/10).
    """

    kind: str
    terms: dict[str, Any] = field(default_factory=dict)  # {name: Term} once built
    temperature: float = 1.0
    alpha_kd: float = 0.0
    alpha_mlm: float = 0.0
    mlm_probability: float = 0.15

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ConfigError(f"distill.kind={self.kind!r}: one of {', '.join(KINDS)}")
        if unknown := sorted(set(self.terms or {}) - set(TERMS)):
            raise ConfigError(f"unknown distill.terms {unknown}; known: {sorted(TERMS)}")
        # Typed as in task distillation: a misspelled option or kind is an error here.
        self.terms = {k: make_term(k, v) for k, v in (self.terms or {}).items()}
        mlm = self.alpha_kd or self.alpha_mlm
        if mlm and self.kind != "distilbert":
            raise ConfigError("distill.alpha_kd/alpha_mlm (MLM logits) are for "
                              "kind=distilbert only")
        if not (self.terms or mlm):
            raise ConfigError("the general objective has no term: set distill.terms or "
                              "distill.alpha_kd/alpha_mlm")
        if self.temperature <= 0 or not 0 < self.mlm_probability < 1:
            raise ConfigError("distill.temperature must be > 0 and distill.mlm_probability "
                              "in (0, 1)")
        for name, value in [("alpha_kd", self.alpha_kd), ("alpha_mlm", self.alpha_mlm),
                            *((f"terms.{n}.weight", o.weight) for n, o in self.terms.items())]:
            if float(value) < 0:
                raise ConfigError(f"distill.{name}={value}: must be >= 0")

    @property
    def needs_mlm_head(self) -> bool:
        return self.kind == "distilbert"

    def as_dict(self) -> dict[str, Any]:
        """results.json's ``distill`` entry: every option, terms with all of theirs."""
        return {"kind": self.kind, "terms": {n: t.as_dict() for n, t in self.terms.items()},
                "temperature": self.temperature, "alpha_kd": self.alpha_kd,
                "alpha_mlm": self.alpha_mlm, "mlm_probability": self.mlm_probability}


def is_general(cfg: DictConfig) -> bool:
    """Whether ``cfg`` asks for general distillation (a general objective or a corpus)."""
    distill = cfg.get("distill") or {}
    return distill.get("_target_") == TARGET or bool(cfg.get("corpus"))


def has_mlm_head(config: PretrainedConfig | None) -> bool:
    """Decided from the config: its architectures name a masked-LM or pre-training head."""
    names = (config.architectures or ()) if config is not None else ()
    return any(a.endswith(("ForMaskedLM", "ForPreTraining")) for a in names)


@dataclass(frozen=True)
class GeneralPlan:
    """A validated general run: everything decided before any weights load."""

    objective: GeneralObjective
    corpus: Corpus
    teacher: ModelSpec
    student: ModelSpec
    tokenizer: PreTrainedTokenizerBase
    ckpt_path: str | None


def validate(cfg: DictConfig, output_dir: Path) -> GeneralPlan:
    """Objective, corpus, models and vocabularies: every cheap check, before any weights."""
    if (cfg.get("distill") or {}).get("_target_") != TARGET:
        raise ConfigError("a corpus is for general distillation: use distill=tinybert_general, "
                          "minilm_general or distilbert_general (or drop corpus=..., "
                          "i.e. corpus=none, for task distillation)")
    objective: GeneralObjective = build(cfg.distill)
    if not cfg.get("corpus"):
        raise ConfigError(f"distill={objective.kind}_general needs a corpus: corpus=files "
                          "'corpus.files=[text.txt]' or corpus=local")
    corpus: Corpus = build(cfg.corpus)
    if not cfg.get("teacher"):
        raise ConfigError("general distillation needs a teacher (teacher=zoo, pretrained, "
                          "tiny)")
    teacher, student = build(cfg.teacher), build(cfg.student)
    if objective.needs_mlm_head and isinstance(teacher, Pretrained) and \
            not has_mlm_head(teacher.hf_config(None)):
        raise ConfigError(f"distill=distilbert_general needs a teacher with its masked-LM "
                          f"head, but {teacher.name} is {teacher.hf_config(None).architectures}"
                          "; use a *ForMaskedLM checkpoint or tinybert_general/minilm_general")
    s_config, t_config = student.hf_config(teacher), teacher.hf_config(None)
    if objective.terms and s_config is not None and t_config is not None:
        IntermediateTerms(objective.terms, s_config, t_config)  # layer maps, head counts
    if student.vocab != "full":
        raise ConfigError(f"student.vocab={student.vocab}: general distillation reads the "
                          "teacher's whole vocabulary; prune it in the task run that follows "
                          "(student=pretrained student.name_or_path=<run>/student "
                          "student.vocab=task)")
    if isinstance(student, Pruned) and student.importance != "activation":
        raise ConfigError(f"student.importance={student.importance} needs a task head's "
                          "logits; general distillation prunes by activation")
    tokenizer = student.tokenizer(teacher)
    if tokenizer.get_vocab() != teacher.tokenizer(None).get_vocab():
        raise ConfigError("general distillation compares token by token: the student needs "
                          "the teacher's vocabulary (drop student.tokenizer_name)")
    return GeneralPlan(objective, corpus, teacher, student, tokenizer,
                       runs.resume_path(cfg, output_dir))


def _auto(objective: GeneralObjective) -> type:
    return AutoModelForMaskedLM if objective.needs_mlm_head else AutoModel


def build_teacher(plan: GeneralPlan) -> PreTrainedModel:
    """The teacher without a task head (with its MLM head for DistilBERT)."""
    auto = _auto(plan.objective)
    if isinstance(plan.teacher, Pretrained):
        return auto.from_pretrained(plan.teacher.path, dtype=torch.float32)
    return auto.from_config(plan.teacher.hf_config(None))  # a random (test) teacher


def build_student(plan: GeneralPlan, teacher: PreTrainedModel,
                  corpus: datasets.Dataset) -> PreTrainedModel:
    """The student as its spec says, without a task head: Sized (random), Pretrained
    (loaded), FromTeacher (layers cut from the teacher or its ``source``) or Pruned (cut in
    depth and width, importance measured on rows of the tokenized ``corpus``)."""
    auto, spec = _auto(plan.objective), plan.student
    if isinstance(spec, FromTeacher):
        source = teacher if spec.source is None else auto.from_pretrained(spec.source.path)
        if isinstance(spec, Pruned):
            return pruning.prune(source, spec.shape(source.config),
                                 pruning.Calibration([corpus], plan.tokenizer), spec.rows,
                                 spec.seed, spec.importance, auto)
        return cut_layers(source, spec.layers, auto)
    if isinstance(spec, Pretrained):
        return auto.from_pretrained(spec.path, dtype=torch.float32)
    return auto.from_config(spec.hf_config(plan.teacher))


def _masking(plan: GeneralPlan) -> Masking | None:
    if not plan.objective.needs_mlm_head:
        return None
    tok = plan.tokenizer
    if tok.mask_token_id is None:
        raise ConfigError("distilbert_general masks tokens, but the tokenizer has no [MASK]")
    return Masking(tok.mask_token_id, len(tok), tuple(tok.all_special_ids),
                   plan.objective.mlm_probability)


def build_trainer(cfg: DictConfig, plan: GeneralPlan) -> tuple[L.Trainer, list[Any]]:
    """Loggers, callbacks (the best checkpoint by held-out loss) and the Trainer."""
    loggers = [build_option(f"logger.{k}", c) for k, c in (cfg.get("logger") or {}).items()
               if c]
    nodes = OmegaConf.to_container(cfg.get("callbacks") or {}, resolve=True)
    if nodes.get("model_checkpoint"):
        nodes["model_checkpoint"].update(monitor="val/loss", mode="min",
                                         filename="step{step:07d}")
    callbacks = [build_option(f"callbacks.{k}", c) for k, c in nodes.items() if c]
    trainer = build_option("trainer", cfg.trainer, logger=loggers or False,
                           callbacks=[*callbacks, RngState()])
    for logger in loggers:
        logger.log_hyperparams(runs.flatten(OmegaConf.to_container(cfg, resolve=True)))
    return trainer, loggers


def train_general(cfg: DictConfig) -> dict[str, Any]:
    """Run general distillation as ``cfg`` says; return what results.json holds.

    Raises:
        ConfigError: Bad input, found before any weights load (results.json: ``failed``).
    """
    output_dir = Path(cfg.paths.output_dir)
    if (done := runs.finished(cfg, output_dir)) is not None:
        return done
    check_writable(output_dir, "run dir (paths.output_dir)")
    with runs.RunRecord(cfg, output_dir) as run:
        run.results.update(kind="general", task=None)
        plan = validate(cfg, output_dir)
        run.results["corpus"] = plan.corpus.describe()
        L.seed_everything(cfg.seed, workers=True)
        splits = plan.corpus.tokenized(plan.tokenizer)
        run.results["corpus"].update(rows={k: len(v) for k, v in splits.items()})
        datamodule = GeneralDataModule(splits, plan.tokenizer, cfg.data.batch_size,
                                       cfg.data.eval_batch_size, cfg.data.seed)
        teacher = build_teacher(plan)
        student = build_student(plan, teacher, splits["train"])
        module = GeneralDistillationModule(
            student, teacher, plan.objective, build(cfg.optimizer),
            build(cfg.scheduler) if cfg.get("scheduler") else None, _masking(plan), cfg.seed)
        trainer, loggers = build_trainer(cfg, plan)
        run.is_zero = trainer.is_global_zero
        trainer.fit(module, datamodule=datamodule, ckpt_path=plan.ckpt_path, weights_only=True)
        if trainer.is_global_zero:
            finish(run, cfg, plan, module, trainer, loggers)
    return run.results


def finish(run: runs.RunRecord, cfg: DictConfig, plan: GeneralPlan,
           module: GeneralDistillationModule, trainer: L.Trainer,
           loggers: list[Any]) -> dict[str, Any]:
    """Export the final student and write ``results.json`` ``ok``."""
    seconds = run.seconds()
    check_weights(module.student, "student")
    dest = export_student(module.student, plan.tokenizer, None,
                          RunDir(run.results["run_dir"]).student_dir)
    metrics = trainer.callback_metrics
    train_loss = metrics.get("train/loss")
    results = run.mark_ok(
        student={"name": plan.student.name, "params": count_params(module.student),
                 "score": None},
        teacher={"name": plan.teacher.name, "params": count_params(module.teacher)},
        retention=None, distill=plan.objective.as_dict(), seed=cfg.seed,
        tokens_seen=module.tokens_seen, train_loss=float(train_loss) if train_loss is not None
        else None, heldout_loss=module.last_val_loss, train_seconds=seconds,
        tokens_per_second=round(module.tokens_seen / max(seconds, 1e-9), 1),
        student_dir=str(dest), global_step=trainer.global_step, epochs=trainer.current_epoch)
    runs.log_results(loggers, results)
    return run.write()
