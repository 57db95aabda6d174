#!/usr/bin/env bash
# The GPU figures of the README in one script (benchmarks 1-3 and the GLUE study), written for
# a bare GPU machine without internet: everything it needs travels in .devcarry/ (built by
# benchmarks/gpu_carry.sh): wheels missing from the machine's image, real GLUE TSVs, the zoo
# MiniLM-L6 (weights stored in fp16 to fit the transfer; widened back to fp32 here) and
# mpnet_base's config + tokenizer (its 400 MB of weights do not travel: the MPNet benchmarks
# build it from config.json with random weights, the same compute).
#   OUT=/tmp/out bash benchmarks/gpu_check.sh     (everything lands in $OUT/results.tgz)
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/gpu_out}
W=/tmp/work   # logs and JSON; packed into $OUT/results.tgz after every step
mkdir -p "$OUT" "$W" /tmp/glue
C=.devcarry
pack() { tar czf "$OUT/results.tgz" -C /tmp --exclude='*.safetensors' --exclude='*.ckpt' \
           --exclude='*.bin' work glue 2>/dev/null; }
start=$(date +%s)
left() { echo $(( ${BUDGET:-560} - ($(date +%s) - start) )); }
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
  --target /tmp/site $C/whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD/src PYTHONUNBUFFERED=1 GLUE_DIR=$PWD/$C/glue
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1 WANDB_MODE=disabled
export LITDISTILL_HOME=/tmp/ldhome TOKENIZERS_PARALLELISM=false
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python3 - <<'EOF' || exit 1
import importlib.metadata as md, torch
print({p: md.version(p) for p in ("torch", "transformers", "lightning", "datasets", "pyarrow",
                                   "hydra-core", "torchmetrics")}, torch.cuda.get_device_name())
import shutil
from pathlib import Path
from safetensors.torch import load_file, save_file
src, dst = Path(".devcarry/models/minilm_l6"), Path("/tmp/minilm_l6")
shutil.copytree(src, dst, dirs_exist_ok=True)
save_file({k: v.float() for k, v in load_file(src / "model.safetensors").items()},
          dst / "model.safetensors", metadata={"format": "pt"})
import litdistill.train  # noqa: F401  (imports resolve here)
EOF
MPNET=(--teacher $C/models/mpnet_base --random-init --student-layers 0,2,4,6,8,10)
b() {  # b NAME SECONDS ARGS...: one benchmark, time-boxed, its log and JSON under $OUT
  local name=$1 secs=$2; shift 2
  echo "== $name ($(left) s left)"
  timeout "$secs" python3 "$@" --out "$W/$name.json" > "$W/$name.log" 2>&1
  echo "rc=$? $(tail -n 25 "$W/$name.log")"
  pack
}
# Time boxes fit the scripts' GPU defaults (200 steps x 5 runs per side); compiling the
# MPNet pair took longer than 120 s on an H100 (BUDGET=900 or more for the whole script).
b overhead_fp32 150 benchmarks/overhead.py --device cuda --precision 32 "${MPNET[@]}"
b overhead_bf16 150 benchmarks/overhead.py --device cuda --precision bf16 "${MPNET[@]}"
b overhead_bf16_compile 400 benchmarks/overhead.py --device cuda --precision bf16 --compile \
  --warmup 40 "${MPNET[@]}"
b student_vs_teacher 60 benchmarks/student_vs_teacher.py --device cuda --precision bf16 \
  --teacher /tmp/minilm_l6 --mpnet $C/models/mpnet_base --random-init
b padding 80 benchmarks/padding.py --device cuda --precision bf16 --teacher /tmp/minilm_l6 \
  --train-samples 20000
echo "== glue study ($(left) s left)"
timeout $(( $(left) - 20 )) env HARDWARE=gpu_bf16 LITDISTILL_JOBS=3 PARALLEL_TASKS=1 \
  INIT=/tmp/minilm_l6 OUT=/tmp/glue RESULTS="$W/glue" PY=python3 \
  EXTRA="data.num_workers=0" bash experiments/glue_minilm/run.sh > "$W/glue.log" 2>&1
echo "rc=$?"
python3 experiments/glue_minilm/table.py /tmp/glue > "$W/glue_table.md" 2>&1
cat "$W/glue_table.md"
pack
echo "done in $(( $(date +%s) - start )) s"
