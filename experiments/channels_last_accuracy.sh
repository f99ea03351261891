#!/usr/bin/env bash
# Does the channels-last (NHWC) CPU path train the same model as NCHW? towernet_simam, same
# code, same seeds (0, 1), the layout the only difference; the reference 16 classes, 128 px,
# 30 epochs, the reference recipe. Both layouts train under the same run name, so a study
# report would pool them: paired_runs.py compares them run by run, image by image.
# Resumable: re-running skips finished runs and resumes interrupted ones.
#   bash experiments/channels_last_accuracy.sh [OUTPUT_DIR]       (default: studies)
# Results: $RESULTS/channels_last_accuracy_towernet_simam/pairs.md (written by the last line; the
# measured table is in docs/findings.md, section 5).
. "$(dirname "$0")/common.sh"
split_c16

$P train.py --models towernet_simam --seeds 0,1 $C16 --output $out/layout/nhwc
$P train.py --models towernet_simam --seeds 0,1 $C16 -o train.channels_last=off --output $out/layout/nchw

$P experiments/paired_runs.py $out/layout/nhwc $out/layout/nchw \
  --out $RESULTS/channels_last_accuracy_towernet_simam/pairs.md
