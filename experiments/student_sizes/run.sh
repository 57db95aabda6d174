#!/usr/bin/env bash
# Reproduces experiments/student_sizes/: fine-tune the zoo's MiniLM-L6 on movie_sentiment
# (the demo's teacher), then one --multirun over student sizes, which ends with the report.
#   bash experiments/student_sizes/run.sh        (from the repo root, after `make install`)
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PY:-.venv/bin/python}
RUN=${RUN:-outputs/student_sizes}
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1 WANDB_MODE=offline
$PY -m litdistill.zoo_cli fetch minilm_l6 movie_sentiment
$PY -m litdistill.train experiment=demo_teacher hydra.run.dir="$RUN/teacher"
time $PY -m litdistill.train --multirun experiment=student_sizes \
  teacher.name_or_path="$RUN/teacher/student" hydra.sweep.dir="$RUN/sweep"
cp "$RUN"/sweep/report.md "$RUN"/sweep/report.csv "$RUN"/sweep/*.png experiments/student_sizes/
