#!/usr/bin/env bash
# Every distillation preset on real SST-2 with a zoo teacher (issue: intermediate-layer KD).
# Usage: GLUE_DIR=../shared/data/glue bash experiments/objectives_sst2/run.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 WANDB_MODE=offline
out=${OUT:-outputs/objectives_sst2}
py=.venv/bin/python
# 1. the teacher: MiniLM-L6 fine-tuned on 2,000 SST-2 sentences for one epoch
$py -m litdistill.train task=sst2 student=zoo student.name=minilm_l6 \
  data.max_train_samples=2000 data.max_length=64 data.eval_batch_size=128 \
  optimizer.lr=1e-4 trainer.max_epochs=1 hydra.run.dir=$out/teacher
# 2. the five presets, phased ones as 1 + 1 epochs
$py -m litdistill.train --multirun experiment=objectives_sst2 \
  teacher.name_or_path=$out/teacher/student distill=kd,distilbert,pkd \
  hydra.sweep.dir=$out/sweep
for preset in tinybert minilm; do
  $py -m litdistill.train experiment=objectives_sst2 teacher.name_or_path=$out/teacher/student \
    distill=$preset distill.phases.0.epochs=1 distill.phases.1.epochs=1 \
    hydra.run.dir=$out/$preset
done
# 3. TinyBERT again: (a) intermediate maps matched to the layers the student was cut from,
#    (b) a prediction phase as long and with the lr of the kd run (see README.md here)
$py -m litdistill.train experiment=objectives_sst2 teacher.name_or_path=$out/teacher/student \
  distill=tinybert distill.phases.0.epochs=1 distill.phases.1.epochs=1 \
  'distill.terms.hidden.mapping=[1,3,5]' 'distill.terms.attention.mapping=[1,3,5]' \
  hydra.run.dir=$out/tinybert_cutmap
$py -m litdistill.train experiment=objectives_sst2 teacher.name_or_path=$out/teacher/student \
  distill=tinybert distill.phases.0.epochs=1 distill.phases.1.epochs=2 distill.phases.1.lr=1e-4 \
  hydra.run.dir=$out/tinybert_pred2
$py experiments/objectives_sst2/table.py $out > experiments/objectives_sst2/results.md
cat experiments/objectives_sst2/results.md
