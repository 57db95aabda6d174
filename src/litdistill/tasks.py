"""The task table: what each GLUE task reads, predicts and is scored on.

One frozen :class:`TaskSpec` per task, in the spirit of ``task_to_keys`` in transformers'
``run_glue.py``, plus the GLUE TSV layout of each task so local copies of the official
``glue_data`` folders load without the Hub. ``custom`` tasks are declared in config only.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from litdistill.errors import ConfigError

# Metrics a task may use; the names are the keys under ``student.metrics`` in results.json.
METRICS = ("accuracy", "f1", "matthews_correlation", "pearson", "spearmanr")


@dataclass(frozen=True)
class TsvLayout:
    """Where the fields of a GLUE TSV file live.

    Attributes:
        header: Whether the first line is a header (CoLA has none).
        text_columns: Column index of each text field, in ``TaskSpec.text_fields`` order.
        label_column: Column index of the label (negative counts from the end, as MNLI's
            ``gold_label`` is last in both train and dev files, whose widths differ).
        min_columns: Rows with fewer columns are malformed.
    """

    header: bool
    text_columns: tuple[int, ...]
    label_column: int
    min_columns: int


@dataclass(frozen=True)
class TaskSpec:
    """Everything the data, model and metric code needs to know about one task.

    Attributes:
        name: Config name (``task.name``).
        text_fields: One field (single sentence) or two (sentence pair).
        num_labels: Classes, or 1 for regression.
        is_regression: STS-B style real-valued target.
        metrics: Metric names from :data:`METRICS`; the score is their mean.
        label_names: Label strings as written in the files, in id order (None: already ints
            or floats).
        eval_splits: Split names evaluated each validation epoch (MNLI has two).
        glue_dir_name: Folder under ``GLUE_DIR`` (None for non-GLUE tasks).
        split_files: File name of each split inside that folder.
        tsv: The TSV layout of those files.
        hub: ``datasets.load_dataset`` arguments for the Hub copy.
        label_field: Column holding the label in Hub/local-file datasets.
        zoo: Zoo data asset holding ``split_files`` (see :mod:`litdistill.zoo`).
        binarize_at: Turn a real-valued ``label_field`` into ``value > binarize_at``, dropping
            rows exactly at the threshold (neither class).
        infer_labels: A custom classification task without ``label_names``/``num_labels``:
            its classes are read from the training file (:func:`with_labels_from`).
        labels_from: The file the classes were read from (named in label errors).
    """

    name: str
    text_fields: tuple[str, ...]
    num_labels: int
    metrics: tuple[str, ...]
    is_regression: bool = False
    label_names: tuple[str, ...] | None = None
    eval_splits: tuple[str, ...] = ("validation",)
    glue_dir_name: str | None = None
    split_files: Mapping[str, str] = field(default_factory=dict)
    tsv: TsvLayout | None = None
    hub: tuple[str, ...] | None = None
    label_field: str = "label"
    zoo: str | None = None
    binarize_at: float | None = None
    infer_labels: bool = False
    labels_from: str | None = None

    @property
    def metric_names(self) -> list[str]:
        """Flat metric names; with several eval splits each gets the split's suffix."""
        if len(self.eval_splits) == 1:
            return list(self.metrics)
        return [f"{m}_{split_suffix(s)}" for s in self.eval_splits for m in self.metrics]


def split_suffix(split: str) -> str:
    """``validation_matched`` -> ``matched``; used to name MNLI's two metric sets."""
    return split.removeprefix("validation_")


_DEV = {"train": "train.tsv", "validation": "dev.tsv"}
_BINARY = ("0", "1")
_NLI2 = ("entailment", "not_entailment")

