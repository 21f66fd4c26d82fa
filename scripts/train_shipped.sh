#!/usr/bin/env bash
# Train the shipped weights exactly as they were made (needs ../shared/data; about 1 h on 2 cores).
#   scripts/train_shipped.sh PAIRS_DIR RUNS_DIR
# PAIRS_DIR is created first if missing. Finished runs resume/skip; weights and cards are copied
# into src/ctdid/weights/.
set -euo pipefail
cd "$(dirname "$0")/.."
PAIRS=${1:?pairs folder}
RUNS=${2:?runs folder}
CTDID=.venv/bin/ctdid
if [ ! -f "$PAIRS/dataset.json" ]; then
  $CTDID simulate-pairs "$PAIRS" --phantoms 12 --seed 2024 --real ../shared/data/mayo_fd_L067 \
    --shape 512,512 --dtype uint16 --hu-offset -1024 --spacing 0.7,0.7 --base-dose 0.25 --real-kernel ramp --real-i0 2.8e5
fi
train() {  # name dose config
  if [ ! -f "$RUNS/$1/$1.safetensors" ]; then  # a finished run is kept, an interrupted one resumes
    $CTDID train "$PAIRS" --out "$RUNS/$1" --name "$1" --dose "$2" --config "$3"
  fi
  mkdir -p src/ctdid/weights
  cp "$RUNS/$1/$1.safetensors" "$RUNS/$1/$1.card.yaml" src/ctdid/weights/
}
train unet-d25 0.25 configs/train-compact-unet.yaml
train unet-d50 0.5 configs/train-compact-unet.yaml
train unet-d12 0.125 configs/train-compact-unet.yaml
train unet-d06 0.0625 configs/train-compact-unet.yaml
train plain-d25 0.25 configs/train-plain.yaml
