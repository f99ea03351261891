#!/usr/bin/env bash
# Longer or larger instead of a stronger recipe: small_data unchanged, from scratch, the
# reference 16 classes, seeds 0-2, at 60 epochs (128 px), 30 epochs at 160 px, and 90 epochs
# (128 px); towernet_simam and towernet (towernet_se at 60 epochs too), three runs side by side.
# Compared with small_data at 128 px / 30 epochs (experiments/results/recipe_study_small_data_l2).
# Resumable: re-running skips finished runs and resumes interrupted ones.
#   bash experiments/budget_small_data.sh [OUTPUT_DIR]       (default: studies)
# Results: experiments/results/budget_small_data (budgets.md: each budget against 30 epochs;
# report.md: the runs; e90/: SimAM against towernet at 90 epochs).
. "$(dirname "$0")/common.sh"
split_c16

for m in towernet_simam towernet; do
  $P train.py --models $m --seeds 0,1,2 --data $c16 --image-size 128 --epochs 60 --recipe small_data \
    --jobs 3 --output $out/budget_e60
  $P train.py --models $m --seeds 0,1,2 --data $c16 --image-size 160 --epochs 30 --recipe small_data \
    --jobs 3 --output $out/budget_px160
done
$P train.py --models towernet_se --seeds 0,1,2 --data $c16 --image-size 128 --epochs 60 --recipe small_data \
  --jobs 3 --output $out/budget_e60
$P train.py --models towernet_simam --seeds 0,1,2 --data $c16 --image-size 128 --epochs 90 --recipe small_data \
  --jobs 3 --output $out/budget_e90
$P train.py --models towernet --seeds 0,1,2 --data $c16 --image-size 128 --epochs 90 --recipe small_data \
  --jobs 3 --output $out/budget_e90

$P experiments/budget_small_data_report.py $out/budget_e60 $out/budget_px160 $out/budget_e90
$P eval.py --compare $out/budget_e90 --out $RESULTS/budget_small_data/e90
