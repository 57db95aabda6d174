"""Damaged files on disk are noticed: teacher-cache entries (checksum, finiteness) and the
weight, config and tokenizer files of a ``Pretrained`` folder (one-line ConfigError naming the
file, not a traceback). Zoo assets are covered in test_zoo.py."""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import BertConfig, BertForSequenceClassification

from litdistill.errors import ConfigError
from litdistill.models import Pretrained, char_tokenizer
from litdistill.teacher_cache import TeacherCache
from litdistill.train import train

ROWS, LABELS = 50, 3

# --- teacher cache ------------------------------------------------------------------------


def _logits() -> np.ndarray:
    return np.linspace(-4, 4, ROWS * LABELS, dtype=np.float32).reshape(ROWS, LABELS)


@pytest.fixture
def entry(tmp_path: Path) -> tuple[TeacherCache, list[int]]:
    """A cache with one good entry ``k``; the list counts teacher runs."""
    cache, calls = TeacherCache(tmp_path / "cache", "auto"), []
    cache.get("k", ROWS, lambda: calls.append(1) or _logits(), {"teacher": "t"})
    return cache, calls


def _flip_last_byte(folder: Path) -> None:
    data = bytearray((folder / "logits.npy").read_bytes())
    data[-1] ^= 0x40  # inside the data: the header still parses, the size is the same
    (folder / "logits.npy").write_bytes(bytes(data))


def _nan_same_size(folder: Path) -> None:
    np.save(folder / "logits.npy", np.full((ROWS, LABELS), np.nan, dtype=np.float16))


def _nan_with_matching_checksum(folder: Path) -> None:
    """NaN logits whose meta.json vouches for them (a writer that stored what it was given)."""
    _nan_same_size(folder)
    meta = json.loads((folder / "meta.json").read_text())
    meta["sha256"] = hashlib.sha256((folder / "logits.npy").read_bytes()).hexdigest()
    (folder / "meta.json").write_text(json.dumps(meta))


def _without_checksum(folder: Path) -> None:
    meta = json.loads((folder / "meta.json").read_text())
    del meta["sha256"]  # as written before checksums existed
    (folder / "meta.json").write_text(json.dumps(meta))


ENTRY_DAMAGE: dict[str, tuple[Callable[[Path], None], str]] = {
    "flipped byte": (_flip_last_byte, "does not match the sha256"),
    "NaN, right size": (_nan_same_size, "does not match the sha256"),
    "NaN, checksum matches": (_nan_with_matching_checksum, "150 NaN/inf values"),
    "no checksum (old entry)": (_without_checksum, "no checksum"),
    "truncated": (lambda f: (f / "logits.npy").write_bytes(b"\x93NUMPY"), "does not match"),
    "meta garbage": (lambda f: (f / "meta.json").write_text("{"), "unreadable"),
    "logits missing": (lambda f: (f / "logits.npy").unlink(), "unreadable"),
}


def test_entry_records_the_checksum_of_its_logits(entry) -> None:
    cache, _ = entry
    meta = cache.meta("k")
    data = (cache.root / "k" / "logits.npy").read_bytes()
    assert meta["sha256"] == hashlib.sha256(data).hexdigest()
    assert (meta["rows"], meta["num_labels"], meta["dtype"]) == (ROWS, LABELS, "float16")
    assert meta["teacher"] == "t" and cache.has("k", ROWS)


@pytest.mark.parametrize("case", ENTRY_DAMAGE)
def test_damaged_entry_is_recomputed_under_auto(case: str, entry,
                                                caplog: pytest.LogCaptureFixture) -> None:
    cache, calls = entry
    damage, detail = ENTRY_DAMAGE[case]
    damage(cache.root / "k")
    assert not cache.has("k", ROWS)
    with caplog.at_level(logging.WARNING, logger="litdistill.teacher_cache"):
        assert cache.load("k", ROWS) is None
        got = cache.get("k", ROWS, lambda: calls.append(1) or _logits(), {"teacher": "t"})
    assert f"teacher cache entry {cache.root / 'k'} failed its check" in caplog.text
    assert detail in caplog.text
    assert calls == [1, 1] and np.isfinite(got).all()
    np.testing.assert_allclose(got, _logits(), atol=5e-3)  # float16 storage
    assert cache.has("k", ROWS)  # replaced by a sound entry


@pytest.mark.parametrize("case", ENTRY_DAMAGE)
def test_damaged_entry_is_an_error_under_read(case: str, entry) -> None:
    cache, _ = entry
    damage, detail = ENTRY_DAMAGE[case]
    damage(cache.root / "k")
    with pytest.raises(ConfigError, match=rf"teacher cache entry {cache.root / 'k'} is corrupt "
                                          rf"\(.*{detail}.*\); rerun with teacher_cache=auto .*"
                                          r"or delete that folder"):
        TeacherCache(cache.root, "read").get("k", ROWS, _logits, {})


