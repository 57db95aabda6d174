"""Read what an offline W&B run wrote, without the network (``wandb.Api`` needs a server).

An offline run keeps everything in ``<dir>/wandb/offline-run-*/run-<id>.wandb``: a
LevelDB-style log (32 KiB blocks, each record ``crc32 | length | type`` + payload) of
``wandb_internal_pb2.Record`` protobufs. :func:`read_run` replays it into the run's name,
group, job type, tags, config, summary and history, which is what ``wandb sync`` would upload;
tests and ``examples/wandb_offline_sweep.sh`` check it against ``results.json``.
"""

from __future__ import annotations

import json
import struct
import time
from pathlib import Path
from typing import Any

_HEADER = struct.Struct("<4sHB")  # ":W&B", magic 0xBEE1, version
_RECORD = struct.Struct("<IHB")  # crc32, payload length, type (1 full, 2 first, 3 mid, 4 last)
_BLOCK = 32768


def _payloads(data: bytes) -> list[bytes]:
    ident, magic, _ = _HEADER.unpack_from(data)
    if ident != b":W&B" or magic != 0xBEE1:
        raise ValueError("not a W&B transaction log (no :W&B header)")
    out, pos, pending = [], _HEADER.size, b""
    while pos + _RECORD.size <= len(data):
        left = _BLOCK - pos % _BLOCK
        if left < _RECORD.size:  # a block's tail too short for a header is zero padding
            pos += left
            continue
        _, length, kind = _RECORD.unpack_from(data, pos)
        if (kind == 0 and length == 0) or pos + _RECORD.size + length > len(data):
            break  # zeros or a record still being written: the end of what is readable
        chunk = data[pos + _RECORD.size: pos + _RECORD.size + length]
        pos += _RECORD.size + length
        pending = chunk if kind in (1, 2) else pending + chunk
        if kind in (1, 4):
            out.append(pending)
            pending = b""
    return out


def _items(update: Any) -> dict[str, Any]:
    values = {}
    for item in update:
        key = "/".join(item.nested_key) if item.nested_key else item.key
        values[key] = json.loads(item.value_json)
    return values


def _log_file(folder: Path) -> Path:
    if not folder.name.startswith("offline-run-"):
        found = sorted(folder.glob("wandb/offline-run-*")) or sorted(folder.glob("offline-run-*"))
        if not found:
            raise FileNotFoundError(f"no offline W&B run under {folder}")
        folder = found[-1]
    return next(folder.glob("run-*.wandb"))


def read_run(folder: str | Path, wait: float = 0.0) -> dict[str, Any]:
    """An offline run folder (``offline-run-*``) or the run dir holding ``wandb/``.

    Args:
        folder: The run's folder.
        wait: Seconds to wait for the run's ``exit`` record: W&B's service process writes
            the log's tail shortly after ``wandb.finish()`` returns.

    Returns:
        ``id``, ``name``, ``group``, ``job_type``, ``tags``, ``config`` (the values, without
        W&B's ``{"value": ...}`` wrapping), ``summary`` (last value of each key), ``history``
        (one dict per logged row), ``artifacts`` (name, type, metadata) and ``finished``
        (the log ends with the run's exit).
    """
    log = _log_file(Path(folder))
    deadline = time.monotonic() + wait
    run = _replay(log.read_bytes())
    while not run["finished"] and time.monotonic() < deadline:
        time.sleep(0.2)
        run = _replay(log.read_bytes())
    return run


def _replay(data: bytes) -> dict[str, Any]:
    from wandb.proto import wandb_internal_pb2 as pb

    run: dict[str, Any] = {"config": {}, "summary": {}, "history": [], "artifacts": [],
                           "tags": [], "finished": False}
    for payload in _payloads(data):
        record = pb.Record()
        record.ParseFromString(payload)
        kind = record.WhichOneof("record_type")
        run["finished"] = run["finished"] or kind == "exit"
        if kind == "run":
            r = record.run
            run.update(id=r.run_id, name=r.display_name, group=r.run_group,
                       job_type=r.job_type, tags=list(r.tags))
            run["config"].update(_items(r.config.update))
        elif kind == "config":
            run["config"].update(_items(record.config.update))
        elif kind == "summary":
            run["summary"].update(_items(record.summary.update))
        elif kind == "history":
            row = _items(record.history.item)
            run["history"].append(row)
            run["summary"].update({k: v for k, v in row.items() if not k.startswith("_")})
        elif kind == "artifact":
            a = record.artifact
            run["artifacts"].append({"name": a.name, "type": a.type,
                                     "metadata": json.loads(a.metadata or "{}")})
    run["config"] = {k: v.get("value", v) if isinstance(v, dict) else v
                     for k, v in run["config"].items()}
    return run
