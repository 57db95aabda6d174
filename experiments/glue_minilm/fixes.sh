#!/usr/bin/env bash
# The fixes the papers use, tried on the GLUE study's 3-layer student (run.sh must have made
# the teachers in $OUT/teachers first). Every run: minilm_3l cut from a task's teacher; A-C
# use run.sh's teachers and give the students the teachers' own data budget (STUDENT_BUDGET,
# default 2,000 rows x 3 epochs) instead of run.sh's 1,000 x 2. Results in
# $OUT/fixes/<fix>/<task>; the table: fixes.py (written to $RESULTS/fixes.md).
#   A budget:      distill=none,kd (T 2, alpha 0.5)
#   B temperature: kd at T = 1, 4, 8 (alpha 0.5)
#   C alpha:       kd with alpha_kd 0.9 / alpha_task 0.1 (classification: mostly soft targets);
#                  alpha_kd 0.1 / alpha_task 0.9 on STS-B (regression KD pulls towards a weak teacher)
#   D full data:   a new teacher on the whole train set (3 epochs, as run.sh's but uncapped),
#                  then distill=none,kd students on the whole train set, 3 epochs
#   GLUE_DIR=../shared/data/glue LITDISTILL_JOBS=2 OUT=<run.sh's OUT> bash experiments/glue_minilm/fixes.sh
# Knobs: FIXES (default "A B C D"), TASKS_A / TASKS_B / TASKS_C / TASKS_D, SEEDS_SMALL (MRPC,
# STS-B, RTE; default 1,2,3), SEEDS_LARGE (CoLA, SST-2; default 1), HARDWARE,
# STUDENT_BUDGET, INIT (D's teacher start), EXTRA (overrides of every run), RESULTS, PY.
set -euo pipefail
cd "$(dirname "$0")/../.."
source experiments/glue_minilm/teacher_of.sh
PY=${PY:-.venv/bin/python}
OUT=${OUT:-outputs/glue_minilm}
SEEDS_SMALL=${SEEDS_SMALL:-1,2,3}
export LITDISTILL_JOBS=${LITDISTILL_JOBS:-1}
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1 WANDB_MODE=offline
common=(experiment=glue_minilm "hardware=${HARDWARE:-cpu}" hydra/launcher=parallel
        callbacks.model_checkpoint.save_last=false ++callbacks.model_checkpoint.save_weights_only=true
        "~callbacks.progress_bar" ++trainer.enable_progress_bar=false
        trainer.enable_model_summary=false trainer.max_epochs=3 ${EXTRA:-})
budget=(${STUDENT_BUDGET:-data.max_train_samples=2000 trainer.max_epochs=3})
sweep() {  # sweep <fix> <task> <teachers dir> <overrides...>: into $OUT/fixes/<fix>/<task>
  local fix=$1 task=$2 teachers=$3 seeds=1 teacher
  shift 3
  case $task in mrpc|stsb|rte) seeds=$SEEDS_SMALL ;; *) seeds=${SEEDS_LARGE:-1} ;; esac
  teacher=$(teacher_of "$teachers" "$task")
  $PY -m litdistill.train --multirun "${common[@]}" teacher=pretrained student=minilm_3l \
    "task=$task" "teacher.name_or_path=$teacher" "seed=$seeds" \
    hydra.sweep.dir="$OUT/fixes/$fix/$task" "$@"
}
for fix in ${FIXES:-A B C D}; do
  case $fix in
    A) for t in ${TASKS_A:-cola sst2 mrpc stsb rte}; do
         sweep budget "$t" "$OUT/teachers" "${budget[@]}" distill=none,kd; done ;;
    B) for t in ${TASKS_B:-cola sst2 mrpc}; do
         sweep temperature "$t" "$OUT/teachers" "${budget[@]}" distill=kd \
           distill.temperature=1,4,8; done ;;
    C) for t in ${TASKS_C:-cola sst2 stsb}; do
         if [ "$t" = stsb ]; then a=0.1; else a=0.9; fi
         sweep "alpha_$a" "$t" "$OUT/teachers" "${budget[@]}" distill=kd \
           "distill.alpha_kd=$a" "distill.alpha_task=$(python3 -c "print(round(1 - $a, 2))")"
       done ;;
    D) tasks=${TASKS_D:-cola}
       $PY -m litdistill.train --multirun "${common[@]}" teacher=none student=pretrained \
         "student.name_or_path=${INIT:-minilm_l6}" distill=none "task=${tasks// /,}" \
         hydra.sweep.dir="$OUT/fixes/full_data/teachers" 'hydra.sweep.subdir=${task.name}'
       for t in $tasks; do
         sweep full_data "$t" "$OUT/fixes/full_data/teachers" distill=none,kd; done ;;
  esac
done
RESULTS=${RESULTS:-experiments/glue_minilm}
$PY experiments/glue_minilm/fixes.py "$OUT" > "$RESULTS/fixes.md"
cat "$RESULTS/fixes.md"
