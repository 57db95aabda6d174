"""Task table, GLUE TSV parsing, validation, caching and batching."""

from pathlib import Path

import pytest
import torch

from litdistill.data import DataOptions, GlueDataModule, build_datamodule
from litdistill.errors import ConfigError
from litdistill.models import char_tokenizer
from litdistill.reader import read_splits
from litdistill.readers import read_glue_tsv
from litdistill.tasks import GLUE_TASKS, get_task, known_tasks, score


def test_task_table_covers_glue():
    assert set(GLUE_TASKS) == {"cola", "sst2", "mrpc", "stsb", "qqp", "mnli", "qnli", "rte",
                               "wnli"}
    assert GLUE_TASKS["stsb"].is_regression and GLUE_TASKS["stsb"].num_labels == 1
    assert GLUE_TASKS["mnli"].metric_names == ["accuracy_matched", "accuracy_mismatched"]
    assert GLUE_TASKS["mrpc"].metric_names == ["f1", "accuracy"]
    assert GLUE_TASKS["cola"].metrics == ("matthews_correlation",)


def test_score_is_mean_of_metrics():
    assert score({"f1": 0.9, "accuracy": 0.8}) == pytest.approx(0.85)


def test_unknown_task_lists_known_ones():
    with pytest.raises(ConfigError, match="unknown task 'sst3'.*sst2.*custom"):
        get_task({"name": "sst3"})
    assert "custom" in known_tasks()


def test_custom_task_validation():
    spec = get_task({"name": "custom", "text_fields": ["text"], "num_labels": 3})
    assert spec.metrics == ("accuracy",) and spec.num_labels == 3
    reg = get_task({"name": "custom", "text_fields": ["a", "b"], "is_regression": True})
    assert reg.num_labels == 1 and reg.metrics == ("pearson", "spearmanr")
    with pytest.raises(ConfigError, match="text_fields"):
        get_task({"name": "custom", "text_fields": [], "num_labels": 2})
    with pytest.raises(ConfigError, match="binary"):
        get_task({"name": "custom", "text_fields": ["t"], "num_labels": 3, "metrics": ["f1"]})


@pytest.mark.parametrize("task,n_fields", [("sst2", 1), ("cola", 1), ("mrpc", 2),
                                           ("stsb", 2), ("rte", 2)])
def test_reads_each_glue_layout(tiny_glue: Path, task: str, n_fields: int):
    spec = GLUE_TASKS[task]
    cols = read_glue_tsv(tiny_glue / spec.glue_dir_name / "dev.tsv", spec)
    assert len(cols["label"]) == 32 and len(spec.text_fields) == n_fields
    assert not cols[spec.text_fields[0]][0].startswith("\ufeff")
    if spec.is_regression:
        assert all(isinstance(v, float) for v in cols["label"])
    else:
        assert set(cols["label"]) <= set(range(spec.num_labels))


def test_mnli_has_two_eval_splits(tiny_glue: Path):
    raw = read_splits(GLUE_TASKS["mnli"], glue_dir=str(tiny_glue)).raw
    assert set(raw) == {"train", "validation_matched", "validation_mismatched"}
    assert set(raw["train"]["label"]) == {0, 1, 2}


def test_label_outside_range_names_file_and_line(tmp_path: Path):
    folder = tmp_path / "SST-2"
    folder.mkdir()
    (folder / "train.tsv").write_text("sentence\tlabel\ngood\t1\nbad\t7\n")
    (folder / "dev.tsv").write_text("sentence\tlabel\ngood\t1\n")
    with pytest.raises(ConfigError, match=r"train\.tsv:3: label '7' is outside"):
        read_splits(GLUE_TASKS["sst2"], glue_dir=str(tmp_path))


def test_empty_split_is_refused(tmp_path: Path):
    folder = tmp_path / "SST-2"
    folder.mkdir()
    (folder / "train.tsv").write_text("sentence\tlabel\ngood\t1\n")
    (folder / "dev.tsv").write_text("sentence\tlabel\n")
    with pytest.raises(ConfigError, match="'validation' of task 'sst2' is empty"):
        read_splits(GLUE_TASKS["sst2"], glue_dir=str(tmp_path))


def test_missing_files_say_where_and_glue_dir(tmp_path: Path):
    with pytest.raises(ConfigError, match=r"missing data file.*RTE/train\.tsv.*GLUE_DIR"):
        read_splits(GLUE_TASKS["rte"], glue_dir=str(tmp_path))


def test_no_glue_dir_offline_is_refused():
    with pytest.raises(ConfigError, match="Hub is offline.*GLUE_DIR"):
        read_splits(GLUE_TASKS["rte"], glue_dir=None)


def test_custom_files_jsonl_and_csv(tmp_path: Path):
    train = tmp_path / "train.jsonl"
    train.write_text('{"text": "good film", "y": "pos"}\n{"text": "bad", "y": "neg"}\n')
    dev = tmp_path / "dev.csv"
    dev.write_text("text,y\ngreat,pos\n")
    spec = get_task({"name": "custom", "text_fields": ["text"], "label_field": "y",
                     "num_labels": 2, "label_names": ["neg", "pos"]})
    raw = read_splits(spec, data_files={"train": str(train), "validation": str(dev)}).raw
    assert raw["train"]["label"] == [1, 0] and raw["validation"]["label"] == [1]
    with pytest.raises(ConfigError, match="missing data file for split 'validation'"):
        read_splits(spec, data_files={"train": str(train), "validation": str(tmp_path)})


def test_subsampling_is_seeded(tiny_glue: Path):
    def idx(seed: int) -> list[int]:
        options = DataOptions(glue_dir=str(tiny_glue), max_train_samples=10, seed=seed)
        return options.read(GLUE_TASKS["sst2"]).raw["train"]["idx"]

    assert idx(1) == idx(1) and idx(1) != idx(2) and len(idx(1)) == 10


def _module(tiny_glue: Path, cache: Path, **kwargs) -> GlueDataModule:
    options = DataOptions(glue_dir=str(tiny_glue), cache_dir=str(cache), batch_size=8, **kwargs)
    return build_datamodule(options, options.read(GLUE_TASKS["sst2"]), char_tokenizer())


def test_tokenized_cache_is_reused_and_keyed(tiny_glue: Path, tmp_path: Path):
    cache = tmp_path / "cache"
    _module(tiny_glue, cache)
    entries = set(cache.iterdir())
    assert len(entries) == 2  # train + validation
    _module(tiny_glue, cache)
    assert set(cache.iterdir()) == entries  # hit: nothing new
    _module(tiny_glue, cache, max_length=16)
    assert len(set(cache.iterdir())) == 4  # new key for new max length


def test_dynamic_padding_and_length_grouping(tiny_glue: Path, tmp_path: Path):
    dm = _module(tiny_glue, tmp_path, group_by_length=True)
    widths, spreads = set(), []
    for batch in dm.train_dataloader():
        widths.add(batch["input_ids"].shape[1])
        lengths = batch["attention_mask"].sum(1)
        spreads.append((lengths.max() - lengths.min()).item())
        assert batch["labels"].dtype == torch.long and "idx" in batch
    assert len(widths) > 1  # padded per batch, not to max_length
    plain = _module(tiny_glue, tmp_path, group_by_length=False)
    plain_spreads = [(b["attention_mask"].sum(1).max() - b["attention_mask"].sum(1).min())
                     .item() for b in plain.train_dataloader()]
    assert sum(spreads) < sum(plain_spreads)
