#!/usr/bin/env bash
# The GLUE study: 5 teachers, then per task 2 students x {none, kd, pkd} x seeds
# (3 seeds on MRPC, STS-B, RTE; 1 on CoLA, SST-2), then the table and the report plots.
#   GLUE_DIR=../shared/data/glue bash experiments/glue_minilm/run.sh
# Knobs: HARDWARE (cpu | gpu | gpu_bf16), LITDISTILL_JOBS (parallel jobs), INIT (the teachers'
# starting weights: zoo name or folder), PARALLEL_TASKS, OUT (run folder), SEEDS_SMALL, EPOCHS, TASKS, and
# RESULTS (where the table and plots go), TEACHER_EXTRA / STUDENT_EXTRA (overrides of one
# stage), EXTRA (overrides of both, e.g. EXTRA="data.max_train_samples=64 teacher_gate=null" to smoke-test).
set -euo pipefail
cd "$(dirname "$0")/../.."
source experiments/glue_minilm/teacher_of.sh
PY=${PY:-.venv/bin/python}
OUT=${OUT:-outputs/glue_minilm}
INIT=${INIT:-minilm_l6}
SEEDS_SMALL=${SEEDS_SMALL:-1,2,3}
export LITDISTILL_JOBS=${LITDISTILL_JOBS:-1}
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1 WANDB_MODE=offline
# Lean checkpoints: the best weights only (the students are exported anyway), no progress bars.
common=(experiment=glue_minilm "hardware=${HARDWARE:-cpu}" hydra/launcher=parallel
        "trainer.max_epochs=${EPOCHS:-3}" callbacks.model_checkpoint.save_last=false
        ++callbacks.model_checkpoint.save_weights_only=true "~callbacks.progress_bar"
        ++trainer.enable_progress_bar=false trainer.enable_model_summary=false ${EXTRA:-})
TASKS=${TASKS:-cola sst2 mrpc stsb rte}
# One folder per task (not per job number), so a rerun with other TASKS finds its teachers.
$PY -m litdistill.train --multirun "${common[@]}" teacher=none student=pretrained \
  "student.name_or_path=$INIT" distill=none "task=${TASKS// /,}" \
  hydra.sweep.dir="$OUT/teachers" 'hydra.sweep.subdir=${task.name}' ${TEACHER_EXTRA:-}
students() {  # one task's sweep: 2 students x 3 objectives x seeds, from that task's teacher
  local task=$1 seeds=1 teacher
  case $task in mrpc|stsb|rte) seeds=$SEEDS_SMALL ;; esac
  teacher=$(teacher_of "$OUT/teachers" "$task")
  $PY -m litdistill.train --multirun "${common[@]}" "task=$task" \
    teacher=pretrained "teacher.name_or_path=$teacher" \
    student=minilm_3l,minilm_2l distill=none,kd,pkd "seed=$seeds" hydra.sweep.dir="$OUT/$task" \
    ${STUDENT_EXTRA:-}
}
for task in $TASKS; do
  # PARALLEL_TASKS=1: the five sweeps side by side (a GPU that small jobs leave mostly idle)
  if [ -n "${PARALLEL_TASKS:-}" ]; then students "$task" & else students "$task"; fi
done
wait
RESULTS=${RESULTS:-experiments/glue_minilm}
mkdir -p "$RESULTS"
$PY experiments/glue_minilm/table.py "$OUT" > "$RESULTS/results.md"
# shellcheck disable=SC2046
$PY -m litdistill.report $(printf "$OUT/%s " $TASKS) --no-latency --out "$RESULTS/report"
cat "$RESULTS/results.md"
