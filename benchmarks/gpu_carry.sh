#!/usr/bin/env bash
# Builds .devcarry/ (git-ignored) for benchmarks/gpu_check.sh on a GPU machine without
# internet: wheels its image lacks (for Python 3.12), the five GLUE tasks of the study, the
# zoo's MiniLM-L6 with fp16 weights (45 MB instead of 90) and mpnet_base's config + tokenizer.
#   LITDISTILL_HOME=... GLUE_DIR=../shared/data/glue bash benchmarks/gpu_carry.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
C=.devcarry
home=${LITDISTILL_HOME:-$HOME/.cache/litdistill}
mkdir -p $C/whl $C/glue $C/models/minilm_l6 $C/models/mpnet_base
$PY -m litdistill.zoo_cli fetch minilm_l6 mpnet_base
$PY -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 -d $C/whl \
  hydra-core==1.3.8 omegaconf==2.3.1 datasets==5.2.0 "dill<0.4.2" "multiprocess<0.70.20" \
  hydra-joblib-launcher==1.2.0
$PY -m pip wheel -q --no-deps -w $C/whl antlr4-python3-runtime==4.9.3  # sdist only on PyPI
for t in CoLA SST-2 MRPC STS-B RTE; do
  mkdir -p $C/glue/$t && cp "${GLUE_DIR:-../shared/data/glue}/$t/"{train,dev}.tsv $C/glue/$t/
done
for f in config.json special_tokens_map.json tokenizer.json tokenizer_config.json vocab.txt; do
  cp "$home/zoo/minilm_l6/$f" $C/models/minilm_l6/
  cp "$home/zoo/mpnet_base/$f" $C/models/mpnet_base/
done
$PY - "$home/zoo/minilm_l6/model.safetensors" $C/models/minilm_l6/model.safetensors <<'PYEOF'
import sys
from safetensors.torch import load_file, save_file
state = load_file(sys.argv[1])
save_file({k: v.half().contiguous() for k, v in state.items()}, sys.argv[2],
          metadata={"format": "pt"})
PYEOF
du -sh $C
