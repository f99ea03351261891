#!/usr/bin/env bash
# Epoch cost of each recipe piece on a real split: bench/throughput.py --data, towernet_simam
# 128 px, 2 threads; per recipe the loader's images/s and a real epoch (loader + steps) against
# the pure compute of the same steps. Usage: bash experiments/recipe_cost.sh SPLIT [REPEATS]
# (pause other work first: the figures are wall times). Recorded outputs:
# experiments/bench/recipe_pieces_epoch_cost_*.txt.
set -u
cd "$(dirname "$0")/.."
P=${PYTHON:-.venv/bin/python}
export MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=2147483647
for i in $(seq ${2:-1}); do
  for r in reference small_data experiments/recipes/tuning/sd_draft.yaml experiments/recipes/cost/p_rrc.yaml \
           experiments/recipes/cost/p_cj.yaml experiments/recipes/cost/p_ra.yaml experiments/recipes/cost/p_re.yaml \
           experiments/recipes/cost/p_mix.yaml; do
    $P bench/throughput.py --model towernet_simam --image-size 128 --data "$1" --recipe "$r" \
      --rounds 2 --steps 10 --json 2>/dev/null | head -1 | R="$r" $P -c "
import json, os, sys
r = json.loads(sys.stdin.read())
print(f\"{os.environ['R']:<36} loader {r['loader_img_s']:7.0f} img/s  real epoch {r['real_epoch_s']:6.2f} s  \"
      f\"compute {r['epoch_compute_s']:6.2f} s  real/compute {r['real_epoch_vs_compute']:.2f}x\")"
  done
done
