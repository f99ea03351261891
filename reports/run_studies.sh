#!/usr/bin/env bash
# The studies behind reports/ (issues 13, 14, 15, 19, 21, 22), one after the other. Re-running it skips
# finished runs and resumes interrupted ones. Needs ../shared (the Caltech101 folders) and
# takes many hours on two cores: run it in the background, e.g.
#   nohup bash reports/run_studies.sh /work/studies > /work/studies/pipeline.log 2>&1 &
# Run it from a copy of the code (git worktree) if you keep editing this checkout: each run
# reads its YAML and code when it starts.
set -u
out=${1:-studies}
cd "$(dirname "$0")/.."
P=${PYTHON:-.venv/bin/python}
c16=$out/data/c16 other=$out/data/other68
[ -f $c16/manifest.json ] || $P data_tools/split.py --src ../shared/caltech101/101_ObjectCategories --dst $c16
[ -f $other/manifest.json ] || $P data_tools/split.py --src ../shared/caltech101_other/101_ObjectCategories \
  --dst $other --num-classes 68
tune=$out/data/c16_tune  # issue 15: the c16 train split split 4:1 again; the eval split is never seen
[ -f $tune/manifest.json ] || $P data_tools/split.py --src $c16/train --dst $tune --link --seed 0
C16="--data $c16 --image-size 128 --epochs 30"
# Issue 13: MobileNetV2 hosts from scratch, 128 px, 30 epochs, 2 seeds.
$P train.py --models mobilenet_v2,mobilenet_v2_ca,mobilenet_v2_se,mobilenet_v2_simam --seeds 0,1 \
  $C16 --output $out/mbv2_att
