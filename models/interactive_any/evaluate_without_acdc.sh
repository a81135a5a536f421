#!/bin/sh
# "Unseen structures" of MODEL_CARD.md: the leave-ACDC-out run (train_config_without_acdc.json, the full
# recipe without the heart for the full model's 1702 steps) evaluated by the protocol on ACDC (never
# seen) and hippocampus (seen, for reference). Takes the run's last weights, model_last.pt (saved fp16
# like the shipped model.pt with each checkpoint; its step, from metrics.json, is in the folder name:
# step 1702 once the run is over).
# Train (repository root, PYTHONPATH=$PWD:$PWD/client, about 75-95 min on one contended CPU thread):
#   OMP_NUM_THREADS=1 nohup nice -n 10 python -m server.cli.main train --config model_configs/interactive_any.json \
#     --train-config models/interactive_any/train_config_without_acdc.json --output runs/leaveout_acdc \
#     --progress-file runs/leaveout_acdc/progress.jsonl > runs/leaveout_acdc/train.log 2>&1 &
# Then: sh models/interactive_any/evaluate_without_acdc.sh [RUN] [NAME]
# NAME (default without_acdc) names the reports' folder, eval/NAME_stepSTEP: the full recipe's arm of a
# comparison at equal steps (train_config_full_3404.json) is evaluated the same way as NAME=full.
# MODEL_CONFIG (default model_configs/interactive_any.json): the model config the run was trained with
# (the wider network's experiments/interactive_any_wide.json).
# LEFT_OUT (default acdc): the family the run left out, whose datalist gives the held-out objects of the
# last step: LEFT_OUT=hippocampus for train_without_hippocampus.sh's run (both families are evaluated either way).
set -e
RUN=${1:-runs/leaveout_acdc}
NAME=${2:-without_acdc}
PY=${PYTHON:-python}
LEFT_OUT=${LEFT_OUT:-acdc}
MODEL_CONFIG=${MODEL_CONFIG:-model_configs/interactive_any.json}
D=models/interactive_any/datalists
export OMP_NUM_THREADS=1
STEP=$($PY - "$RUN" "$MODEL_CONFIG" <<'PY'
import json, sys
from pathlib import Path
run = Path(sys.argv[1])
config = json.loads(Path(sys.argv[2]).read_text())
config.update(model_path="model_last.pt", model_format="pytorch", exports=[],
              datalist=str(Path("models/interactive_any/datalists/hippocampus.json").resolve()))
(run / "interactive_any_last.json").write_text(json.dumps(config, indent=2))
print(json.loads((run / "metrics.json").read_text())["steps"])
PY
)
OUT=models/interactive_any/eval/${NAME}_step$STEP
echo "step $STEP -> $OUT"
$PY -m server.cli.main evaluate --config "$RUN/interactive_any_last.json" --interactive \
    --datalist $D/acdc.json -o "$OUT/box_acdc" > "$RUN/eval_acdc.log" 2>&1 &
first=$!
$PY -m server.cli.main evaluate --config "$RUN/interactive_any_last.json" --interactive \
    --datalist $D/hippocampus.json -o "$OUT/box_hippocampus" > "$RUN/eval_hippocampus.log" 2>&1
wait $first
cp "$RUN/metrics.json" "$OUT/metrics.json"
# At equal steps whatever the run's length: the 4 held-out objects of the left-out family the full run
# checked itself on (2D box + 2 clicks, as in its metrics.json history), with these weights.
$PY - "$RUN" "$OUT" "$LEFT_OUT" <<'PY'
import json, sys
from pathlib import Path
from engines.backends.pytorch import load_state_dict
from engines.config.model import load_model_config
from engines.evaluation.interactive import load_interactive_datalist
from engines.networks import build_network
from engines.training.interactive import held_out_objects, load_interactive_train_config, network_callable, validate
run, out, left_out = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
cfg = load_interactive_train_config("models/interactive_any/train_config.json")
config = load_model_config(run / "interactive_any_last.json")
network = build_network(config.network)
network.load_state_dict(load_state_dict(run / "model_last.pt"))
network.eval()
objects = held_out_objects(load_interactive_datalist(f"models/interactive_any/datalists/{left_out}.json"),
                           cfg.val_objects_per_dataset, cfg.min_object_voxels)
scores = validate(network_callable(network), objects, config.roi, config.interactive.model_dump(), cfg.val_clicks)
(out / f"heldout_{left_out}.json").write_text(json.dumps({"objects": [f"{o.case} {o.structure}" for o in objects],
                                                   **scores}, indent=2) + "\n")
print(scores)
PY
