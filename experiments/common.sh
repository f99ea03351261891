# Sourced by every experiments/*.sh script, with the script's arguments: sets the output
# folder ($out, default "studies", relative to the repository root), moves to the repository
# root, and defines the interpreter ($P), the splits and the shared flags. The splits are made
# on first use from ../shared (the Caltech101 folders) and reused after; split.py is
# deterministic, so every machine gets the same split.
set -u
out=${1:-studies}
cd "$(dirname "${BASH_SOURCE[0]}")/.."
P=${PYTHON:-.venv/bin/python}
RESULTS=experiments/results
R=experiments/recipes/tuning
c16=$out/data/c16 other=$out/data/other68 tune=$out/data/c16_tune
C16="--data $c16 --image-size 128 --epochs 30"
TUNE="--data $tune --image-size 128 --epochs 30"

# The reference 16 classes, split 4:1 (1453 train / 364 eval).
split_c16() {
  [ -f $c16/manifest.json ] || $P data_tools/split.py --src ../shared/caltech101/101_ObjectCategories --dst $c16
}

# The 68 largest of the other Caltech101 classes (none of the 16), split 4:1: pretraining data.
split_other68() {
  [ -f $other/manifest.json ] || $P data_tools/split.py --src ../shared/caltech101_other/101_ObjectCategories \
    --dst $other --num-classes 68
}

# The c16 train split split 4:1 again (1161 train / 292 held-out): recipes are tuned on it,
# so the eval split is never seen while choosing.
split_tune() {
  split_c16
  [ -f $tune/manifest.json ] || $P data_tools/split.py --src $c16/train --dst $tune --link --seed 0
}