# GLUE layouts follow the official glue_data files (and HF's glue loading script): columns
# are indices so header spelling and MRPC's byte-order mark do not matter.
GLUE_TASKS: dict[str, TaskSpec] = {
    "cola": TaskSpec(
        "cola", ("sentence",), 2, ("matthews_correlation",), label_names=_BINARY,
        glue_dir_name="CoLA", split_files=_DEV, hub=("glue", "cola"),
        tsv=TsvLayout(header=False, text_columns=(3,), label_column=1, min_columns=4),
    ),
    "sst2": TaskSpec(
        "sst2", ("sentence",), 2, ("accuracy",), label_names=_BINARY,
        glue_dir_name="SST-2", split_files=_DEV, hub=("glue", "sst2"),
        tsv=TsvLayout(header=True, text_columns=(0,), label_column=1, min_columns=2),
    ),
    "mrpc": TaskSpec(
        "mrpc", ("sentence1", "sentence2"), 2, ("f1", "accuracy"), label_names=_BINARY,
        glue_dir_name="MRPC", split_files=_DEV, hub=("glue", "mrpc"),
        tsv=TsvLayout(header=True, text_columns=(3, 4), label_column=0, min_columns=5),
    ),
    "stsb": TaskSpec(
        "stsb", ("sentence1", "sentence2"), 1, ("pearson", "spearmanr"), is_regression=True,
        glue_dir_name="STS-B", split_files=_DEV, hub=("glue", "stsb"),
        tsv=TsvLayout(header=True, text_columns=(7, 8), label_column=-1, min_columns=10),
    ),
    "qqp": TaskSpec(
        "qqp", ("question1", "question2"), 2, ("f1", "accuracy"), label_names=_BINARY,
        glue_dir_name="QQP", split_files=_DEV, hub=("glue", "qqp"),
        tsv=TsvLayout(header=True, text_columns=(3, 4), label_column=5, min_columns=6),
    ),
    "mnli": TaskSpec(
        "mnli", ("premise", "hypothesis"), 3, ("accuracy",),
        label_names=("entailment", "neutral", "contradiction"),
        eval_splits=("validation_matched", "validation_mismatched"),
        glue_dir_name="MNLI",
        split_files={
            "train": "train.tsv",
            "validation_matched": "dev_matched.tsv",
            "validation_mismatched": "dev_mismatched.tsv",
        },
        hub=("glue", "mnli"),
        tsv=TsvLayout(header=True, text_columns=(8, 9), label_column=-1, min_columns=12),
    ),
    "qnli": TaskSpec(
        "qnli", ("question", "sentence"), 2, ("accuracy",), label_names=_NLI2,
        glue_dir_name="QNLI", split_files=_DEV, hub=("glue", "qnli"),
        tsv=TsvLayout(header=True, text_columns=(1, 2), label_column=3, min_columns=4),
    ),
    "rte": TaskSpec(
        "rte", ("sentence1", "sentence2"), 2, ("accuracy",), label_names=_NLI2,
        glue_dir_name="RTE", split_files=_DEV, hub=("glue", "rte"),
        tsv=TsvLayout(header=True, text_columns=(1, 2), label_column=3, min_columns=4),
    ),
    "wnli": TaskSpec(
        "wnli", ("sentence1", "sentence2"), 2, ("accuracy",), label_names=_BINARY,
        glue_dir_name="WNLI", split_files=_DEV, hub=("glue", "wnli"),
        tsv=TsvLayout(header=True, text_columns=(1, 2), label_column=3, min_columns=4),
    ),
}


# Rotten Tomatoes snippets rated by humans from -4 to +4 (Hutto & Gilbert 2014; the sentence
# pool SST was built from), shipped in the vaderSentiment sdist: see the zoo. A fixed 80/10/10
# split by row id; the binary task drops the 37 snippets rated exactly 0.
_MOVIE_FILES = {"train": "train.jsonl", "validation": "dev.jsonl", "test": "test.jsonl"}
ZOO_TASKS: dict[str, TaskSpec] = {
    "movie_sentiment": TaskSpec(
        "movie_sentiment", ("sentence",), 2, ("accuracy",), label_names=("negative", "positive"),
        split_files=_MOVIE_FILES, zoo="movie_sentiment", label_field="rating", binarize_at=0.0,
    ),
    "movie_sentiment_reg": TaskSpec(
        "movie_sentiment_reg", ("sentence",), 1, ("pearson", "spearmanr"), is_regression=True,
        split_files=_MOVIE_FILES, zoo="movie_sentiment", label_field="rating",
    ),
}
TASKS: dict[str, TaskSpec] = GLUE_TASKS | ZOO_TASKS


def known_tasks() -> list[str]:
    """Names accepted by ``task.name``."""
    return [*TASKS, "custom"]


