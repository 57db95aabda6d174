"""Teacher logits computed once, stored on disk, shared by every job and sweep that needs them.

A frozen teacher in eval mode is a deterministic function of its weights and its input
tokens, so its logits on a dataset split can be computed once and read back by every
student of a sweep instead of being recomputed every step of every epoch of every job. An
entry is keyed by a hash of everything the logits depend on: the teacher's weights (file
hashes, or the tensors of a randomly initialised teacher), and the tokenized split's own
cache key (task, split, dataset file sha256, tokenizer state, max length, truncation,
subsampling). A changed input gives a new key, never a stale hit.

Layout: ``<root>/<key>/logits.npy`` (float16, ``[rows, num_labels]``, row ``i`` = row ``i``
of the tokenized split) and ``meta.json``. fp16 keeps 3 significant digits, which changes a
KD loss by about 1e-3 relative and never flips a prediction except exact near-ties.
Entries are written into a temp folder and renamed (:func:`litdistill.atomic.write_dir`: a
crashed writer leaves no entry), under a file lock per key (concurrent jobs compute an entry
once; the others wait and read it).

Every read is checked: ``meta.json`` records the sha256 of the ``logits.npy`` bytes, its shape
and dtype, and the logits must all be finite. An entry that fails (a flipped byte, a file
replaced by one of the right size, NaN or inf logits, an unreadable file) is a miss under
``auto`` (recomputed and replaced, with a warning naming the entry; ``write`` always
recomputes) and a :class:`ConfigError` under ``read``. Entries written before checksums were
recorded cannot be told apart from a corrupt one, so they count as corrupt too: ``auto``
recomputes them once. The check costs 0.6 ms for an SST-2 entry (67,349 x 2 float16, 269 KB:
reading, hashing and parsing the file, ``isfinite``), against 0.1 ms for the unchecked
memory-mapped read it replaces and minutes for the teacher pass the entry saves.

Only logits are cached: intermediate objectives (hidden states, attention maps) need the
teacher live, since their tensors are ``rows x layers x tokens x width`` (gigabytes for
SST-2).
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from filelock import FileLock
from torch import nn

from litdistill import atomic
from litdistill.errors import ConfigError

log = logging.getLogger(__name__)

MODES = ("off", "read", "write", "auto")
FORMAT = 1
_WEIGHT_FILES = ("*.safetensors", "*.bin", "config.json")


def check_mode(mode: str) -> str:
    """Validate ``cache=off|read|write|auto``."""
    if mode not in MODES:
        raise ConfigError(f"teacher_cache={mode!r}: use one of {', '.join(MODES)}")
    return mode


def weights_fingerprint(folder: str | Path | None, model: nn.Module | None = None) -> str:
    """Hash of a teacher's weights: its files when it has a folder, else its tensors.

    Args:
        folder: A ``save_pretrained`` folder (weight files and config hashed), or None.
        model: The built model, hashed tensor by tensor when there is no folder (a random
            teacher built from a config and a seed).
    """
    digest = hashlib.sha256()
    if folder is not None and Path(folder).is_dir():
        files = sorted(f for pattern in _WEIGHT_FILES for f in Path(folder).glob(pattern))
        for file in files:
            digest.update(f"{file.name}:{atomic.sha256_file(file)}".encode())
        return digest.hexdigest()
    if model is None:
        raise ValueError("a teacher without a weights folder must be built to be hashed")
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def entry_key(teacher: str, split_key: str) -> str:
    """Cache key of one split's teacher logits (teacher hash x tokenized split key)."""
    parts = {"format": FORMAT, "teacher": teacher, "split": split_key}
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:32]


def _run_checked(compute: Callable[[], np.ndarray], rows: int) -> np.ndarray:
    """Runs ``compute`` and returns its logits in float16, refusing any that are not finite:
    stored, they would fail every read, and training on them gives NaN from the first step."""
    with np.errstate(over="ignore"):  # an overflow to inf is reported just below
        logits = np.asarray(compute(), dtype=np.float16)
    if logits.shape[0] != rows:
        raise RuntimeError(f"teacher produced {logits.shape[0]} rows, expected {rows}")
    if not (finite := np.isfinite(logits)).all():
        raise ConfigError(
            f"the teacher gave {int((~finite).sum())} NaN/inf logits on {rows} rows (or values "
            "beyond float16's 65504); check its weights (re-export or fine-tune it again)")
    return logits


