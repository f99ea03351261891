#!/usr/bin/env bash
# The quick start: needs nothing but this repository and Python 3.9+.
# Creates .venv (unless a virtual environment is active), installs the CPU requirements,
# generates the 16-class demo set, trains TowerNet-SimAM for 8 epochs at 96 px and
# evaluates it. One to two minutes on 2 CPU cores (with pip's cache warm).
set -euo pipefail
cd "$(dirname "$0")"

if [ -z "${VIRTUAL_ENV:-}" ]; then
  [ -x .venv/bin/python ] || python3 -m venv .venv
  . .venv/bin/activate
  python -m pip install -q -r requirements-dev.txt
fi

[ -f data/demo/manifest.json ] || python data_tools/split.py --demo
name="demo-$(date +%Y%m%d-%H%M%S)"
python train.py -c configs/demo.yaml --name "$name"
python eval.py --run "runs/$name"
echo
echo "Dashboard: visualdl --logdir runs --host 127.0.0.1 --port 8040   (then open http://127.0.0.1:8040)"