def test_entry_of_another_shape_is_a_miss(entry) -> None:
    cache, calls = entry
    assert cache.load("k", ROWS + 1) is None
    with pytest.raises(ConfigError, match=r"float16 \[50, 3\], expected float16 \[51, 3\]"):
        TeacherCache(cache.root, "read").get("k", ROWS + 1, _logits, {})


def test_write_mode_replaces_a_damaged_entry(entry) -> None:
    cache, calls = entry
    _nan_with_matching_checksum(cache.root / "k")
    TeacherCache(cache.root, "write").get("k", ROWS, lambda: calls.append(1) or _logits(), {})
    assert calls == [1, 1] and cache.has("k", ROWS)


def test_non_finite_teacher_logits_are_refused(tmp_path: Path) -> None:
    cache = TeacherCache(tmp_path, "auto")
    bad = _logits()
    bad[3, 1] = np.nan
    bad[7, 0] = 1e6  # beyond float16
    with pytest.raises(ConfigError, match="teacher gave 2 NaN/inf logits on 50 rows"):
        cache.get("k", ROWS, lambda: bad, {})
    assert not (tmp_path / "k").exists()  # nothing stored


# --- Pretrained folders -------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-layer BERT (hidden 32) with the character tokenizer, saved as save_pretrained does."""
    folder = tmp_path_factory.mktemp("tiny_model")
    torch.manual_seed(0)
    config = BertConfig(vocab_size=len(char_tokenizer()), hidden_size=32, num_hidden_layers=2,
                        num_attention_heads=2, intermediate_size=64, num_labels=2,
                        architectures=["BertForSequenceClassification"])
    BertForSequenceClassification(config).save_pretrained(folder)
    char_tokenizer().save_pretrained(folder)
    return folder


@pytest.fixture
def model_dir(tiny_model_dir: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(tiny_model_dir, tmp_path / "model"))


def _as_bin(folder: Path, **save_kwargs) -> Path:
    """Replaces model.safetensors by a torch.save pytorch_model.bin of the same weights."""
    model = BertForSequenceClassification.from_pretrained(folder)
    (folder / "model.safetensors").unlink()
    torch.save(model.state_dict(), folder / "pytorch_model.bin", **save_kwargs)
    return folder / "pytorch_model.bin"


