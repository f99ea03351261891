#!/usr/bin/env bash
# Does an attention module help once the network starts from pretrained weights? towernet and
# mobilenet_v2 pretrained on the 68 other Caltech101 classes (none of the 16), then fine-tuned on
# the reference 16 classes with the attention module inserted (towernet_simam; mobilenet_v2_ca,
# mobilenet_v2_simam), seeds 0 and 1, 128 px, 30 epochs, the reference recipe, against the same
# models from scratch (the runs of attention_from_scratch.sh: same folders, skipped when present).
# Resumable: re-running skips finished runs and resumes interrupted ones.
#   bash experiments/finetune.sh [OUTPUT_DIR]       (default: studies)
# Results: experiments/results/finetune_other68_towernet, finetune_other68_mobilenet_v2.
. "$(dirname "$0")/common.sh"
split_c16
split_other68

$P train.py --models mobilenet_v2,mobilenet_v2_ca,mobilenet_v2_se,mobilenet_v2_simam --seeds 0,1 \
  $C16 --output $out/mbv2_att
$P train.py --models towernet,towernet_simam --seeds 0,1 $C16 --output $out/towernet_trio
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

t=$out/towernet_trio m=$out/mbv2_att
r=$RESULTS/finetune_other68_towernet
$P eval.py --compare $t/towernet-s0 $t/towernet-s1 $t/towernet_simam-s0 $t/towernet_simam-s1 \
  $out/towernet_ft --out $r
$P eval.py --compare $out/towernet_ft --out $r/pretrained_only
cp $out/pretrain/towernet-other68/metrics.csv $r/pretrain_towernet_other68_metrics.csv
cp $out/towernet_ft/towernet_simam@towernet-other68-s0/pretrained.json $r/pretrained_towernet_simam_s0.json
r=$RESULTS/finetune_other68_mobilenet_v2
$P eval.py --compare $m/mobilenet_v2{,_ca,_simam}-s0 $m/mobilenet_v2{,_ca,_simam}-s1 $out/mbv2_ft --out $r
$P eval.py --compare $out/mbv2_ft --out $r/pretrained_only
cp $out/pretrain/mbv2-other68/metrics.csv $r/pretrain_mobilenet_v2_other68_metrics.csv
cp $out/mbv2_ft/mobilenet_v2_ca@mbv2-other68-s0/pretrained.json $r/pretrained_mobilenet_v2_ca_s0.json
