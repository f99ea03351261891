#!/usr/bin/env bash
# How small_data's values were chosen: towernet_simam, 128 px, 30 epochs, seeds 0 and 1, on the
# tuning split (a held-out fifth of the reference train split; the eval split is never seen),
# one recipe variant at a time (experiments/recipes/tuning/; the rounds and the rule:
# docs/recipes.md). Rounds 1-5 run as two single-thread streams, one per seed, side by side;
# rounds 6-13 two runs at a time (--jobs 2). Then the ten runs of rounds 10-13 are evaluated
# image by image (error_overlap.py: do the runs make the same mistakes?).
# Resumable: re-running skips finished runs and resumes interrupted ones.
#   bash experiments/recipe_tuning.sh [OUTPUT_DIR]       (default: studies)
# Results: experiments/results/recipe_tuning (report of every tuning run), its rounds10-13/
# and error_overlap.txt.
. "$(dirname "$0")/common.sh"
split_tune

tune() {
  for r in reference $R/sd_draft.yaml $R/sd_mix.yaml $R/sd_ema.yaml $R/sd_crop08.yaml $R/sd_crop50.yaml \
           $R/sd_no_ra.yaml $R/sd_no_cj.yaml $R/sd_no_re.yaml $R/sd_no_ls.yaml $R/sd_lr02.yaml $R/sd_wd5.yaml \
           $R/m_crop_ls.yaml $R/m_ls.yaml $R/m_crop.yaml $R/m_crop_ls_ra.yaml $R/m_crop_ls_re.yaml \
           $R/m_crop_ls_cj.yaml $R/m_crop_ls_ema.yaml \
           $R/o_lr03.yaml $R/o_lr03_wd5.yaml $R/o_lr05.yaml $R/o_lr03_crop_ls.yaml $R/o_lr10_wd5.yaml \
           $R/o_wd5.yaml $R/o_ema.yaml $R/o_wd10.yaml $R/o_crop_ls_wd5.yaml $R/o_bs16.yaml $R/o_mix02.yaml; do
    # round 1 (sd_*): the first draft and its variants; round 2 (m_*): milder augmentation;
    # rounds 3-5 (o_*): the optimisation side
    $P train.py --models towernet_simam --seeds $1 $TUNE --recipe $r -o train.threads=1 --output $out/recipe_tune
  done
}
tune 0 & tune 1 & wait
# Rounds 6-13: single changes on top of the chosen small_data (the committed report's round-6
# rows ran from copies named sd_wd5 / sd_bs16, so they read +sd_wd5 / +sd_bs16 there).
for r in $R/r6_wd5.yaml $R/r6_bs16.yaml $R/r7_ls.yaml $R/r7_crop60.yaml $R/r7_mix02.yaml \
         $R/r8_ema.yaml $R/r8_rot0.yaml $R/r9_nodecay_nb.yaml $R/r9_nesterov.yaml \
         $R/r10_ema_wd5.yaml $R/r11_sam.yaml $R/r12_pad16.yaml $R/r12_drop.yaml \
         $R/r13_wd10.yaml; do
  $P train.py --models towernet_simam --seeds 0,1 $TUNE --recipe $r --jobs 2 --output $out/recipe_tune
done

$P eval.py --compare $out/recipe_tune --out $RESULTS/recipe_tuning
late=$(ls -d $out/recipe_tune/towernet_simam+r1[0-3]_*-s[01])
$P eval.py --compare $late --out $RESULTS/recipe_tuning/rounds10-13
$P experiments/error_overlap.py $late > $RESULTS/recipe_tuning/error_overlap.txt.tmp &&
  mv $RESULTS/recipe_tuning/error_overlap.txt.tmp $RESULTS/recipe_tuning/error_overlap.txt
