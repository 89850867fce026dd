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
# in docs/thesis_n50_runs.csv, one method per call. Then the imbalanced protocol (issue 19: nine classes at N = 100,
# the last at 10), seed 0, in docs/thesis_imbalanced_runs.csv: one method per call (two threads each), the
# methods the thesis compares first, so that each finished run is recorded at once (runs/ was lost with its machine
# twice, so a run that ends inside a session is worth most). THESIS_LANES=2 runs them instead as one grid on Ray,
# two at a time with one thread each: more work per hour where threads scale badly (AVX2 EPYC of 2026-12-03: two
# one-thread L2T-www steps side by side 48.4 s, one two-thread step 30.2 s, 1.25 times), little where they scale
# (AVX-512 EPYC of 2026-12-06: 7.5 s side by side, 4.0 s alone, 1.07 times), and every run ends later.
# Finished runs are recorded (and docs/imbalanced_per_class.png redrawn) before and after each call; a recorded
# method and seed is skipped. Then more seeds as the budget allows: seeds 1-3 of the cheap scratch and fm_uniform
# first (with seed 0, 4 v 4 runs, the fewest that can reach p < 0.05), then seeds 1-3 of L2T-www and L2T-ww.
record() { python benchmarks/thesis_record.py --out "$1" --record "$2" "${@:3}"; }
missing() { python benchmarks/thesis_record.py --record "$1" --methods "$2" --missing "${3:-0}"; }
n50=docs/thesis_n50_runs.csv
[ -d runs/thesis_n50 ] && record runs/thesis_n50 $n50
for method in $(missing $n50 scratch,ufm,fm_uniform,l2t_ww,l2t_www | tr , ' '); do
  compare --strategies "$method" --seeds 0, --out runs/thesis_n50 --samples-per-class 50
  record runs/thesis_n50 $n50
done
imbalanced=docs/thesis_imbalanced_runs.csv
record_imbalanced() { record runs/thesis_imbalanced $imbalanced --per-class --plot docs/imbalanced_per_class.png; }
[ -d runs/thesis_imbalanced ] && record_imbalanced
imbalanced_seed() {  # SEED METHODS: the methods not yet recorded for that seed, in that order
  local methods calls lanes=()
  methods=$(missing $imbalanced "$2" "$1")
  calls=$(tr , ' ' <<< "$methods")  # one call per method, or one call for all of them on Ray
  [ "${THESIS_LANES:-1}" = 2 ] && calls=$methods lanes=(--executor ray --cpus-per-run 1)
  for call in $calls; do
    compare --strategies "$call" --seeds "$1," --out runs/thesis_imbalanced --samples-per-class 100 --imbalanced \
      "${lanes[@]}"
    record_imbalanced
  done
}
imbalanced_seed 0 l2t_www,scratch,l2t_ww,fm_uniform
for seed in 1 2 3; do imbalanced_seed $seed scratch,fm_uniform; done
for seed in 1 2 3; do imbalanced_seed $seed l2t_www,l2t_ww; done
