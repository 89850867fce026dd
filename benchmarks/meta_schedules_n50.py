"""CIFAR-10 at N = 50 with the quick preset's matching routine: issue 37's meta schedules and issue 34's baselines.

    KERAS_L2T_WEIGHTS_DIR=../shared/weights python benchmarks/meta_schedules_n50.py runs/meta_schedules_n50 \
        SEEDS [local|ray] [STRATEGIES] [SCHEDULES]

The routine of `benchmarks/meta_schedules.py` (the quick preset's matching part, 60 epochs) at N = 50 per class.
Recipes: scratch, fm_uniform and L2T-ww their tuned ones (`presets.QUICK_TUNED`), L2T-www L2T-ww's; the untuned
baselines (fm_single, at, lwf, lwf_at) L2T-ww's rate, weight decay and warm-up with their own papers' loss weight.
The L2T methods run with the reference meta schedule and with the learning one chosen on validation at N = 10
(`LEARNING`, not chosen again). SEEDS: a number of seeds (0..SEEDS-1). `ray`: runs as Ray tasks, one CPU each (two
at once on this machine). STRATEGIES: a comma list (default fm_uniform, l2t_ww, l2t_www); SCHEDULES: the L2T
methods' schedules, a comma list of reference, learning (default both). Runs go seed by seed, so that stopping
early leaves whole seeds. Resumable: every run is a row of `<out>/results.csv`; run again to go on.
`benchmarks/n50_report.py` prints the tables.
"""

import dataclasses
import sys
import time

from keras_l2t import process

process.configure()  # before TensorFlow loads
from keras_l2t import executors, grid, presets, strategies  # noqa: E402

LEARNING = {"meta_reach": 0.206, "meta_steps": 3, "meta_warmup": 12}  # docs/meta_learning.md, trial 0


def recipe(name: str) -> dict:
    """A strategy's target recipe here: its tuned one, L2T-ww's for L2T-www, else L2T-ww's less the loss weight."""
    tuned = presets.QUICK_TUNED
    if name in tuned:
        return tuned[name]
    if strategies.spec(name).meta:
        return tuned["l2t_ww"]
    return {key: value for key, value in tuned["l2t_ww"].items() if key != "matching_weight"}


out, seeds = sys.argv[1], int(sys.argv[2])
executor = executors.make("ray", cpus_per_run=1) if len(sys.argv) > 3 and sys.argv[3] == "ray" else None
names = sys.argv[4].split(",") if len(sys.argv) > 4 else ["fm_uniform", "l2t_ww", "l2t_www"]
schedules = sys.argv[5].split(",") if len(sys.argv) > 5 else ["reference", "learning"]
routine = {**presets.routine("quick", "matching"), "dataset": "../shared/data/cifar10"}
configs = []
for name in names:
    meta = strategies.spec(name).meta
    for config in grid.expand([name], samples_per_class=[50], seeds=seeds, **routine, **recipe(name)):
        if not meta or "reference" in schedules:
            configs.append(config)  # a method without meta-networks, or an L2T method with the reference schedule
        if meta and "learning" in schedules:
            configs.append(dataclasses.replace(config, **LEARNING))
# seed by seed; within a seed the learning runs first, as the longest, so that the two workers finish together
configs.sort(key=lambda config: (config.seed, config.meta_reach is None))
start = time.time()
grid.run_grid(configs, out, quiet=True, executor=executor)
print(f"all done after {time.time() - start:.0f} s", flush=True)
