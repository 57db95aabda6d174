"""``litdistill-export``: ONNX graphs of finished runs, checked against PyTorch on dev."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from litdistill import onnx_graphs
from litdistill.export import ExportError, export_run, main
from litdistill.latency import measure_onnx

ort = pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")


def _save_config(cfg, run_dir: Path) -> None:
    """What ``litdistill-train`` (``@hydra.main``) leaves and ``train(cfg)`` alone does not."""
    (run_dir / ".hydra").mkdir(parents=True, exist_ok=True)
    OmegaConf.save(cfg, run_dir / ".hydra" / "config.yaml")


def _handmade_run(run_dir: Path, make_cfg, tokenizer_dir: Path, task: str,
                  hydra_config: bool = True) -> Path:
    """A run dir as ``litdistill-train`` writes it, with a random 2-layer BERT student."""
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    from litdistill.tasks import TASKS

    spec = TASKS[task]
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    config = BertConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2,
                        num_attention_heads=2, intermediate_size=64, num_labels=spec.num_labels)
    model = BertForSequenceClassification(config)
    model.save_pretrained(run_dir / "student")
    tokenizer.save_pretrained(run_dir / "student")
    cfg = make_cfg(f"task={task}", run_dir=run_dir)
    if hydra_config:
        _save_config(cfg, run_dir)
    results = {"status": "ok", "task": task, "metric_names": spec.metric_names,
               "student": {"name": "handmade", "params": model.num_parameters(), "score": 0.5,
                           "metrics": {}},
               "student_dir": str(run_dir / "student"), "run_dir": str(run_dir),
               "choices": {}, "overrides": []}
    (run_dir / "results.json").write_text(json.dumps(results))
    return run_dir


@pytest.fixture
def trained_run(make_cfg, tmp_path, word_tokenizer_dir) -> Path:
    """A real tiny SST-2 run (one epoch: a few seconds) with the config Hydra would save."""
    from litdistill.train import train

    cfg = make_cfg("student=sized", "student.num_layers=2", "student.hidden=32",
                   "student.heads=2", "student.intermediate=64",
                   f"student.tokenizer_name={word_tokenizer_dir}", "optimizer.lr=3e-3",
                   "scheduler=none")
    results = train(cfg)
    assert results["status"] == "ok"
    run_dir = tmp_path / "run"
    _save_config(cfg, run_dir)
    return run_dir


def test_trained_run_exports_fp32_and_int8_graphs_that_match_pytorch(trained_run, capsys):
    before = sorted(p.name for p in (trained_run / "student").iterdir())
    assert main([str(trained_run), "--quantize", "int8"]) == 0
    out = trained_run / "export"
    for name in ("model.onnx", "model.int8.onnx", "export.json", "config.json",
                 "tokenizer_config.json"):
        assert (out / name).is_file(), name
    assert not list(trained_run.glob(".export.*"))  # the temp folder was renamed away
    assert sorted(p.name for p in (trained_run / "student").iterdir()) == before
    info = json.loads((out / "export.json").read_text())
    assert info["source_run"] == str(trained_run.resolve())
    assert info["task"] == "sst2" and info["quantize"] == "int8"
    assert info["config"].endswith(".hydra/config.yaml") and info["max_length"] == 128
    assert isinstance(info["opset"], int) and info["opset"] >= 17
    assert info["inputs"] == ["input_ids", "attention_mask", "token_type_ids"]
    for name in ("model.onnx", "model.int8.onnx"):
        assert info["files"][name]["bytes"] == (out / name).stat().st_size
    checks, scores = info["checks"], info["scores"]
    assert checks["rows"] == 32  # the tiny SST-2 dev split
    assert checks["fp32"]["agreement"] >= 0.999
    assert checks["fp32"]["max_abs_logit_diff"] < 1e-4
    assert 0.0 <= checks["int8"]["agreement"] <= 1.0
    assert scores["fp32"]["accuracy"] == pytest.approx(scores["pytorch"]["accuracy"])
    # The export reproduces the score the run recorded (same dev rows, same tokenization).
    assert scores["pytorch"]["score"] == pytest.approx(info["run_score"], abs=1e-6)
    assert checks["reproduces_run_score"] is True
    assert 0.0 <= scores["int8"]["score"] <= 1.0
    printed = capsys.readouterr().out
    assert "ONNX int8" in printed and "max abs logit difference" in printed


def test_int8_graph_is_smaller_and_runs_on_dynamic_shapes(make_cfg, tmp_path,
                                                          word_tokenizer_dir):
    """Batch and sequence axes are dynamic; measure_onnx gives latency.measure's keys."""
    from transformers import AutoTokenizer

    from litdistill.latency import measure

    run = _handmade_run(tmp_path / "run", make_cfg, word_tokenizer_dir, "sst2")
    out = tmp_path / "onnx"
    export_run(run, out, quantize="int8")
    sizes = {p.name: p.stat().st_size for p in out.glob("*.onnx")}
    assert sizes["model.int8.onnx"] < sizes["model.onnx"]
    tokenizer = AutoTokenizer.from_pretrained(out)
    texts = ["a good film", "the plot was very dull and the movie quite boring", "fun"]
    for name in sizes:
        for batch_size in (1, 4):
            timing = measure_onnx(out / name, tokenizer, texts, batch_size, threads=1,
                                  warmup=1, repeats=3)
            assert timing["batch_size"] == batch_size and timing["ms_per_example"] > 0
            assert timing["examples_per_s"] == pytest.approx(batch_size / timing["median_s"])
    from transformers import AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_pretrained(run / "student")
    assert set(measure(model, tokenizer, texts, 1, repeats=1)) == set(timing)


