#!/usr/bin/env bash
# Does training in bfloat16 on the CPU (-o train.amp=bf16) cost accuracy? towernet_simam,
# float32 against bfloat16 with the backend's bf16 chains (activations bfloat16 between the
# backend's ops), seeds 0-19, the reference 16 classes, 128 px, 30 epochs, the reference recipe;
# decided with a 1-point margin ("cannot differ by 1" both ways is the bar) at the first look,
# from the 5th seed to the 20th, that decides (the seeds were added and looked at in turn).
# resnet50: seeds 0 and 1, measured before the chains (bf16 convolutions between float32 maps).
# Needs a CPU with amx_bf16 or avx512_bf16. The two precisions train side by side, one thread
# each.
# Resumable: re-running skips finished runs and resumes interrupted ones.
#   bash experiments/bf16_accuracy.sh [OUTPUT_DIR]       (default: studies)
# Results: experiments/results/bf16_accuracy_towernet_simam, bf16_accuracy_resnet50.
. "$(dirname "$0")/common.sh"
split_c16

t=$out/bf16_towernet
seeds=$(seq -s, 0 19)
$P train.py --models towernet_simam --seeds $seeds $C16 -o train.threads=1 --output $t &
$P train.py --models towernet_simam --seeds $seeds $C16 -o train.threads=1 -o train.amp=bf16 --output $t
wait
$P eval.py --compare $t --margin 1 --max-units 20 --out $RESULTS/bf16_accuracy_towernet_simam

$P train.py --models resnet50 --seeds 0,1 $C16 --output $out/bf16_resnet50
$P train.py --models resnet50 --seeds 0,1 $C16 -o train.amp=bf16 --output $out/bf16_resnet50
$P eval.py --compare $out/bf16_resnet50 --out $RESULTS/bf16_accuracy_resnet50
