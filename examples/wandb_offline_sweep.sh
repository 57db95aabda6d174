#!/usr/bin/env bash
# A small sweep logged to W&B offline (nothing leaves the machine; `wandb sync` uploads it
# later): a tiny teacher fine-tuned on 512 SST-2 rows, then a --multirun of two tiny student
# sizes x {no KD, KD}, then the sweep's report as a W&B run of its own. Tiny random-init BERTs
# with the built-in character tokenizer stand in for the demo's MiniLM students, so the whole
# thing takes a few minutes on 2 CPU cores; the dashboards are the same for real models.
#
#   GLUE_DIR=/path/to/glue examples/wandb_offline_sweep.sh [OUT]     (default outputs/wandb_demo)
set -euo pipefail
OUT=${1:-outputs/wandb_demo}
: "${GLUE_DIR:?set GLUE_DIR to a folder with SST-2/train.tsv and dev.tsv}"
export WANDB_MODE=offline
GROUP=wandb_demo   # the sweep dir's name: jobs and report share this W&B group
COMMON=(task=sst2 logger=wandb data.max_train_samples=512 data.max_eval_samples=256
        data.max_length=64 trainer.log_every_n_steps=4 optimizer.lr=1e-3 scheduler=none
        teacher_gate=null)

# 1. the teacher (job type "teacher": no teacher, plain fine-tuning)
litdistill-train "${COMMON[@]}" student=sized student.num_layers=2 student.hidden=64 \
    student.heads=2 student.intermediate=128 student.name=teacher-2l trainer.max_epochs=2 \
    group=$GROUP hydra.run.dir="$OUT/teacher"

# 2. the students (job type "student" with KD, "general" without: the teacher only scored)
litdistill-train --multirun "${COMMON[@]}" teacher=pretrained \
    teacher.name_or_path="$OUT/teacher/student" student=tiny student.num_layers=1,2 \
    distill=none,kd trainer.max_epochs=1 hydra.sweep.dir="$OUT/$GROUP"

# 3. the sweep's report, also as a W&B run of job type "report" in the same group
litdistill-report "$OUT/$GROUP" --no-latency --wandb

# What was written (the offline runs as `wandb sync` would upload them)
python - "$OUT" <<'EOF'
import sys
from pathlib import Path

from litdistill.wandb_files import read_run

for folder in sorted(Path(sys.argv[1]).rglob("offline-run-*")):
    run = read_run(folder)
    keys = [k for k in ("score", "teacher_score", "retention", "agreement") if k in run["summary"]]
    print(f"{run['job_type']:8} {run['name'][-60:]:60} tags={','.join(run['tags'])}")
    print(f"         {folder}")
    print("         " + "  ".join(f"{k}={run['summary'][k]:.3f}" for k in keys))
EOF