@pytest.mark.parametrize("task", ["stsb", "mnli"])
def test_regression_and_two_eval_splits(make_cfg, tmp_path, word_tokenizer_dir, task):
    run = _handmade_run(tmp_path / "run", make_cfg, word_tokenizer_dir, task)
    info = export_run(run)
    assert info["checks"]["fp32"]["agreement"] >= 0.999
    assert info["checks"]["rows"] == 32 * len(info["eval_splits"])
    assert set(info["scores"]["fp32"]) == set(info["scores"]["pytorch"])
    assert "int8" not in info["files"] and "model.int8.onnx" not in info["files"]


def test_run_without_hydra_config_is_recomposed_from_overrides(make_cfg, tmp_path,
                                                                word_tokenizer_dir, tiny_glue):
    """``train(cfg)`` called from Python (the demo) writes no ``.hydra/``: conf/ is composed
    again with the task from results.json and the caller's overrides."""
    run = _handmade_run(tmp_path / "run", make_cfg, word_tokenizer_dir, "sst2",
                        hydra_config=False)
    info = export_run(run, overrides=[f"data.glue_dir={tiny_glue}", "data.max_length=16"])
    assert info["config"].startswith("conf/train.yaml task=sst2")
    assert info["max_length"] == 16 and info["checks"]["rows"] == 32


def test_failed_check_keeps_the_previous_export(make_cfg, tmp_path, word_tokenizer_dir,
                                                monkeypatch, capsys):
    run = _handmade_run(tmp_path / "run", make_cfg, word_tokenizer_dir, "sst2")
    (run / "export").mkdir()
    (run / "export" / "old.txt").write_text("previous export")
    monkeypatch.setattr(onnx_graphs, "MIN_AGREEMENT", 1.5)  # no graph can pass
    assert _error(capsys, [str(run)]).startswith("error: the fp32 ONNX graph predicts")
    assert sorted(p.name for p in (run / "export").iterdir()) == ["old.txt"]
    assert not list(run.glob(".export*"))


def _error(capsys, argv: list[str]) -> str:
    """The one ``error:`` line ``main`` prints (progress bars of earlier steps may precede
    it) for an exit status of 2."""
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err
    last = err.splitlines()[-1]
    assert last.startswith("error: ")
    return last


def test_bad_input_exits_2_with_one_line(make_cfg, tmp_path, word_tokenizer_dir, capsys):
    assert "no results.json" in _error(capsys, [str(tmp_path / "nowhere")])
    run = _handmade_run(tmp_path / "run", make_cfg, word_tokenizer_dir, "sst2")
    assert "--quantize 'int4'" in _error(capsys, [str(run), "--quantize", "int4"])
    assert "--opset 3" in _error(capsys, [str(run), "--opset", "3"])
    import shutil

    shutil.rmtree(run / "student")
    assert "no student/ folder" in _error(capsys, [str(run)])
    assert not (run / "export").exists()


def test_missing_extra_names_the_install_command(make_cfg, tmp_path, word_tokenizer_dir,
                                                 capsys, monkeypatch):
    run = _handmade_run(tmp_path / "run", make_cfg, word_tokenizer_dir, "sst2")
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import onnxruntime now fails
    err = _error(capsys, [str(run)])
    assert "onnxruntime" in err and "pip install 'litdistill[export]'" in err
    with pytest.raises(ExportError, match="litdistill\\[export\\]"):
        export_run(run)


def test_report_lists_exported_graphs_with_their_score_size_and_latency(trained_run, tmp_path):
    """litdistill-report adds a row per exported variant: export.json's dev score, the
    graph's size on disk, and latency timed on the graph itself."""
    from litdistill import report

    summary = export_run(trained_run, quantize="int8")
    result = report.report([trained_run], tmp_path / "report", latency=True, threads=1,
                           repeats=2)
    rows = {r["config"].rsplit(" ", 2)[-1]: r for r in result["rows"] if r["kind"] == "export"}
    int8 = next(r for r in result["rows"] if r["kind"] == "export" and "int8" in r["config"])
    assert int8["score_mean"] == pytest.approx(summary["scores"]["int8"]["score"])
    assert int8["size_mb"] == pytest.approx(summary["files"]["model.int8.onnx"]["bytes"] / 2**20)
    assert int8["latency_ms_b1"] > 0 and int8["throughput_b32"] > 0
    student = next(r for r in result["rows"] if r["kind"] == "student")
    assert int8["vocab"] == student["vocab"] > 0  # a graph has its student's vocabulary
    assert len(rows) == 2  # fp32 and int8
    md = (tmp_path / "report" / "report.md").read_text()
    assert "(onnx int8)" in md
