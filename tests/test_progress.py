"""Logs off a terminal: plain progress lines, no redraw frames, no overlong lines."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from lightning.pytorch.callbacks import RichProgressBar, TQDMProgressBar

from litdistill.errors import ConfigError
from litdistill.progress import LogLines, progress_bar, resolve
from litdistill.train import train
from litdistill.wandb_files import read_run


def test_progress_modes():
    assert resolve("rich") == "rich" and resolve("none") == "none"
    assert isinstance(progress_bar("rich"), RichProgressBar)
    assert isinstance(progress_bar("tqdm"), TQDMProgressBar)
    assert progress_bar("log").is_enabled
    silent = progress_bar("none")
    assert isinstance(silent, LogLines) and not silent.is_enabled
    # pytest captures stdout: not a terminal
    assert resolve("auto") == "log"
    with pytest.raises(ConfigError, match="progress=bar: must be one of auto, rich"):
        resolve("bar")


def test_misspelled_progress_fails_before_weights(make_cfg, no_weights):
    with pytest.raises(ConfigError, match="progress=quiet"):
        train(make_cfg("progress=quiet"))


def test_log_off_a_terminal_is_plain_lines_and_wandb_is_organised(tmp_path, tiny_glue):
    """`litdistill-train` with stdout and stderr to pipes (a sweep, SLURM, CI): no `\\r`
    frames, no line over 300 characters, plain step/loss lines; the W&B run (offline) is a
    `student` job tagged with the Hydra choices and named after the overrides."""
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", WANDB_MODE="offline")
    run_dir = tmp_path / "run"
    args = ["student=tiny", "teacher=tiny", "distill=kd", f"data.glue_dir={tiny_glue}",
            "teacher_gate=null", "logger=wandb", "trainer.max_epochs=2", "data.batch_size=8",
            f"paths.cache_dir={tmp_path}/cache", f"hydra.run.dir={run_dir}"]
    proc = subprocess.run([sys.executable, "-m", "litdistill.train", *args], cwd=tmp_path,
                          env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-2000:]
    output = proc.stdout + proc.stderr
    assert "\r" not in output
    assert max(len(line) for line in output.splitlines()) <= 300
    steps = re.findall(r"epoch (\d)/2  step (\d+)/16  loss \d+\.\d+  [\d.]+ samples/s  ETA",
                       output)
    assert steps == [("1", "8"), ("2", "16")]
    assert "epoch 2 validation (step 16): val/accuracy" in output
    assert "Tip:" not in output and "LeafSpec" not in output
    run = read_run(run_dir, wait=60)
    assert run["job_type"] == "student"
    assert run["tags"] == ["task:sst2", "objective:kd", "student:tiny", "transfer:none",
                           "augment:none"]
    assert run["name"].startswith("student=tiny,teacher=tiny,distill=kd")
    assert Path(run_dir, "disagreements.csv").is_file()


HEADERS = ["model", "dev acc", "params", "ms/example (b=1)", "speedup b=32"]
ROWS = [["teacher (MiniLM-L6, fine-tuned)", "0.7915", "22,713,986", "7.2", "1.00x"],
        ["student 3L + KD, ONNX int8", "0.8092", "17,390,594", "0.9", "6.03x"]]


def test_narrow_table_keeps_cells_whole_at_80_columns():
    from litdistill.console import narrow_table

    wide = narrow_table(HEADERS, ROWS, width=120).splitlines()
    assert len(wide) == 4 and wide[2].split("  ")[0] == "teacher (MiniLM-L6, fine-tuned)"
    narrow = narrow_table(HEADERS, ROWS, width=60, title="demo").splitlines()
    assert narrow[0] == "demo" and max(len(x) for x in narrow) <= 60
    # two header lines, a rule, rows labelled A/B, and the legend with the full names
    assert narrow[3].split()[:2] == ["A", "0.7915"] and narrow[4].split()[:2] == ["B", "0.8092"]
    assert narrow[-2:] == ["  A = teacher (MiniLM-L6, fine-tuned)",
                           "  B = student 3L + KD, ONNX int8"]
    for cell in ("22,713,986", "17,390,594", "6.03x"):
        assert cell in "\n".join(narrow)
    # too narrow for any layout: the Markdown table, cells whole
    tiny = narrow_table(HEADERS, ROWS, width=20).splitlines()
    assert tiny[0] == "| model | dev acc | params | ms/example (b=1) | speedup b=32 |"
    assert tiny[2].startswith("| teacher (MiniLM-L6, fine-tuned) | 0.7915 |")
