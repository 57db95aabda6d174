#!/usr/bin/env bash
# The fixes the papers use, on the GLUE study's 3-layer student (run.sh's teachers first;
# same STUDY). Only CLI calls; each fix is one sweep of experiment=glue_minilm with the
# fix's overrides, into $STUDY/fixes/<fix>:
#   A budget:      students get the teachers' budget (2,000 rows x 3 epochs), none vs kd
#   B temperature: kd at T = 1, 4, 8
#   C alpha:       kd with alpha_kd 0.9 (classification) / 0.1 (STS-B regression)
#   D full data:   a teacher on the whole train set, students on it, none vs kd
#   GLUE_DIR=../shared/data/glue LITDISTILL_JOBS=2 bash experiments/glue_minilm/fixes.sh \
#     hydra/launcher=parallel
# The table: litdistill-report (paired gains, scores by task) into experiments/glue_minilm/fixes/.
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PY:-.venv/bin/python}
STUDY=${STUDY:-outputs/glue_minilm}
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1 WANDB_MODE=offline
budget=(data.max_train_samples=2000 trainer.max_epochs=3 student=minilm_3l)
train() { $PY -m litdistill.train --multirun experiment=glue_minilm "paths.study_dir=$STUDY" "$@"; }
train "${budget[@]}" distill=none,kd task=cola,sst2 seed=1 hydra.sweep.dir="$STUDY/fixes/A" "$@"
train "${budget[@]}" distill=none,kd task=mrpc,stsb,rte hydra.sweep.dir="$STUDY/fixes/A" "$@"
train "${budget[@]}" distill=kd distill.temperature=1,4,8 task=cola,sst2,mrpc seed=1 \
  hydra.sweep.dir="$STUDY/fixes/B" "$@"
train "${budget[@]}" distill=kd distill.alpha_kd=0.9 distill.alpha_task=0.1 task=cola,sst2 \
  seed=1 hydra.sweep.dir="$STUDY/fixes/C" "$@"
train "${budget[@]}" distill=kd distill.alpha_kd=0.1 distill.alpha_task=0.9 task=stsb \
  hydra.sweep.dir="$STUDY/fixes/C" "$@"
# D: its own full-data teachers (a study folder of their own), then students on all rows
$PY -m litdistill.train --multirun experiment=glue_minilm_teachers task=cola \
  data.max_train_samples=null "paths.study_dir=$STUDY/fixes/D" "$@"
$PY -m litdistill.train --multirun experiment=glue_minilm student=minilm_3l distill=none,kd \
  task=cola data.max_train_samples=null "paths.study_dir=$STUDY/fixes/D" "$@"
$PY -m litdistill.report "$STUDY"/fixes/{A,B,C,D/students} --no-latency \
  --out experiments/glue_minilm/fixes
