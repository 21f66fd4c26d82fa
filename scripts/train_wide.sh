#!/usr/bin/env bash
# Train the wide U-Net(s) of configs/train-wide-unet.yaml (issue 15). Needs ../shared/data and
# Debian's invesalius-examples; the datasets are made first when missing. An interrupted run
# resumes from its checkpoint when the same command is run again.
#   scripts/train_wide.sh DATA_DIR RUNS_DIR [NAME:DOSE ...]    (default: unet-wide-d25:0.25)
# CONFIG=... picks another training config (default configs/train-wide-unet.yaml); the dose
# family: CONFIG=configs/train-wide-unet-family.yaml scripts/train_wide.sh DATA RUNS \
#   unet-wide-d50:0.5 unet-wide-d12:0.125 unet-wide-d06:0.0625
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${1:?data folder}
RUNS=${2:?runs folder}
shift 2
MODELS=("$@")
[ ${#MODELS[@]} -gt 0 ] || MODELS=(unet-wide-d25:0.25)
CTDID=.venv/bin/ctdid
CONFIG=${CONFIG:-configs/train-wide-unet.yaml}
scripts/make_training_data.sh "$DATA"  # finished folders are checked and kept
for spec in "${MODELS[@]}"; do
  name=${spec%%:*}
  dose=${spec##*:}
  if [ ! -f "$RUNS/$name/$name.safetensors" ]; then
    $CTDID train "$DATA/l067-phantoms" --extra-dataset "$DATA/totalseg" \
      --extra-dataset "$DATA/head-sim" --config "$CONFIG" \
      --name "$name" --dose "$dose" --out "$RUNS/$name"
  fi
done
