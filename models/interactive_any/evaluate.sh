#!/bin/sh
# The protocol figures of MODEL_CARD.md on the validation splits, in two processes (one per CPU core).
# Usage (repository root, PYTHONPATH=$PWD:$PWD/client): sh models/interactive_any/evaluate.sh [OUT] [N]
# N: objects per datalist (default 30: hippocampus 10 cases x head/body/both, ACDC 10 volumes x rv/myo/lv).
set -e
OUT=${1:-runs/interactive_eval}
N=${2:-30}
PY=${PYTHON:-python}
D=models/interactive_any/datalists
export OMP_NUM_THREADS=1
$PY -m server.cli.main evaluate --config model_configs/interactive_any.json --interactive \
    --datalist $D/hippocampus.json --max-objects "$N" -o "$OUT/hippocampus" > "$OUT.hippocampus.log" 2>&1 &
first=$!
$PY -m server.cli.main evaluate --config model_configs/interactive_any.json --interactive \
    --datalist $D/acdc.json --datalist $D/brats.json --structures rv myo lv wt tc et --max-objects "$N" \
    -o "$OUT/acdc_brats" > "$OUT.acdc_brats.log" 2>&1
wait $first
