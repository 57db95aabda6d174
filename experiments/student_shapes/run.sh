#!/usr/bin/env bash
# The student-shapes study (README.md here). Grids: conf/experiment/student_shapes*.yaml;
# this only calls the CLIs, stage by stage (STAGES, default $ALL below, most needed first);
# rerunning completes an interrupted stage (skip_done).
# Jobs run task by task and the shapes the goals compare first, so an interrupted study has
# its key pairs. Further arguments go to every training command:
#   GLUE_DIR=../shared/data/glue bash experiments/student_shapes/run.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PY:-.venv/bin/python}
S=${STUDY:-outputs/student_shapes}
U=${U_ROWS:-8000}   # cap of the unlabelled rows per task
TASKS=${TASKS:-sst2 mrpc}
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1 WANDB_MODE=offline
train() { $PY -m litdistill.train --multirun "$@"; }
declare -A SHAPE=(
  [random_4x312]="student=tinybert_4l student.vocab=full"
  [cut_3x384]="student=minilm_3l student.vocab=full"
  [cut_3x384_vocab]="student=minilm_3l student.vocab=task"
  [pruned_3x256]="student=pruned student.layers=[0,2,4] student.hidden=256 student.intermediate=1024 student.vocab=full"
  [pruned_3x256_vocab]="student=pruned student.layers=[0,2,4] student.hidden=256 student.intermediate=1024 student.vocab=task"
  [pruned_3x128]="student=pruned student.layers=[0,2,4] student.hidden=128 student.intermediate=512 student.vocab=full"
  [pruned_3x128_vocab]="student=pruned student.layers=[0,2,4] student.hidden=128 student.intermediate=512 student.vocab=task"
  # the task vocabulary + every other piece of all the task's training sentences (extras)
  [cut_3x384_vocab_all]="student=minilm_3l student.vocab=task student.vocab_extra=3000 student.vocab_corpus=[$S/vocab/sst2_train.txt]"
  # heads and FFN neurons by Michel et al.'s gradient importance instead of activations
  [pruned_3x256_gradient]="student=pruned student.layers=[0,2,4] student.hidden=256 student.intermediate=1024 student.vocab=full student.importance=gradient"
)
CORE="random_4x312 pruned_3x256 cut_3x384 cut_3x384_vocab pruned_3x256_vocab"
SMALL="pruned_3x128 pruned_3x128_vocab"
students() {  # students SEEDS SHAPE...: kd on L + U, task by task
  local seeds=$1; shift
  for task in $TASKS; do
    for shape in "$@"; do
      # shellcheck disable=SC2086  # a shape holds several overrides
      train experiment=student_shapes "paths.study_dir=$S" "task=$task" transfer=train_rest \
        "transfer.max_rows=$U" ${SHAPE[$shape]} "seed=$seeds" $EXTRA
    done
  done
}
baselines() {  # baselines SHAPE...: the no-KD twins (distill=none on L alone), seeds 1-3
  for task in $TASKS; do
    for shape in "$@"; do
      # shellcheck disable=SC2086
      train experiment=student_shapes "paths.study_dir=$S" "task=$task" distill=none \
        ${SHAPE[$shape]} seed=1,2,3 $EXTRA
    done
  done
}
train_text() {  # SST-2's 67,349 training sentences, a text per line (the vocab_corpus)
  mkdir -p "$S/vocab"
  if [ ! -s "$S/vocab/sst2_train.txt" ]; then
    tail -n +2 "$GLUE_DIR/SST-2/train.tsv" | cut -f1 > "$S/vocab/sst2_train.txt.tmp"
    mv "$S/vocab/sst2_train.txt.tmp" "$S/vocab/sst2_train.txt"
  fi
}
EXTRA="$*"
ALL="teachers seed1 seeds23 baselines vocab_all small23 gradient baselines_rest export report"
for stage in ${STAGES:-$ALL}; do
  case $stage in
    teachers) train experiment=student_shapes_teachers "paths.study_dir=$S" "$@" ;;
    seed1) students 1 $CORE $SMALL ;;
    seeds23) students 2,3 $CORE ;;
    small23) students 2,3 $SMALL ;;
    baselines) baselines random_4x312 pruned_3x256 ;;
    baselines_rest) baselines cut_3x384 pruned_3x128 ;;
    vocab_all)  # why vocabulary pruning costs what it costs
      train_text; TASKS=sst2 students 1,2,3 cut_3x384_vocab_all ;;
    gradient) students 1,2,3 pruned_3x256_gradient ;;  # the other importance estimator
    export)  # the int8 ONNX graph of every seed-1 student, timed by the report
      for run in "$S"/students/seed=1,*; do
        [ -e "$run/results.json" ] && [ ! -e "$run/export/export.json" ] || continue
        $PY -m litdistill.export "$run" --quantize int8
      done ;;
    report)  # intervals against random 4 x 312 (+ latency), then against the depth cut
      $PY -m litdistill.report "$S/students" --out experiments/student_shapes/report \
        --reference "student=tinybert_4l transfer=train_rest"
      $PY -m litdistill.report "$S/students" --out "$S/report_vs_cut" \
        --no-latency --reference "student=minilm_3l student.vocab=full transfer=train_rest"
      cp "$S/report_vs_cut/intervals.csv" experiments/student_shapes/intervals_vs_cut.csv
      $PY experiments/student_shapes/summary.py > "$S/results.md.tmp"
      mv "$S/results.md.tmp" experiments/student_shapes/results.md ;;
  esac
done
