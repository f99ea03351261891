#!/usr/bin/env bash
# Fine-tuning under the small_data recipe: towernet_simam and towernet, each pretrained on the
# 68 other Caltech101 classes under small_data (seed 0), then fine-tuned on the reference 16
# classes under small_data and, for comparison, the reference recipe; seeds 0-2, 128 px,
# 30 epochs; against the same models from scratch under small_data (the runs of
# recipe_study.sh's recipe_study_r13 folder: same command, skipped when present).
# Resumable: re-running skips finished runs and resumes interrupted ones.
#   bash experiments/finetune_small_data.sh [OUTPUT_DIR]       (default: studies)
# Results: experiments/results/finetune_other68_small_data.
. "$(dirname "$0")/common.sh"
split_c16
split_other68

$P train.py --models towernet_simam,towernet --seeds 0,1,2 $C16 --recipe $R/r13_wd10.yaml --jobs 2 \
  --output $out/recipe_study_r13
for m in towernet_simam towernet; do
  if [ -f $out/pretrain/$m-other68-sd/state.json ]; then
    $P train.py --resume $out/pretrain/$m-other68-sd
  else
    $P train.py --model $m --data $other --image-size 128 --epochs 30 --recipe small_data \
      -o train.threads=1 --output $out/pretrain --name $m-other68-sd
  fi
done
for r in small_data reference; do
  for m in towernet_simam towernet; do
    $P train.py --models $m --seeds 0,1,2 $C16 --recipe $r --jobs 3 \
      --pretrained $out/pretrain/$m-other68-sd/last.pdparams --output $out/ft_small_data
  done
done

$P experiments/finetune_small_data_report.py $out/ft_small_data $out/recipe_study_r13
for m in towernet_simam towernet; do
  cp $out/pretrain/$m-other68-sd/metrics.csv $RESULTS/finetune_other68_small_data/pretrain_${m}_other68_metrics.csv
done