def get_task(cfg: Mapping[str, Any]) -> TaskSpec:
    """Resolve the task config (``cfg.task``) into a :class:`TaskSpec`.

    Args:
        cfg: The ``task`` config node: ``name`` plus, for ``custom``, ``text_fields``,
            ``label_field``, ``num_labels``, ``is_regression`` and ``metrics``.

    Raises:
        ConfigError: Unknown task name or an inconsistent custom task.
    """
    name = cfg.get("name")
    if name in TASKS:
        return TASKS[name]
    if name != "custom":
        raise ConfigError(f"unknown task {name!r}; known tasks: {', '.join(known_tasks())}")
    text_fields = tuple(cfg.get("text_fields") or ())
    if not 1 <= len(text_fields) <= 2:
        raise ConfigError(
            f"task=custom needs task.text_fields with one or two column names, got {text_fields}"
        )
    is_regression = bool(cfg.get("is_regression", False))
    num_labels, label_names = _custom_labels(cfg, is_regression)
    default_metrics = ("pearson", "spearmanr") if is_regression else ("accuracy",)
    metrics = tuple(cfg.get("metrics") or default_metrics)
    if unknown := [m for m in metrics if m not in METRICS]:
        raise ConfigError(f"unknown metrics {unknown} for task=custom; choose from {METRICS}")
    if not is_regression and {"pearson", "spearmanr"} & set(metrics):
        raise ConfigError("pearson/spearmanr need task.is_regression=true")
    if is_regression and set(metrics) - {"pearson", "spearmanr"}:
        raise ConfigError("a regression task can only use the metrics pearson and spearmanr")
    task = TaskSpec(
        name=str(cfg.get("dataset_name") or "custom"), text_fields=text_fields,
        num_labels=num_labels, metrics=metrics, is_regression=is_regression,
        label_names=label_names, label_field=str(cfg.get("label_field", "label")),
        infer_labels=not is_regression and num_labels == 0)
    return task if task.infer_labels else _checked_metrics(task)


def _custom_labels(cfg: Mapping[str, Any], regression: bool
                   ) -> tuple[int, tuple[str, ...] | None]:
    """``(num_labels, label_names)`` of a custom task; 0 labels = read them from the data.

    ``label_names`` implies ``num_labels``; both given must agree.
    """
    names, count = cfg.get("label_names"), cfg.get("num_labels")
    if regression:
        if names:
            raise ConfigError("task.label_names is for classification; a regression task "
                              "(task.is_regression=true) predicts one number")
        return 1, None
    if names:
        names = tuple(str(x) for x in names)
        if len(set(names)) != len(names):
            raise ConfigError(f"task.label_names {list(names)} repeats a name")
        if count is not None and int(count) != len(names):
            raise ConfigError(f"task.label_names has {len(names)} names but task.num_labels="
                              f"{count}; drop num_labels (the names imply it) or make them agree")
        count = len(names)
    if count is not None and int(count) < 2:
        raise ConfigError(f"task.num_labels={count}: a classifier needs at least 2 classes")
    return (int(count) if count is not None else 0), names or None


def _checked_metrics(task: TaskSpec) -> TaskSpec:
    if task.num_labels > 2 and {"f1", "matthews_correlation"} & set(task.metrics):
        raise ConfigError("f1 and matthews_correlation are binary metrics; use accuracy")
    return task


def with_labels_from(task: TaskSpec, values: Sequence[Any], where: str) -> TaskSpec:
    """The task with its classes read from a training file's label column (sorted:
    numerically when every label is an integer, else as text).

    Raises:
        ConfigError: A row without a label, or fewer than 2 distinct labels.
    """
    if missing := [i + 1 for i, v in enumerate(values) if v is None or str(v).strip() == ""]:
        raise ConfigError(f"{where}: row(s) {missing[:5]} have no {task.label_field!r}; every "
                          "training row needs a label")
    seen = {str(v).strip() for v in values}
    numeric = all(v.lstrip("-").isdigit() for v in seen)
    names = tuple(sorted(seen, key=int if numeric else str))
    if len(names) < 2:
        raise ConfigError(f"{where}: every row has the label {names}; a classifier needs at "
                          "least 2 classes")
    return _checked_metrics(replace(task, label_names=names, num_labels=len(names),
                                    infer_labels=False, labels_from=where))


def score(metrics: Mapping[str, float]) -> float:
    """GLUE-leaderboard score of a task: the unweighted mean of its metrics.

    MRPC's score is mean(F1, acc), STS-B's mean(Pearson, Spearman), MNLI's mean(m, mm).
    """
    values = list(metrics.values())
    if not values:
        raise ValueError("score() needs at least one metric")
    return float(sum(values) / len(values))