class TeacherCache:
    """Teacher logits on disk, one entry per (teacher, tokenized split).

    Args:
        root: Folder of the entries (shared by jobs and sweeps).
        mode: ``off`` (never touch it), ``read`` (entries must exist), ``write`` (recompute
            and replace), ``auto`` (read when present, else compute and write).
    """

    def __init__(self, root: str | Path, mode: str = "auto") -> None:
        self.root = Path(root).expanduser()
        self.mode = check_mode(mode)

    def _dir(self, key: str) -> Path:
        return self.root / key

    def _read(self, key: str, rows: int) -> tuple[np.ndarray | None, str | None]:
        """``(logits, None)`` for a sound entry, ``(None, None)`` when there is none, and
        ``(None, what is wrong)`` for an entry that fails its checks."""
        folder = self._dir(key)
        if not folder.is_dir():
            return None, None
        try:
            meta = json.loads((folder / "meta.json").read_text())
            data = (folder / "logits.npy").read_bytes()  # read once: hashed, then parsed
        except (OSError, ValueError) as e:
            return None, f"unreadable ({e})"
        if not isinstance(meta, dict) or meta.get("format") != FORMAT:
            return None, f"meta.json is not a format-{FORMAT} entry"
        if "sha256" not in meta:
            return None, "no checksum in meta.json (written by an older litdistill)"
        if hashlib.sha256(data).hexdigest() != meta["sha256"]:
            return None, "logits.npy does not match the sha256 in meta.json"
        try:
            logits = np.load(io.BytesIO(data), allow_pickle=False)
        except (OSError, ValueError, EOFError) as e:  # cannot happen when the hash matched
            return None, f"logits.npy is not a valid .npy file ({e})"
        expected = (rows, meta.get("num_labels"))
        if logits.shape != expected or logits.dtype != np.float16:
            return None, (f"logits.npy holds {logits.dtype} {list(logits.shape)}, expected "
                          f"float16 {list(expected)}")
        if not (finite := np.isfinite(logits)).all():
            return None, f"logits.npy holds {int((~finite).sum())} NaN/inf values"
        return logits, None

    def load(self, key: str, rows: int) -> np.ndarray | None:
        """The entry's logits, or None when absent or failing its checks (logged).

        Checks the sha256 of ``logits.npy`` against ``meta.json``, the shape ``[rows,
        num_labels]``, the float16 dtype and that every logit is finite.
        """
        logits, problem = self._read(key, rows)
        if problem:
            log.warning("teacher cache entry %s is not usable: %s", self._dir(key), problem)
        return logits

    def has(self, key: str, rows: int) -> bool:
        """Whether a complete entry that passes its checks exists (reads the whole entry)."""
        return self._read(key, rows)[0] is not None

    def get(self, key: str, rows: int, compute: Callable[[], np.ndarray],
            meta: dict[str, Any]) -> np.ndarray:
        """Read the entry, or compute it once and store it (as the mode allows).

        A corrupt entry is a miss under ``auto`` (recomputed, with a warning) and an error
        under ``read``; ``write`` recomputes whatever is there.

        Args:
            key: :func:`entry_key`.
            rows: Rows the split has (a mismatching entry is ignored).
            compute: Returns ``[rows, num_labels]`` float logits (runs the teacher).
            meta: Written beside the logits (teacher name, params, split...).

        Raises:
            ConfigError: ``mode=read`` and the entry is missing or corrupt, or the teacher
                gave non-finite logits.
        """
        if self.mode == "off":
            return compute()
        if self.mode in ("read", "auto"):
            hit, problem = self._read(key, rows)
            if hit is not None:
                return hit
            if problem and self.mode == "read":
                raise ConfigError(
                    f"teacher cache entry {self._dir(key)} is corrupt ({problem}); rerun with "
                    "teacher_cache=auto to recompute it, or delete that folder")
            if problem:
                log.warning("teacher cache entry %s failed its check (%s); recomputing it",
                            self._dir(key), problem)
        if self.mode == "read":
            raise ConfigError(
                f"teacher_cache=read but {self._dir(key)} holds no teacher logits for this "
                "teacher and split; run once with teacher_cache=auto (or write) to fill it")
        self.root.mkdir(parents=True, exist_ok=True)
        with FileLock(str(self._dir(key)) + ".lock"):
            # Another job may have written it while this one waited for the lock.
            if self.mode == "auto" and (hit := self._read(key, rows)[0]) is not None:
                return hit
            self._write(key, _run_checked(compute, rows), meta)
        hit, problem = self._read(key, rows)
        if hit is None:
            raise RuntimeError(f"teacher cache entry {self._dir(key)} failed its checks right "
                               f"after it was written: {problem}")
        return hit

    def _write(self, key: str, logits: np.ndarray, meta: dict[str, Any]) -> None:
        buffer = io.BytesIO()
        np.save(buffer, logits)
        data = buffer.getvalue()
        # The checks' fields come last, so a caller's meta cannot override them.
        meta = {**meta, "format": FORMAT, "rows": logits.shape[0],
                "num_labels": logits.shape[1], "dtype": "float16",
                "sha256": hashlib.sha256(data).hexdigest()}

        def fill(tmp: Path) -> None:
            (tmp / "logits.npy").write_bytes(data)
            (tmp / "meta.json").write_text(json.dumps(meta, indent=2, default=str))

        # mode=write replaces an entry (readers hold memory copies); under the key's lock.
        atomic.write_dir(self._dir(key), fill)

    def meta(self, key: str) -> dict[str, Any]:
        """The entry's meta.json ({} when absent or unreadable)."""
        try:
            meta = json.loads((self._dir(key) / "meta.json").read_text())
        except (OSError, ValueError):
            return {}
        return meta if isinstance(meta, dict) else {}

