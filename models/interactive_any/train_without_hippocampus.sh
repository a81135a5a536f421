#!/bin/sh
# "Unseen structures" of MODEL_CARD.md, a second family: the leave-ACDC-out chain that gave the best
# left-out figure (6808 steps from scratch, 6808 more from those weights, 3404 more with the painted
# shapes: 17,020 in all) with hippocampus left out instead of the heart. Each config is its ACDC twin
# with "exclude_datasets": ["hippocampus"] and "workers": 1 (both cores); each stage starts from the
# last weights of the one before (model_last.pt, which aiaa train saves with each checkpoint). Needs
# runs/shapes_noacdc (painted from BraTS, spleen and TotalSegmentator images only: no hippocampus image
# either):
#   aiaa synthetic-shapes --datalist models/interactive_any/datalists/brats.json \
#     --datalist models/interactive_any/datalists/spleen.json \
#     --datalist models/interactive_any/datalists/totalsegmentator.json -o runs/shapes_noacdc
# Run from the repository root (PYTHONPATH=$PWD:$PWD/client); about 95 minutes on two free cores.
# Then: LEFT_OUT=hippocampus sh models/interactive_any/evaluate_without_acdc.sh runs/leaveout_hippocampus_shapes_17020 \
#   without_hippocampus_shapes   (the reports' folder takes the last stage's own step count, 3404: the card's is _step17020)
set -e
PY=${PYTHON:-python}
export OMP_NUM_THREADS=1
for stage in 6808 13616 shapes_17020; do
    run=runs/leaveout_hippocampus_$stage
    $PY -m server.cli.main train --config model_configs/interactive_any.json \
        --train-config models/interactive_any/train_config_without_hippocampus_$stage.json \
        --output "$run" --progress-file "$run/progress.jsonl"
done
