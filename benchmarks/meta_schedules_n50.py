"""Issue 37 at N = 50: fm_uniform, and L2T-ww / L2T-www with the reference and the learning meta schedule.

    KERAS_L2T_WEIGHTS_DIR=../shared/weights python benchmarks/meta_schedules_n50.py runs/meta_schedules_n50 \
        SEEDS [local|ray] [STRATEGIES] [SCHEDULES]

The routine of `benchmarks/meta_schedules.py` (the quick preset's matching part with L2T-ww's tuned target recipe,
60 epochs) at N = 50 per class; the learning schedule is the one chosen there on validation at N = 10
(`LEARNING`), not chosen again. SEEDS: a number of seeds (0..SEEDS-1). `ray`: runs as Ray tasks, one CPU each
(two at once on this machine). STRATEGIES: a comma list of fm_uniform, l2t_ww, l2t_www (default all three);
SCHEDULES: the L2T methods' schedules, a comma list of reference, learning (default both).
Resumable: every run is a row of `<out>/results.csv`, run again to go on; read it with
`benchmarks/meta_schedules_report.py`-style tables (`analysis.stats`).
"""

import dataclasses
import sys
import time

from keras_l2t import process

process.configure()  # before TensorFlow loads
from keras_l2t import executors, grid, presets  # noqa: E402

LEARNING = {"meta_reach": 0.206, "meta_steps": 3, "meta_warmup": 12}  # docs/meta_learning.md, trial 0

out, seeds = sys.argv[1], int(sys.argv[2])
executor = executors.make("ray", cpus_per_run=1) if len(sys.argv) > 3 and sys.argv[3] == "ray" else None
names = sys.argv[4].split(",") if len(sys.argv) > 4 else ["fm_uniform", "l2t_ww", "l2t_www"]
schedules = sys.argv[5].split(",") if len(sys.argv) > 5 else ["reference", "learning"]
routine = presets.get_config("quick")["parts"]["matching"]
for name in ("description", "strategies", "per_strategy", "samples_per_class", "seeds"):
    routine.pop(name)
routine.update(dataset="../shared/data/cifar10", **presets.QUICK_TUNED["l2t_ww"])
configs = []
for name in names:
    for config in grid.expand([name], samples_per_class=[50], seeds=seeds, **routine):
        if name == "fm_uniform" or "reference" in schedules:
            configs.append(config)  # fm_uniform, or the L2T method with the reference schedule
        if name != "fm_uniform" and "learning" in schedules:
            configs.append(dataclasses.replace(config, **LEARNING))
# learning runs first: they are the longest, so the two workers finish together
configs.sort(key=lambda config: (config.meta_reach is None, config.seed))
start = time.time()
grid.run_grid(configs, out, quiet=True, executor=executor)
print(f"all done after {time.time() - start:.0f} s", flush=True)
