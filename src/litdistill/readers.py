"""Reading task files: the official GLUE TSVs, labels checked row by row."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

from litdistill.errors import ConfigError
from litdistill.tasks import TaskSpec


def read_glue_tsv(path: Path, task: TaskSpec) -> dict[str, list]:
    """Parse one official GLUE TSV file into columns, validating every row.

    Files are read as GLUE's own loader does: tab-separated with quoting off (QNLI and SST-2
    contain bare quote characters), ``utf-8-sig`` so MRPC's byte-order mark vanishes.

    Args:
        path: The ``.tsv`` file.
        task: Its task; ``task.tsv`` says which columns hold text and label.

    Returns:
        Columns ``task.text_fields``, ``label`` (int class id or float) and ``idx`` (row index).

    Raises:
        ConfigError: A malformed row or a label outside the task's range, with file and line.
    """
    layout = task.tsv
    assert layout is not None, f"task {task.name} has no TSV layout"
    columns: dict[str, list] = {f: [] for f in task.text_fields} | {"label": [], "idx": []}
    with path.open(encoding="utf-8-sig", newline="") as fh:
        rows = csv.reader(fh, delimiter="\t", quoting=csv.QUOTE_NONE)
        for lineno, row in enumerate(rows, start=1):
            if layout.header and lineno == 1:
                continue
            if len(row) < layout.min_columns:
                raise ConfigError(
                    f"{path}:{lineno}: expected >= {layout.min_columns} tab-separated columns "
                    f"for {task.name}, got {len(row)}; is this the official GLUE file?"
                )
            raw = row[layout.label_column].strip()
            columns["label"].append(parse_label(raw, task, f"{path}:{lineno}"))
            for name, col in zip(task.text_fields, layout.text_columns, strict=True):
                columns[name].append(row[col])
            columns["idx"].append(len(columns["idx"]))
    return columns


def parse_label(raw: Any, task: TaskSpec, where: str) -> int | float:
    """Map a label as written in a file to a class id (or float target)."""
    if task.is_regression:
        try:
            return float(raw)
        except (TypeError, ValueError):
            raise ConfigError(f"{where}: regression label {raw!r} is not a number") from None
    if task.label_names is not None and str(raw) in task.label_names:
        return task.label_names.index(str(raw))
    try:
        label = int(raw)
    except (TypeError, ValueError):
        label = -1
    if not 0 <= label < task.num_labels or isinstance(raw, float) and raw != label:
        allowed = task.label_names or tuple(range(task.num_labels))
        raise ConfigError(
            f"{where}: label {raw!r} is outside task {task.name!r}'s labels {allowed}; "
            "fix the file or task.num_labels / task.label_names"
        )
    return label
