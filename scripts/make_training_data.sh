#!/usr/bin/env bash
# Make the training datasets of the wide U-Nets (issue 15) with 'ctdid simulate': four dose levels
# (1/2, 1/4, 1/8, 1/16), two noise realisations each, projection-domain noise insertion on real
# normal-dose slices. Rerunning finishes an interrupted folder. About 15 min on 2 cores.
#   scripts/make_training_data.sh DATA_DIR      (needs ../shared/data and invesalius-examples)
# Inserted-noise levels (--real-i0), calibrated once, never on test data:
#   L067 (Mayo, sharp + smooth kernel): ramp window, i0 = 2.8e5, as the shipped compact models.
#   TotalSegmentator (Br38f): hann window, i0 = 6e6, aimed at the dose law sigma ~ 1/sqrt(dose)
#     (flat-region noise 10 HU at normal dose -> 20 HU at 1/4, estimated on one slice); measured
#     in the folder: 15-16 HU at 1/4, 21-24 at 1/8, 33-38 at 1/16 dose.
#   head CT (invesalius-examples): hann window, i0 = 2.8e5, aimed the same way (6.7 -> 13 HU);
#     measured: 6-9 HU at normal dose, 11-14 HU at 1/4, 23-30 at 1/16 dose.
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${1:?data folder}
CTDID=.venv/bin/ctdid
SHARED=../shared/data
mkdir -p "$DATA"
$CTDID simulate "$DATA/l067-phantoms" --seed 2024 --realisations 2 --phantoms 12 \
  --real $SHARED/mayo_fd_L067 --shape 512,512 --dtype uint16 --hu-offset -1024 --spacing 0.7,0.7 \
  --real-kernel ramp --real-i0 2.8e5
$CTDID simulate "$DATA/totalseg" --seed 2025 --realisations 2 \
  --real $SHARED/abdomen_ct_totalseg --real-kernel hann --real-i0 6e6
[ -f "$DATA/head/cranium.mhd" ] || scripts/head_ct_mhd.sh "$DATA/head"
$CTDID simulate "$DATA/head-sim" --seed 2026 --realisations 2 \
  --real "$DATA/head/cranium.mhd" --real-kernel hann --real-i0 2.8e5
