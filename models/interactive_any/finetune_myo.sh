#!/bin/sh
# Fine-tune interactive_any on the ACDC myocardium through the jobs API (POST /admin/jobs, kind finetune),
# from the serving version's weights; the job's quality gate runs the interactive protocol (2D box + 5 clicks,
# `aiaa evaluate --interactive`) on the 20 validation myocardia with the serving and the new weights.
# It is also checked on the first 10 validation objects of each datalist the version was trained on (the gate
# refuses a version that forgets them). REPLAY=0.5 mixes those datalists into half of the training samples.
# Run from the repository root; writes under $OUT (default runs/finetune_myo/). Needs ../shared/data (ACDC).
set -eu
OUT=${OUT:-runs/finetune_myo}
REPLAY=${REPLAY:-0}
MAX_DROP=${MAX_DROP:-0.0}
PORT=${PORT:-5237}
MINUTES=${MINUTES:-12}
mkdir -p $OUT
# The job's datalist: ACDC with one structure, myo (label 2), absolute paths.
python - <<PY
import json
from pathlib import Path
from engines.data.datalist import load_datalist
lists = load_datalist("models/interactive_any/datalists/acdc.json")
json.dump({"dataset": "acdc", "structures": {"myo": [2]}, "training": lists["training"],
           "validation": lists["validation"]}, open("$OUT/acdc_myo.json", "w"), indent=1)
PY
echo '[{"name": "interactive_any", "class": "InteractiveEngine", "module": "engines.tasks.interactive",
  "config_file": "'$PWD'/model_configs/interactive_any.json"}]' > $OUT/engine_pool.json
AIAA_STATE_DIR=$OUT/state AIAA_ADMIN_TOKEN=finetune-token AIAA_DATA_ROOTS=$PWD/$OUT:$(cd .. && pwd)/shared/data AIAA_WARMUP=false \
  AIAA_JOB_NICENESS=10 OMP_NUM_THREADS=1 \
  python -m server.cli.main serve --config $OUT/engine_pool.json --port $PORT --log-level warning > $OUT/server.log 2>&1 &
echo $! > $OUT/server.pid
until curl -sf http://127.0.0.1:$PORT/health/live > /dev/null; do sleep 2; done
curl -s -X POST http://127.0.0.1:$PORT/admin/jobs -H "Authorization: Bearer finetune-token" \
  -H "Content-Type: application/json" -d '{"kind": "finetune", "model": "interactive_any",
  "datalist": "'$PWD/$OUT'/acdc_myo.json", "params": {"max_minutes": '$MINUTES', "schedule_minutes": '$MINUTES',
  "learning_rate": 0.0005, "min_learning_rate": 0.00001, "checkpoint_minutes": 4, "num_threads": 1,
  "val_objects_per_dataset": 4, "max_dice_drop": '$MAX_DROP', "replay": '$REPLAY'}}' | tee $OUT/job.json
echo
echo "follow: curl -s -H 'Authorization: Bearer finetune-token' http://127.0.0.1:$PORT/admin/jobs/<job_id>"
