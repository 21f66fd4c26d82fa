#!/usr/bin/env bash
# Unpack Debian's invesalius-examples head CT (GPL-2, Cranium.inv3) into a MetaImage that
# 'ctdid simulate --real' reads: 108 x 256 x 256 int16 HU, spacing 1.5 x 0.957 x 0.957 mm
# (z, y, x; values from the project's main.plist). Nothing of it enters the repository.
#   scripts/head_ct_mhd.sh OUT_DIR      (needs: apt-get install invesalius-examples)
set -euo pipefail
OUT=${1:?output folder}
INV=${INV3:-/usr/share/doc/invesalius-examples/examples/Cranium.inv3}
[ -f "$INV" ] || { echo "no $INV: apt-get install invesalius-examples" >&2; exit 1; }
mkdir -p "$OUT"
tar -xzf "$INV" -C "$OUT" --wildcards '*/matrix.dat' '*/main.plist'
dat=$(find "$OUT" -name matrix.dat | head -1)
grep -A5 '<key>shape</key>' "$(dirname "$dat")/main.plist" | grep -q '<integer>108</integer>' \
  || { echo "unexpected Cranium.inv3 layout (shape is not 108 x 256 x 256)" >&2; exit 1; }
mv "$dat" "$OUT/cranium.raw"
cat > "$OUT/cranium.mhd" <<MHD
ObjectType = Image
NDims = 3
DimSize = 256 256 108
ElementSpacing = 0.9570312 0.9570312 1.5
ElementType = MET_SHORT
ElementByteOrderMSB = False
ElementDataFile = cranium.raw
MHD
echo "$OUT/cranium.mhd"