# Issue 22: 5-fold x 1 seed of the TowerNet trio, and the fixed split with 2 seeds.
$P train.py --models towernet,towernet_simam,towernet_se --seeds 0 --folds 5 $C16 --output $out/kfold
$P train.py --models towernet,towernet_simam,towernet_se --seeds 0 $C16 --output $out/towernet_trio
$P train.py --models towernet,towernet_simam --seeds 0,1 $C16 --output $out/towernet_trio
# Issue 21: towernet_simam in bfloat16 next to the fp32 runs (CPUs with amx_bf16/avx512_bf16).
$P train.py --models towernet_simam --seeds 0,1 $C16 -o train.amp=bf16 --output $out/towernet_trio
# Issue 14: pretrain towernet and mobilenet_v2 on the 68 other Caltech101 classes, fine-tune on the 16.
for arch in towernet:towernet-other68 mobilenet_v2:mbv2-other68; do
  model=${arch%%:*} name=${arch##*:}
  if [ -f $out/pretrain/$name/state.json ]; then
    $P train.py --resume $out/pretrain/$name
  else
    $P train.py --model $model --data $other --image-size 128 --epochs 30 --output $out/pretrain --name $name
  fi
done
$P train.py --models towernet,towernet_simam --seeds 0,1 $C16 \
  --pretrained $out/pretrain/towernet-other68/last.pdparams --output $out/towernet_ft
$P train.py --models mobilenet_v2,mobilenet_v2_ca,mobilenet_v2_simam --seeds 0,1 $C16 \
  --pretrained $out/pretrain/mbv2-other68/last.pdparams --output $out/mbv2_ft
# Issue 21: resnet50 fp32 vs bf16, 2 seeds each (reports/bf16_resnet50 ran them as two
# single-thread streams, -o train.threads=1, fp32 beside bf16).
$P train.py --models resnet50 --seeds 0,1 $C16 --output $out/bf16_resnet50
$P train.py --models resnet50 --seeds 0,1 $C16 -o train.amp=bf16 --output $out/bf16_resnet50
# Issue 19: the channels-last path's accuracy, paired by seed with the NCHW path (same code).
$P train.py --models towernet_simam --seeds 0,1 $C16 --output $out/layout/nhwc
$P train.py --models towernet_simam --seeds 0,1 $C16 -o train.channels_last=off --output $out/layout/nchw
# Issue 15: small_data's values, tuned on the held-out part of the train split; the two seeds
# as two single-thread streams side by side (what --jobs does inside one study).
TUNE="--data $tune --image-size 128 --epochs 30"
R=reports/recipe_tuning/recipes
tune() {
  for r in reference $R/sd_draft.yaml $R/sd_mix.yaml $R/sd_ema.yaml $R/sd_crop08.yaml $R/sd_crop50.yaml \
           $R/sd_no_ra.yaml $R/sd_no_cj.yaml $R/sd_no_re.yaml $R/sd_no_ls.yaml $R/sd_lr02.yaml $R/sd_wd5.yaml \
           $R/m_crop_ls.yaml $R/m_ls.yaml $R/m_crop.yaml $R/m_crop_ls_ra.yaml $R/m_crop_ls_re.yaml \
           $R/m_crop_ls_cj.yaml $R/m_crop_ls_ema.yaml \
           $R/o_lr03.yaml $R/o_lr03_wd5.yaml $R/o_lr05.yaml $R/o_lr03_crop_ls.yaml $R/o_lr10_wd5.yaml \
           $R/o_wd5.yaml $R/o_ema.yaml $R/o_wd10.yaml $R/o_crop_ls_wd5.yaml $R/o_bs16.yaml $R/o_mix02.yaml; do
    # round 2 (m_*): milder, after round 1; rounds 3-5 (o_*): the optimisation side
    $P train.py --models towernet_simam --seeds $1 $TUNE --recipe $r -o train.threads=1 --output $out/recipe_tune
  done
}
tune 0 & tune 1 & wait
# Rounds 6-13 (sessions 28-30): single changes on top of the chosen small_data (session 28 ran
# round 6 from copies named sd_wd5 / sd_bs16; see reports/recipe_tuning/README.md).
for r in $R/r6_wd5.yaml $R/r6_bs16.yaml $R/r7_ls.yaml $R/r7_crop60.yaml $R/r7_mix02.yaml \
         $R/r8_ema.yaml $R/r8_rot0.yaml $R/r9_nodecay_nb.yaml $R/r9_nesterov.yaml \
         $R/r10_ema_wd5.yaml $R/r11_sam.yaml $R/r12_pad16.yaml $R/r12_drop.yaml \
         $R/r13_wd10.yaml; do
  $P train.py --models towernet_simam --seeds 0,1 $TUNE --recipe $r --jobs 2 --output $out/recipe_tune
done
# Issue 15's study, once configs/recipes/small_data.yaml held the tuned values: the four
# models under both recipes, 3 seeds, two runs at a time. Sessions 27-30 ran small_data before
# it took L2 1e-3 (session 31); the -o puts back the models' own L2 of then (TowerNets 2e-4,
# MobileNetV2 1e-4).
OLD_SD_T="--recipe small_data -o optimizer.weight_decay=0.0002"
OLD_SD_M="--recipe small_data -o optimizer.weight_decay=0.0001"
$P train.py --models towernet,towernet_simam,towernet_se,mobilenet_v2 --seeds 0,1,2 $C16 \
  --recipe reference --jobs 2 --output $out/recipe_study
$P train.py --models towernet,towernet_simam,towernet_se --seeds 0,1,2 $C16 $OLD_SD_T --jobs 2 \
  --output $out/recipe_study
$P train.py --models mobilenet_v2 --seeds 0,1,2 $C16 $OLD_SD_M --jobs 2 --output $out/recipe_study
# Issue 15's ablation of that small_data: each of its pieces removed once, 2 seeds.
for r in reports/recipe_ablation/sd_no_lr.yaml reports/recipe_ablation/sd_no_warmup.yaml; do
  $P train.py --models towernet_simam --seeds 0,1 $C16 --recipe $r --jobs 2 --output $out/recipe_study
done
# Session 30: small_data's two TowerNet rows re-run on later code (reports/recipe_study/session30;
# its own folder, so the study above is not taken as done).
$P train.py --models towernet_simam,towernet --seeds 0,1,2 $C16 $OLD_SD_T --jobs 2 \
  --output $out/recipe_study_s30
# Session 30: round 13's candidate (L2 1e-3) on the eval split (reports/recipe_study/r13); the
# rule also wants towernet, 3 seeds, before small_data takes it.
$P train.py --models towernet_simam,towernet --seeds 0,1,2 $C16 --recipe $R/r13_wd10.yaml --jobs 2 \
  --output $out/recipe_study_r13
# Session 31: small_data with L2 1e-3 (reports/recipe_study/session31): the rows not covered by
# r13_wd10 (the same values under another name), towernet_simam seed 0 once more under the
# name small_data (an exact repeat of r13_wd10's seed 0 if the code is unchanged), and the
# ablation of the new recipe (without L2 1e-3 = the session-30 runs above).
$P train.py --models towernet_se,mobilenet_v2 --seeds 0,1,2 $C16 --recipe small_data --jobs 2 \
  --output $out/recipe_study2
$P train.py --models towernet_simam --seeds 0 $C16 --recipe small_data -o train.threads=1 \
  --output $out/recipe_study2
for r in reports/recipe_ablation/sd2_no_lr.yaml reports/recipe_ablation/sd2_no_warmup.yaml; do
  $P train.py --models towernet_simam --seeds 0,1 $C16 --recipe $r --jobs 2 --output $out/recipe_ablation2
done
# Issue 15, session 32: pretrain on the 68 other classes under small_data, fine-tune under
# small_data and (for comparison) the reference recipe; reports/finetune_small_data/.
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
$P reports/finetune_small_data/make_report.py $out/ft_small_data $out/recipe_study_r13
# Issue 15, sessions 33-34: small_data from scratch at two larger budgets (60 epochs at 128 px;
# 30 epochs at 160 px); reports/budget_small_data/.
for m in towernet_simam towernet; do
  $P train.py --models $m --seeds 0,1,2 --data $c16 --image-size 128 --epochs 60 --recipe small_data \
    --jobs 3 --output $out/budget_e60
  $P train.py --models $m --seeds 0,1,2 --data $c16 --image-size 160 --epochs 30 --recipe small_data \
    --jobs 3 --output $out/budget_px160
done
$P train.py --models towernet_se --seeds 0,1,2 --data $c16 --image-size 128 --epochs 60 --recipe small_data \
  --jobs 3 --output $out/budget_e60  # session 34's addendum
$P train.py --models towernet_simam --seeds 0,1,2 --data $c16 --image-size 128 --epochs 90 --recipe small_data \
  --jobs 3 --output $out/budget_e90  # session 35's addendum 2
$P train.py --models towernet --seeds 0,1,2 --data $c16 --image-size 128 --epochs 90 --recipe small_data \
  --jobs 3 --output $out/budget_e90  # session 35's addendum 3
$P reports/budget_small_data/make_report.py $out/budget_e60 $out/budget_px160 $out/budget_e90
$P eval.py --compare $out/budget_e90 --out reports/budget_small_data/e90  # SimAM against towernet at 90 epochs
