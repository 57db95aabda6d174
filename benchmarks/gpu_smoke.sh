#!/usr/bin/env bash
# Every benchmark once, in a short mode, on a bare GPU machine without internet: checks the
# CUDA paths of the scripts (synchronised timing, fused AdamW, bf16, CUDA profiler, GPU
# memory, compile last with whatever time is left), not figures. Needs .devcarry/ (built by
# benchmarks/gpu_carry.sh: wheels, GLUE, MiniLM-L6 with fp16 weights, mpnet_base's config +
# tokenizer). padding and teacher_cache run train(cfg) with hardware=gpu_bf16, which needs
# clipping to work with bf16 + fused AdamW (see the benchmarks' report). About 9 minutes.
#   OUT=/tmp/out bash benchmarks/gpu_smoke.sh     (logs and JSON packed in $OUT/smoke.tgz)
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/gpu_smoke}
W=/tmp/smoke
mkdir -p "$OUT" "$W"
C=.devcarry
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
  --target /tmp/site $C/whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD/src PYTHONUNBUFFERED=1 GLUE_DIR=$PWD/$C/glue
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1 WANDB_MODE=disabled
export LITDISTILL_HOME=/tmp/ldhome TOKENIZERS_PARALLELISM=false
MINILM=(--teacher $C/models/minilm_l6)
MPNET=(--teacher $C/models/mpnet_base --random-init --student-layers 0,2,4,6,8,10)
start=$(date +%s)
left() { echo $(( ${BUDGET:-570} - ($(date +%s) - start) )); }
b() {  # b NAME SECONDS SCRIPT ARGS...: one time-boxed run, its log and JSON packed
  local name=$1 secs=$2; shift 2
  echo "== $name ($(( $(date +%s) - start )) s in, $secs s allowed)"
  timeout "$secs" python3 "$@" --out "$W/$name.json" > "$W/$name.log" 2>&1
  echo "rc=$?"
  grep -vE "Warning|warn\(|examples/s|^\s*$" "$W/$name.log" | tail -n 14
  tar czf "$OUT/smoke.tgz" -C /tmp smoke
}
b overhead_bf16 60 benchmarks/overhead.py --device cuda --precision bf16 "${MPNET[@]}" \
  --warmup 10 --steps 100 --repeats 2
b student_vs_teacher 50 benchmarks/student_vs_teacher.py --device cuda --precision bf16 --quick \
  "${MINILM[@]}" --mpnet $C/models/mpnet_base --random-init
b profile_step 70 benchmarks/profile_step.py --device cuda --precision bf16 "${MPNET[@]}" \
  --steps 10
b padding 60 benchmarks/padding.py --device cuda --precision bf16 --quick "${MINILM[@]}"
b teacher_cache 110 benchmarks/teacher_cache.py --device cuda --precision bf16 --quick \
  "${MINILM[@]}"
TORCH_LOGS=recompiles b overhead_bf16_compile "$(left)" benchmarks/overhead.py --device cuda \
  --precision bf16 --compile "${MPNET[@]}" --warmup 15 --steps 60 --repeats 1
echo "done in $(( $(date +%s) - start )) s"
