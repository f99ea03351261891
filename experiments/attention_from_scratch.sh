#!/usr/bin/env bash
# Does an attention module help a network trained from scratch? Caltech101's reference 16
# classes on the fixed 4:1 split, 128 px, 30 epochs, the reference recipe:
#   - MobileNetV2 with Coordinate Attention, SE or SimAM in every inverted residual, seeds 0, 1;
#   - TowerNet without attention, with SimAM and with SE (seeds 0, 1; towernet_se seed 0);
#   - Grad-CAM of the seed-0 runs of both.
# Resumable: re-running skips finished runs and resumes interrupted ones.
#   bash experiments/attention_from_scratch.sh [OUTPUT_DIR]       (default: studies)
# Results: experiments/results/attention_mobilenet_v2_from_scratch, attention_towernet_fixed_split,
# gradcam_mobilenet_v2, gradcam_towernet (findings: docs/findings.md).
. "$(dirname "$0")/common.sh"
split_c16

$P train.py --models mobilenet_v2,mobilenet_v2_ca,mobilenet_v2_se,mobilenet_v2_simam --seeds 0,1 \
  $C16 --output $out/mbv2_att
$P train.py --models towernet,towernet_simam,towernet_se --seeds 0 $C16 --output $out/towernet_trio
$P train.py --models towernet,towernet_simam --seeds 0,1 $C16 --output $out/towernet_trio

$P eval.py --compare $out/mbv2_att --out $RESULTS/attention_mobilenet_v2_from_scratch
# towernet_trio also holds bf16_accuracy.sh's bfloat16 runs: compare the float32 runs only.
t=$out/towernet_trio
$P eval.py --compare $t/towernet-s0 $t/towernet-s1 $t/towernet_simam-s0 $t/towernet_simam-s1 \
  $t/towernet_se-s0 --out $RESULTS/attention_towernet_fixed_split

$P eval.py --gradcam 8 --runs $out/mbv2_att/mobilenet_v2{,_ca,_se,_simam}-s0 --out $RESULTS/gradcam_mobilenet_v2
$P eval.py --gradcam 8 --runs $t/towernet-s0 $t/towernet_simam-s0 $t/towernet_se-s0 --target true \
  --out $RESULTS/gradcam_towernet/true_class