def _cut(file: Path, keep: int | None = None) -> None:
    data = file.read_bytes()
    file.write_bytes(data[: len(data) // 2 if keep is None else keep])


def _flip_bin_data(folder: Path) -> None:
    """Flips a byte inside a tensor of pytorch_model.bin: only the zip CRC can tell."""
    file = _as_bin(folder)
    with zipfile.ZipFile(file) as archive:
        member = max(archive.infolist(), key=lambda m: m.file_size)
        offset = member.header_offset + 30 + len(member.filename.encode()) + len(member.extra)
    data = bytearray(file.read_bytes())
    # the local header's extra field may differ from the central one: aim well inside the data
    data[offset + 64 + member.file_size // 2] ^= 0x01
    file.write_bytes(bytes(data))


WEIGHT_DAMAGE: dict[str, tuple[Callable[[Path], None], str, str]] = {
    "safetensors cut in half": (lambda f: _cut(f / "model.safetensors"), "model.safetensors",
                                "file not fully covered"),
    "safetensors empty": (lambda f: _cut(f / "model.safetensors", 0), "model.safetensors",
                          "header too small"),
    "safetensors garbage": (lambda f: (f / "model.safetensors").write_bytes(b"\xff" * 64),
                            "model.safetensors", "header"),
    "bin cut in half": (lambda f: _cut(_as_bin(f)), "pytorch_model.bin", "cut short"),
    "bin garbage": (lambda f: _as_bin(f).write_bytes(b"\x00garbage"), "pytorch_model.bin",
                    "neither a zip archive nor a pickle"),
    "bin byte flip": (_flip_bin_data, "pytorch_model.bin", "CRC mismatch"),
    "no weights": (lambda f: (f / "model.safetensors").unlink(), "holds no weights", ""),
}


def _one_line_error(call: Callable[[], object], *fragments: str) -> str:
    with pytest.raises(ConfigError) as info:
        call()
    message = str(info.value)
    assert "\n" not in message and all(f in message for f in fragments), message
    return message


def test_intact_folder_loads(model_dir: Path) -> None:
    spec = Pretrained(str(model_dir))
    assert spec.build(2, False).config.num_hidden_layers == 2
    assert spec.tokenizer(None)("abc")["input_ids"][0] == char_tokenizer().cls_token_id


def test_legacy_pickle_bin_still_loads(model_dir: Path) -> None:
    """torch.save's pre-1.6 format has no checksum: it must pass, not be called corrupt."""
    _as_bin(model_dir, _use_new_zipfile_serialization=False)
    assert Pretrained(str(model_dir)).build(2, False).config.hidden_size == 32


@pytest.mark.parametrize("case", WEIGHT_DAMAGE)
def test_damaged_weights_name_the_file(case: str, model_dir: Path) -> None:
    damage, file, detail = WEIGHT_DAMAGE[case]
    damage(model_dir)
    spec = Pretrained(str(model_dir))
    spec.hf_config(None)  # config and tokenizer are fine: the early checks pass
    _one_line_error(lambda: spec.build(2, False), file, detail,
                    "re-export the model with save_pretrained()")


CONFIG_DAMAGE = {
    "truncated": (b'{"model_type": "bert", "hidd', "not valid JSON"),
    "empty": (b"", "not valid JSON"),
    "binary": (bytes(range(256)), "not valid JSON"),
    "a list": (b"[1, 2]", "not a JSON object with a model_type"),
    "no model_type": (b"{}", "not a JSON object with a model_type"),
    "bad field": (b'{"model_type": "bert", "hidden_size": "x"}', "hidden_size"),
}


@pytest.mark.parametrize("case", CONFIG_DAMAGE)
def test_damaged_config_names_the_file(case: str, model_dir: Path) -> None:
    data, detail = CONFIG_DAMAGE[case]
    (model_dir / "config.json").write_bytes(data)
    _one_line_error(lambda: Pretrained(str(model_dir)).hf_config(None),
                    f"{model_dir / 'config.json'} is not a usable model config", detail,
                    "re-export")


def _vocab_only(folder: Path, data: bytes) -> None:
    (folder / "tokenizer.json").unlink()  # the slow tokenizer then builds from vocab.txt
    (folder / "vocab.txt").write_bytes(data)


TOKENIZER_DAMAGE = {
    "tokenizer.json truncated": (lambda f: _cut(f / "tokenizer.json"), "tokenizer.json",
                                 "line 1"),
    "tokenizer.json {}": (lambda f: (f / "tokenizer.json").write_text("{}"), "tokenizer.json",
                          "missing"),
    "tokenizer.json binary": (lambda f: (f / "tokenizer.json").write_bytes(bytes(range(256))),
                              "tokenizer.json", "utf-8"),
    "tokenizer_config.json a list": (lambda f: (f / "tokenizer_config.json").write_text("[1]"),
                                     "tokenizer_config.json", "not a JSON object"),
    "special_tokens_map.json garbage": (
        lambda f: (f / "special_tokens_map.json").write_bytes(b"\x00zz"),
        "special_tokens_map.json", "not valid JSON"),
    "vocab.txt binary": (lambda f: _vocab_only(f, bytes(range(256)) * 3), "vocab.txt", "utf-8"),
    "vocab.txt empty": (lambda f: _vocab_only(f, b""), "vocab.txt", "empty"),
}


@pytest.mark.parametrize("case", TOKENIZER_DAMAGE)
def test_damaged_tokenizer_names_the_file(case: str, model_dir: Path) -> None:
    damage, file, detail = TOKENIZER_DAMAGE[case]
    damage(model_dir)
    _one_line_error(lambda: Pretrained(str(model_dir)).tokenizer(None),
                    f"{model_dir / file} is truncated or corrupt", detail)


def test_damaged_zoo_folder_says_to_refetch(model_dir: Path, tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LITDISTILL_HOME", str(tmp_path / "home"))
    folder = tmp_path / "home" / "zoo" / "minilm_l6"
    shutil.copytree(model_dir, folder)
    _cut(folder / "model.safetensors")
    # The folder, not the zoo name: resolve() would notice the damage and rebuild it first.
    _one_line_error(lambda: Pretrained(str(folder)).build(2, False), "model.safetensors",
                    "run `litdistill-zoo fetch minilm_l6 --force`")


def test_training_with_a_truncated_teacher_stops_with_one_line(make_cfg, model_dir: Path,
                                                               tmp_path: Path) -> None:
    """The hostile-user report: a cut-short teacher gave a SafetensorError traceback."""
    _cut(model_dir / "model.safetensors")
    cfg = make_cfg("teacher=pretrained", f"teacher.name_or_path={model_dir}", "student=tiny",
                   "distill=kd")
    _one_line_error(lambda: train(cfg), "model.safetensors is truncated or corrupt")
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert results["status"] == "failed" and "model.safetensors" in results["error"]
