#!/usr/bin/env bash
# Issue 4's real result, resumable across sessions: the thesis protocol on the shared CIFAR-10 copy
# (vgg9 target, resnet32 Tiny-ImageNet source, batch 128, pad-4 crop + flip, validation 1000, 10,000 test).
# N = 10: seed by seed (every method of seed 0, then seed 1, ...), so a stopped run leaves balanced results.
# A method and seed already in the committed docs/thesis_n10_runs.csv is skipped, and the runs of a seed are
# copied there when that seed's call ends (runs/ is not committed and was once lost with its machine; to record
# a run that ended while the call goes on, run `python benchmarks/thesis_record.py`); an unfinished run resumes
# from its backup in runs/ while that folder lives.
#   bash benchmarks/thesis_protocol.sh [SHARED=../shared]
set -euo pipefail
shared=${1:-../shared}
export KERAS_L2T_WEIGHTS_DIR=${KERAS_L2T_WEIGHTS_DIR:-$shared/weights}
compare() { python apps/compare_strategies.py --dataset "$shared/data/cifar10" --preset thesis --quiet "$@"; }
for seed in 0 1 2 3 4; do
  missing=$(python benchmarks/thesis_record.py --missing "$seed")
  [ -z "$missing" ] && continue
  compare --strategies "$missing" --samples-per-class 10 --seeds "$seed," --out runs/thesis_n10
  python benchmarks/thesis_record.py
done
# N = 50: 30 epochs (seed 0, in the README) leave scratch and UFM near chance after the schedule's early blow-up;
# so the full 200 epochs, seed 0 (about 4.3 hours on the 2-core CPU of 2026-11-24, about 10 on that of 2026-11-30),
# in docs/thesis_n50_runs.csv. Then the imbalanced protocol (issue 19: nine classes at N = 100, the last at 10),
# seed 0, in docs/thesis_imbalanced_runs.csv. One method per call, recorded as soon as it ends; a recorded method is
# skipped (to record a run that ended while a call goes on, run the record line by hand).
one_by_one() {  # RECORD OUT METHODS [grid flags...]
  local record=$1 out=$2 methods=$3; shift 3
  local missing; missing=$(python benchmarks/thesis_record.py --record "$record" --methods "$methods" --missing 0)
  for method in ${missing//,/ }; do
    compare --strategies "$method" --seeds 0, --out "$out" "$@"
    python benchmarks/thesis_record.py --out "$out" --record "$record" "${extra[@]}"
  done
}
extra=()
one_by_one docs/thesis_n50_runs.csv runs/thesis_n50 scratch,ufm,fm_uniform,l2t_ww,l2t_www --samples-per-class 50
extra=(--per-class)
one_by_one docs/thesis_imbalanced_runs.csv runs/thesis_imbalanced scratch,fm_uniform,l2t_ww,l2t_www \
  --samples-per-class 100 --imbalanced
