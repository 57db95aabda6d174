#!/usr/bin/env bash
# The GLUE study. The grids are conf/experiment/glue_minilm{_teachers,}.yaml; this only calls
# the CLIs. STUDY: the study's folder; TEACHER_ARGS / STUDENT_ARGS: overrides of one stage;
# further arguments go to every training command. The recorded CPU run:
#   GLUE_DIR=../shared/data/glue LITDISTILL_JOBS=2 TEACHER_ARGS="data.max_train_samples=2000" \
#     STUDENT_ARGS="data.max_train_samples=1000 trainer.max_epochs=2" \
#     bash experiments/glue_minilm/run.sh hydra/launcher=parallel
# Rerunning completes an interrupted study (skip_done).
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PY:-.venv/bin/python}
STUDY=${STUDY:-outputs/glue_minilm}
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1 WANDB_MODE=offline
train() { $PY -m litdistill.train --multirun "paths.study_dir=$STUDY" "$@"; }
train experiment=glue_minilm_teachers ${TEACHER_ARGS:-} "$@"
# 1 seed on the large tasks, the grid's 3 seeds on the small, noisy ones
train experiment=glue_minilm task=cola,sst2 seed=1 ${STUDENT_ARGS:-} "$@"
train experiment=glue_minilm task=mrpc,stsb,rte ${STUDENT_ARGS:-} "$@"
$PY -m litdistill.report "$STUDY/students" --no-latency --out experiments/glue_minilm/report
