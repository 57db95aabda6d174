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
        if kind == 0 and length == 0:
            break  # zeros: the end of what was written
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


def read_run(folder: str | Path) -> dict[str, Any]:
    """An offline run folder (``offline-run-*``) or the run dir holding ``wandb/``.

    Returns:
        ``id``, ``name``, ``group``, ``job_type``, ``tags``, ``config`` (the values, without
        W&B's ``{"value": ...}`` wrapping), ``summary`` (last value of each key), ``history``
        (one dict per logged row) and ``artifacts`` (name, type, metadata).
    """
    from wandb.proto import wandb_internal_pb2 as pb

    folder = Path(folder)
    if not folder.name.startswith("offline-run-"):
        found = sorted(folder.glob("wandb/offline-run-*")) or sorted(folder.glob("offline-run-*"))
        if not found:
            raise FileNotFoundError(f"no offline W&B run under {folder}")
        folder = found[-1]
    log = next(folder.glob("run-*.wandb"))
    run: dict[str, Any] = {"config": {}, "summary": {}, "history": [], "artifacts": [],
                           "tags": []}
    for payload in _payloads(log.read_bytes()):
        record = pb.Record()
        record.ParseFromString(payload)
        kind = record.WhichOneof("record_type")
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
