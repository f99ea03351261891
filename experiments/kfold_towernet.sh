#!/usr/bin/env bash
# Does SimAM or SE help TowerNet, over five splits instead of one? 5-fold x seed 0 over all
# 1817 images of the reference 16 classes (each image evaluated once per model), 128 px,
# 30 epochs, the reference recipe; per-image paired bootstrap, P(A > B), McNemar and the
# smallest detectable gap in the report.
# Resumable: re-running skips finished runs and resumes interrupted ones.
#   bash experiments/kfold_towernet.sh [OUTPUT_DIR]       (default: studies)
# Results: experiments/results/attention_towernet_kfold5 (findings: docs/findings.md).
. "$(dirname "$0")/common.sh"
split_c16

$P train.py --models towernet,towernet_simam,towernet_se --seeds 0 --folds 5 $C16 --output $out/kfold

$P eval.py --compare $out/kfold --out $RESULTS/attention_towernet_kfold5
