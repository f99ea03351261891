#!/usr/bin/env bash
# Does SimAM or SE help TowerNet from scratch by 2 points or more, or can it not? A sequential
# study that decides: TowerNet with SimAM, with SE, and without attention, under the small_data
# recipe, 128 px, 30 epochs, 5 folds over all 1817 images of the reference 16 classes; whole
# units (every model at one seed x fold) one after another until each module is decided
# against its host with a margin of 2 points, at most 20 units (docs/studies.md).
# Resumable: re-running continues where it stopped (its cost so far is in OUTPUT/decide/study.json).
#   bash experiments/decide_attention.sh [OUTPUT_DIR]       (default: studies)
# Results: experiments/results/decide_towernet_small_data (findings: docs/findings.md).
. "$(dirname "$0")/common.sh"
split_c16

$P train.py --models towernet,towernet_simam,towernet_se --folds 5 --until-decided --margin 2 \
  --recipe small_data $C16 --jobs 3 --output $out/decide

$P eval.py --compare $out/decide --out $RESULTS/decide_towernet_small_data
