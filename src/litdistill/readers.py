"""Reading task files: the official GLUE TSVs, labels checked row by row, and the checks
custom files get before ``datasets`` reads them (UTF-8, at least one row)."""

from __future__ import annotations

import csv
import io
import json
import math
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
    with io.StringIO(read_text(path), newline="") as fh:
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


def read_text(path: Path) -> str:
    """The file decoded as UTF-8 (a byte-order mark dropped).

    Raises:
        ConfigError: A byte sequence that is not UTF-8, with its line and bytes.
    """
    data = path.read_bytes()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = data.count(b"\n", 0, err.start) + 1
        raise ConfigError(
            f"{path}:{line}: bytes {data[err.start:err.end]!r} are not UTF-8 ({err.reason}); "
            "re-encode the file as UTF-8 (e.g. iconv -f latin1 -t utf-8)") from None


def check_rows(path: Path, fmt: str) -> None:
    """Refuse a custom data file without a single data row (``datasets`` fails obscurely).

    Args:
        path: The file.
        fmt: Its ``datasets`` builder: ``csv`` (csv/tsv, first line = header), ``json``
            (a JSON array or JSON lines) or ``parquet``.

    Raises:
        ConfigError: Bytes that are not UTF-8, or no data rows.
    """
    if fmt == "parquet":
        import pyarrow.parquet as pq

        rows = pq.ParquetFile(path).metadata.num_rows
    else:
        text = read_text(path)
        lines = [line for line in text.splitlines() if line.strip()]
        rows = len(lines) - 1 if fmt == "csv" else len(lines)
        if fmt == "json" and lines and lines[0].lstrip().startswith("["):
            try:  # one JSON array, not JSON lines
                rows = len(json.loads(text))
            except json.JSONDecodeError as err:
                raise ConfigError(f"{path}:{err.lineno}: not valid JSON ({err.msg})") from None
    if rows < 1:
        raise ConfigError(f"{path}: no data rows (only a header, or empty); give every split "
                          "at least one row")


def parse_float(raw: Any, where: str) -> float:
    """A real-valued label as a finite float (``inf``/``NaN`` would make every loss NaN)."""
    try:
        value = float(raw)
    except (TypeError, ValueError):
        raise ConfigError(f"{where}: label {raw!r} is not a number") from None
    if not math.isfinite(value):
        raise ConfigError(f"{where}: label {raw!r} is not a finite number; fix or drop the row")
    return value


def parse_label(raw: Any, task: TaskSpec, where: str) -> int | float:
    """Map a label as written in a file to a class id (or a finite float target)."""
    if task.is_regression:
        return parse_float(raw, where)
    if task.label_names is not None and str(raw) in task.label_names:
        return task.label_names.index(str(raw))
    try:
        label = int(raw)
    except (TypeError, ValueError):
        label = -1
    if not 0 <= label < task.num_labels or isinstance(raw, float) and raw != label:
        allowed = task.label_names or tuple(range(task.num_labels))
        if task.labels_from is not None:
            raise ConfigError(f"{where}: label {raw!r} never occurs in the training file "
                              f"{task.labels_from}, whose labels are {allowed}; a dev label "
                              "must be one the model can learn")
        raise ConfigError(
            f"{where}: label {raw!r} is outside task {task.name!r}'s labels {allowed}; "
            "fix the file or task.num_labels / task.label_names"
        )
    return label
