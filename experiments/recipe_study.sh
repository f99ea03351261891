#!/usr/bin/env bash
# Which recipe on the eval split: the reference recipe against small_data, 3 seeds, 128 px,
# 30 epochs, the reference 16 classes; each step of small_data's making measured on the eval
# split once its values were fixed on the tuning split (recipe_tuning.sh):
#   1. small_data as first chosen (lr 0.05 + warm-up 3, the models' own L2: the -o puts back
#      TowerNet's 2e-4 and MobileNetV2's 1e-4, as small_data.yaml now sets 1e-3) against the
#      reference, four models; its ablation (each piece removed, towernet_simam, 2 seeds);
#   2. the TowerNet rows of 1. re-run on later code (a seed's result across code versions);
#   3. tuning round 13's candidate, L2 1e-3 (recipe r13_wd10), towernet_simam and towernet;
#   4. small_data with L2 1e-3 (its values now): the rows 3. does not cover, towernet_simam
#      seed 0 again under the name small_data (a determinism check against 3.), and its ablation.
# Runs train two or three at a time, one thread each.
# Resumable: re-running skips finished runs and resumes interrupted ones.
#   bash experiments/recipe_study.sh [OUTPUT_DIR]       (default: studies)
# Results: experiments/results/recipe_study_lr_warmup (1.), recipe_study_lr_warmup_rerun (2.),
# recipe_study_l2_candidate (3.), recipe_study_small_data_l2 (4.).
. "$(dirname "$0")/common.sh"
split_c16
A=experiments/recipes/ablation

OLD_SD_T="--recipe small_data -o optimizer.weight_decay=0.0002"
OLD_SD_M="--recipe small_data -o optimizer.weight_decay=0.0001"
$P train.py --models towernet,towernet_simam,towernet_se,mobilenet_v2 --seeds 0,1,2 $C16 \
  --recipe reference --jobs 2 --output $out/recipe_study
$P train.py --models towernet,towernet_simam,towernet_se --seeds 0,1,2 $C16 $OLD_SD_T --jobs 2 \
  --output $out/recipe_study
$P train.py --models mobilenet_v2 --seeds 0,1,2 $C16 $OLD_SD_M --jobs 2 --output $out/recipe_study
for r in $A/sd_no_lr.yaml $A/sd_no_warmup.yaml; do
  $P train.py --models towernet_simam --seeds 0,1 $C16 --recipe $r --jobs 2 --output $out/recipe_study
done
# 2. In a folder of its own, so that the study above is not taken as done.
$P train.py --models towernet_simam,towernet --seeds 0,1,2 $C16 $OLD_SD_T --jobs 2 \
  --output $out/recipe_study_s30
# 3.
$P train.py --models towernet_simam,towernet --seeds 0,1,2 $C16 --recipe $R/r13_wd10.yaml --jobs 2 \
  --output $out/recipe_study_r13
# 4. towernet_simam and towernet under small_data are 3.'s runs (the same values, read under
# the name small_data by the report script); without L2 1e-3 is 2.
$P train.py --models towernet_se,mobilenet_v2 --seeds 0,1,2 $C16 --recipe small_data --jobs 2 \
  --output $out/recipe_study2
$P train.py --models towernet_simam --seeds 0 $C16 --recipe small_data -o train.threads=1 \
  --output $out/recipe_study2
for r in $A/sd2_no_lr.yaml $A/sd2_no_warmup.yaml; do
  $P train.py --models towernet_simam --seeds 0,1 $C16 --recipe $r --jobs 2 --output $out/recipe_ablation2
done

$P eval.py --compare $out/recipe_study --out $RESULTS/recipe_study_lr_warmup
$P eval.py --compare $out/recipe_study_s30 --out $RESULTS/recipe_study_lr_warmup_rerun
$P eval.py --compare $out/recipe_study_r13 --out $RESULTS/recipe_study_l2_candidate
$P experiments/recipe_study_small_data_l2_report.py $out/recipe_study_r13 $out/recipe_study2
