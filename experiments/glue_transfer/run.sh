#!/usr/bin/env bash
# The transfer study (README.md here). Grids: conf/experiment/glue_transfer*.yaml; this only
# calls the CLIs, stage by stage (STAGES, default "teachers core extra full report"); rerunning
# completes an interrupted stage (skip_done). Further arguments go to every training command:
#   GLUE_DIR=../shared/data/glue LITDISTILL_JOBS=2 bash experiments/glue_transfer/run.sh \
#     hydra/launcher=parallel
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PY:-.venv/bin/python}
A=${STUDY:-outputs/glue_transfer}   # protocol A (label-scarce)
B=${STUDY_FULL:-outputs/glue_transfer_full}   # protocol B (full labels)
U=${U_ROWS:-8000}                   # cap of the unlabelled rows per task
BT=task=${B_TASKS:-cola,sst2,mrpc,stsb,rte}   # protocol B's tasks (a subset when time is short)
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1 WANDB_MODE=offline
train() { $PY -m litdistill.train --multirun "$@"; }
for stage in ${STAGES:-teachers core extra full report}; do
  case $stage in
    teachers) train experiment=glue_transfer_teachers "paths.study_dir=$A" "$@" ;;
    core)  # the main claim: baseline vs kd on L + U, 3 seeds each, paired by seed
      train experiment=glue_transfer "paths.study_dir=$A" distill=none "$@"
      train experiment=glue_transfer "paths.study_dir=$A" distill=kd transfer=train_rest \
        "transfer.max_rows=$U" "$@" ;;
    extra)  # 1 seed each: kd on L alone, kd on L + augmented L, pkd on L + U
      train experiment=glue_transfer "paths.study_dir=$A" seed=1 distill=kd "$@"
      train experiment=glue_transfer "paths.study_dir=$A" seed=1 distill=kd augment=tinybert \
        augment.copies=4 "$@"
      train experiment=glue_transfer "paths.study_dir=$A" seed=1 distill=pkd \
        transfer=train_rest "transfer.max_rows=$U" "$@" ;;
    full)  # protocol B: whole training sets (SST-2 capped), baseline vs kd vs kd + augmentation
      train experiment=glue_transfer_teachers "paths.study_dir=$B" data.max_train_samples=10000 \
        trainer.max_epochs=3 "$BT" "$@"
      train experiment=glue_transfer "paths.study_dir=$B" data.max_train_samples=10000 seed=1 \
        distill=none,kd "$BT" "$@"
      train experiment=glue_transfer "paths.study_dir=$B" data.max_train_samples=10000 seed=1 \
        distill=kd augment=tinybert augment.copies=2 "$BT" "$@" ;;
    report)
      $PY -m litdistill.report "$A/students" --no-latency --out experiments/glue_transfer/report
      $PY -m litdistill.report "$B/students" --no-latency \
        --out experiments/glue_transfer/report_full ;;
  esac
done
