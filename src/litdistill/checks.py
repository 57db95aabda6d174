"""Checks that need configs and tokenizers but no weights: run before anything is built."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import torch
from hydra._internal.utils import get_args_parser
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException
from omegaconf import DictConfig

from litdistill.errors import ConfigError, LaunchError
from litdistill.models import ModelSpec, Pretrained
from litdistill.objective import Objective
from litdistill.runs import multirun
from litdistill.tasks import TaskSpec
from litdistill.terms import check_terms


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
    if not multirun():
        return
    launcher = str(HydraConfig.get().launcher.get("_target_", ""))
    if not launcher.endswith(".SlurmLauncher"):
        raise LaunchError(
            f"trainer.strategy={strategy} with several devices cannot run inside a --multirun "
            "with the basic, joblib or submitit-local launcher (each rank would relaunch the "
            "sweep); use one device per job (hardware=cpu/gpu), strategy=ddp_spawn, or "
            "hydra/launcher=slurm (one SLURM task per GPU)"
        )


def check_config_dirs(argv: list[str]) -> None:
    """Every config folder the command line adds must exist.

    ``--config-dir DIR`` (``-cd``) and ``hydra.searchpath=[file://DIR, pkg://module]`` add the
    user's own tasks, students and experiments. Hydra 1.3 stops on a missing ``--config-dir``
    with a multi-line report (exit 1) and only *warns* about a missing search-path entry, so a
    typo surfaces later as "Could not find 'task/...'"; this names the folder instead.

    Raises:
        ConfigError: A folder (or module) that does not exist.
    """
    # The very parser @hydra.main runs next (Hydra 1.3 exposes no public one), so flags read
    # as Hydra reads them (`-c job` is --cfg, not an abbreviation of -cd).
    args = get_args_parser().parse_args(argv)
    if args.config_dir is not None and not Path(args.config_dir).is_dir():
        raise ConfigError(f"--config-dir {args.config_dir}: no such folder")
    for arg in args.overrides:
        if arg.lstrip("+").split("=", 1)[0] != "hydra.searchpath":
            continue
        try:
            entries = OverridesParser.create().parse_overrides([arg])[0].value()
        except HydraException:
            return  # malformed: Hydra's own parser reports it
        for entry in entries if isinstance(entries, list) else []:
            scheme, _, where = str(entry).rpartition("://")
            if scheme == "pkg":
                try:
                    found = importlib.util.find_spec(where) is not None
                except ModuleNotFoundError:
                    found = False
                if not found:
                    raise ConfigError(f"hydra.searchpath entry {entry}: no such module")
            elif scheme in ("", "file") and not Path(where).is_dir():
                raise ConfigError(f"hydra.searchpath entry {entry}: no such folder")


def check_group_options(argv: list[str]) -> None:
    """Every option the command line picks for a config group must exist (``transfer=web``).

    Hydra would stop on it too, but with a multi-line report and exit code 1; this names the
    group's options in one line. Groups are the folders of our configs and of the user's
    ``--config-dir``; ``hydra/*`` groups (Hydra's plugins) are left to Hydra.

    Raises:
        ConfigError: An option with no ``<group>/<option>.yaml`` in any config folder.
    """
    args = get_args_parser().parse_args(argv)
    roots = [Path(__file__).resolve().parent / "conf"]
    if args.config_dir is not None:
        roots.append(Path(args.config_dir))
    wanted = [a for a in args.overrides if not a.lstrip("+~").startswith("hydra")]
    try:
        overrides = OverridesParser.create().parse_overrides(wanted)
    except HydraException:
        return  # malformed: Hydra's own parser reports it
    for override in overrides:
        group = override.key_or_group
        folders = [r / group for r in roots if (r / group).is_dir()]
        if override.is_delete() or "." in group or not folders:
            continue
        values = (list(override.sweep_string_iterator()) if override.is_sweep_override()
                  else [override.value()])
        options = sorted({f.stem for d in folders for f in d.glob("*.yaml")})
        for value in values:
            if value is not None and str(value) != "null" and str(value) not in options:
                raise ConfigError(f"{group}={value}: no such option; {group} options: "
                                  f"{', '.join(options)}")


def check_models(task: TaskSpec, teacher: ModelSpec | None, student: ModelSpec,
                 objective: Objective, separate_tokenizers: bool = False) -> bool:
    """Vocabulary, label-count and layer checks that need configs and tokenizers, not weights.

    Returns:
        Whether teacher and student need their own tokenizations (vocabularies differ and
        ``separate_tokenizers`` allows it).
    """
    s_config = student.hf_config(teacher)  # resolves paths and layer lists; raises on bad ones
    if teacher is None:
        if objective.needs_teacher:
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
    terms = objective.terms
    if separate and terms:
        raise ConfigError(
            f"intermediate terms {sorted(terms)} compare token positions, which differ between "
            "two tokenizers; with separate tokenizers only logit-level KD works (distill=kd)")
    if terms:
        check_terms(terms, s_config, teacher.hf_config(None))  # layer maps, heads, widths
    config = teacher.hf_config(None)
    if teacher.has_classifier and config.num_labels != task.num_labels:
        raise ConfigError(
            f"teacher {teacher.name} predicts {config.num_labels} labels but task "
            f"{task.name} has {task.num_labels}; use a teacher fine-tuned on {task.name}"
        )
    if objective.uses_logits and isinstance(teacher, Pretrained) and not teacher.has_classifier:
        raise ConfigError(
            f"teacher {teacher.name} has no fine-tuned classification head, so its soft "
            f"targets would be noise; fine-tune it first (teacher=none student=pretrained "
            f"student.name_or_path={teacher.name} distill=none) and use its run's student/ "
            "folder as the teacher"
        )
    return separate


def device_of(cfg: DictConfig) -> torch.device:
    """Where this process's model runs (for the teacher pass before the trainer starts)."""
    accelerator = str(cfg.trainer.get("accelerator", "auto"))
    if accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available()):
        # SLURM sets SLURM_LOCALID per task before Lightning sets LOCAL_RANK.
        rank = os.environ.get("LOCAL_RANK", os.environ.get("SLURM_LOCALID", 0))
        return torch.device("cuda", int(rank))
    return torch.device("cpu")
