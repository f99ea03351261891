#!/usr/bin/env bash
# Every study behind docs/findings.md, one after the other, into one output folder (the
# studies share their from-scratch runs and splits there). Re-running skips finished runs and
# resumes interrupted ones. Needs ../shared (the Caltech101 folders) and takes many hours on two
# cores: run it in the background, e.g.
#   nohup bash experiments/run_all.sh /work/studies > /work/studies/pipeline.log 2>&1 &
# Run it from a copy of the code (git worktree) if you keep editing this checkout: each run
# reads its YAML and code when it starts.
set -u
out=${1:-studies}
cd "$(dirname "$0")"
for study in attention_from_scratch kfold_towernet bf16_accuracy finetune channels_last_accuracy \
             recipe_tuning recipe_study finetune_small_data budget_small_data decide_attention; do
  echo "== $study"
  bash $study.sh "$out"
done
