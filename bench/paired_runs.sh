#!/usr/bin/env bash
# Repeated paired invocations of bench/throughput.py against PyTorch (channels-last; bf16 under
# its CPU autocast when -o train.amp=bf16): N invocations per model, each its own rounds, ours
# and PyTorch's interleaved; prints each invocation's paired-by-round median ratio, then the
# median and range over invocations. PyTorch must be importable by $PYTHON (a separate venv).
#   PYTHON=/path/to/venv-with-torch/bin/python bash bench/paired_runs.sh N AMP MODEL:SIZE:STEPS ...
set -eu
n=$1 amp=$2; shift 2
cd "$(dirname "$0")/.."
P=${PYTHON:-.venv/bin/python}
lscpu | grep -m1 "Model name"
for spec in "$@"; do
  IFS=: read -r model size steps <<< "$spec"
  ratios=()
  for i in $(seq "$n"); do
    line=$($P bench/throughput.py --model "$model" --image-size "$size" --batch-size 32 --steps "$steps" \
           --rounds 3 -o train.amp="$amp" --reference torch-cl --json 2>/dev/null | head -1)
    r=$(python3 -c 'import json,sys; d=json.loads(sys.argv[1]); rounds=[round(x, 3) for x in d["train_vs_torch_rounds"]]; print("%.3f ours %.1f img/s, rounds %s" % (d["train_vs_torch_median"], d["train_img_s"], rounds))' "$line")
    echo "$model $size px $amp invocation $i: train ours/torch-cl paired median $r"
    ratios+=("${r%% *}")
  done
  python3 -c 'import statistics,sys; r=sorted(map(float,sys.argv[3:])); print(f"{sys.argv[1]} {sys.argv[2]}: median {statistics.median(r):.2f}x over {len(r)} invocations (range {r[0]:.2f}-{r[-1]:.2f})")' \
    "$model $size px" "$amp" "${ratios[@]}"
done
