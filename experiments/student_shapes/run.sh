#!/usr/bin/env bash
# The student-shapes study (README.md here). Grids: conf/experiment/student_shapes*.yaml;
# this only calls the CLIs, stage by stage (STAGES, default "teachers seed1 seeds23 report");
# rerunning completes an interrupted stage (skip_done). Further arguments go to every
# training command:
#   GLUE_DIR=../shared/data/glue bash experiments/student_shapes/run.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PY:-.venv/bin/python}
S=${STUDY:-outputs/student_shapes}
U=${U_ROWS:-8000}   # cap of the unlabelled rows per task
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1 WANDB_MODE=offline
train() { $PY -m litdistill.train --multirun "$@"; }
students() {  # every shape, kd on L + U, for the seeds given
  local seeds=$1; shift
  for student in "student=minilm_3l" "student=tinybert_4l" \
      "student=pruned student.layers=[0,2,4] student.hidden=256 student.intermediate=1024" \
      "student=pruned student.layers=[0,2,4] student.hidden=128 student.intermediate=512"; do
    for vocab in full task; do
      [ "$student" = "student=tinybert_4l" ] && [ "$vocab" = task ] && continue
      # shellcheck disable=SC2086  # $student holds several overrides
      train experiment=student_shapes "paths.study_dir=$S" transfer=train_rest \
        "transfer.max_rows=$U" $student "student.vocab=$vocab" "seed=$seeds" "$@"
    done
  done
}
for stage in ${STAGES:-teachers seed1 seeds23 report}; do
  case $stage in
    teachers) train experiment=student_shapes_teachers "paths.study_dir=$S" "$@" ;;
    seed1) students 1 "$@" ;;
    seeds23) students 2,3 "$@" ;;
    report) $PY -m litdistill.report "$S/students" --out experiments/student_shapes/report \
      --reference "student=tinybert_4l" ;;
  esac
done
