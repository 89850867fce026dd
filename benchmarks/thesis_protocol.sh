#!/usr/bin/env bash
# Issue 4's real result, resumable across sessions: the thesis protocol on the shared CIFAR-10 copy
# (vgg9 target, resnet32 Tiny-ImageNet source, batch 128, pad-4 crop + flip, validation 1000, 10,000 test).
# Seed-major: every method of seed 0, then seed 1, ..., so a stopped run leaves balanced results.
# Finished runs are rows of runs/thesis_n*/results.csv and are skipped when this script runs again.
#   bash benchmarks/thesis_protocol.sh [SHARED=../shared]
set -euo pipefail
shared=${1:-../shared}
methods=scratch,ufm,fm_uniform,l2t_ww,l2t_www
export KERAS_L2T_WEIGHTS_DIR=${KERAS_L2T_WEIGHTS_DIR:-$shared/weights}
compare() { python apps/compare_strategies.py --dataset "$shared/data/cifar10" --preset thesis \
  --strategies "$methods" --quiet "$@"; }
for seeds in 1 2; do compare --samples-per-class 10 --seeds "$seeds" --out runs/thesis_n10; done
compare --samples-per-class 50 --seeds 1 --epochs 30 --out runs/thesis_n50_e30
for seeds in 3 4 5; do
  compare --samples-per-class 10 --seeds "$seeds" --out runs/thesis_n10
  python benchmarks/thesis_record.py  # copies finished runs into the committed docs/thesis_n10_runs.csv
done
# 30 epochs leave scratch and UFM near chance after the schedule's early blow-up (README): N = 50 at the full
# 200 epochs instead, seed 0 (about 4.3 hours on a 2-core CPU, resumable)
compare --samples-per-class 50 --seeds 1 --out runs/thesis_n50
