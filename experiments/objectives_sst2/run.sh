#!/usr/bin/env bash
# Every distillation preset on real SST-2 with a zoo teacher. The grid is
# conf/experiment/objectives_sst2.yaml; this only calls the CLIs.
#   GLUE_DIR=../shared/data/glue bash experiments/objectives_sst2/run.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PY:-.venv/bin/python}
STUDY=${STUDY:-outputs/objectives_sst2}
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 WANDB_MODE=offline
train() { $PY -m litdistill.train --multirun experiment=objectives_sst2 "paths.study_dir=$STUDY" "$@"; }
# 1. the teacher: MiniLM-L6 fine-tuned on 2,000 SST-2 sentences for one epoch
$PY -m litdistill.train task=sst2 student=zoo data.max_train_samples=2000 data.max_length=64 \
  data.eval_batch_size=128 optimizer.lr=1e-4 trainer.max_epochs=1 \
  hydra.run.dir="$STUDY/teachers/sst2"
# 2. the single-phase presets (the experiment's grid), then the phased ones as 1 + 1 epochs
train
train distill=tinybert,minilm distill.phases.0.epochs=1 distill.phases.1.epochs=1
# 3. TinyBERT again: (a) intermediate maps matched to the layers the student was cut from,
#    (b) a prediction phase as long and with the lr of the kd run (see README.md here)
train distill=tinybert distill.phases.0.epochs=1 distill.phases.1.epochs=1 \
  'distill.terms.hidden.mapping=[1,3,5]' 'distill.terms.attention.mapping=[1,3,5]'
train distill=tinybert distill.phases.0.epochs=1 distill.phases.1.epochs=2 \
  distill.phases.1.lr=1e-4
$PY -m litdistill.report "$STUDY/students" --no-latency --out experiments/objectives_sst2/report
