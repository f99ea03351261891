#!/usr/bin/env bash
# Does training in bfloat16 on the CPU (-o train.amp=bf16) cost accuracy? towernet_simam and
# resnet50, float32 against bfloat16, seeds 0 and 1, the reference 16 classes, 128 px,
# 30 epochs, the reference recipe. Needs a CPU with amx_bf16 or avx512_bf16.
# The float32 towernet_simam runs are those of attention_from_scratch.sh (same folder; skipped
# when present). The committed resnet50 results ran fp32 and bf16 side by side as two
# single-thread streams (-o train.threads=1), which changes the epoch times, not the runs.
# Resumable: re-running skips finished runs and resumes interrupted ones.
#   bash experiments/bf16_accuracy.sh [OUTPUT_DIR]       (default: studies)
# Results: experiments/results/bf16_accuracy_towernet_simam, bf16_accuracy_resnet50.
. "$(dirname "$0")/common.sh"
split_c16

$P train.py --models towernet_simam --seeds 0,1 $C16 --output $out/towernet_trio
$P train.py --models towernet_simam --seeds 0,1 $C16 -o train.amp=bf16 --output $out/towernet_trio
$P train.py --models resnet50 --seeds 0,1 $C16 --output $out/bf16_resnet50
$P train.py --models resnet50 --seeds 0,1 $C16 -o train.amp=bf16 --output $out/bf16_resnet50

t=$out/towernet_trio
$P eval.py --compare $t/towernet_simam-s0 $t/towernet_simam-s1 $t/towernet_simam-bf16-s0 \
  $t/towernet_simam-bf16-s1 --out $RESULTS/bf16_accuracy_towernet_simam
$P eval.py --compare $out/bf16_resnet50 --out $RESULTS/bf16_accuracy_resnet50
