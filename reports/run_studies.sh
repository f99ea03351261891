#!/usr/bin/env bash
# The studies behind reports/ (issues 13 and 14), one after the other. Re-running it skips
# finished runs and resumes interrupted ones. Needs ../shared (the Caltech101 folders) and
# takes hours on two cores: run it in the background, e.g.
#   nohup bash reports/run_studies.sh /work/studies > /work/studies/pipeline.log 2>&1 &
set -u
out=${1:-studies}
cd "$(dirname "$0")/.."
P=${PYTHON:-.venv/bin/python}
c16=$out/data/c16 other=$out/data/other68
[ -f $c16/manifest.json ] || $P data_tools/split.py --src ../shared/caltech101/101_ObjectCategories --dst $c16
[ -f $other/manifest.json ] || $P data_tools/split.py --src ../shared/caltech101_other/101_ObjectCategories \
  --dst $other --num-classes 68
# Issue 13: MobileNetV2 hosts from scratch, 128 px, 30 epochs, 2 seeds.
$P train.py --models mobilenet_v2,mobilenet_v2_ca,mobilenet_v2_se,mobilenet_v2_simam --seeds 0,1 \
  --data $c16 --image-size 128 --epochs 30 --output $out/mbv2_att
# Issue 14: pretrain mobilenet_v2 on the 68 other Caltech101 classes, then fine-tune on the 16.
if [ -f $out/pretrain/mbv2-other68/state.json ]; then
  $P train.py --resume $out/pretrain/mbv2-other68
else
  $P train.py --model mobilenet_v2 --data $other --image-size 128 --epochs 30 \
    --output $out/pretrain --name mbv2-other68
fi
$P train.py --models mobilenet_v2,mobilenet_v2_ca,mobilenet_v2_simam --seeds 0,1 --data $c16 \
  --image-size 128 --epochs 30 --pretrained $out/pretrain/mbv2-other68/last.pdparams \
  --output $out/mbv2_ft
