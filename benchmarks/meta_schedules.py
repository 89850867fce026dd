"""Issue 37: a meta schedule for L2T chosen on validation, then L2T-ww and L2T-www with it on the evaluation seeds.

    KERAS_L2T_WEIGHTS_DIR=../shared/weights python benchmarks/meta_schedules.py runs/meta_schedules [TRIALS]

The routine is the quick preset's matching part (CIFAR-10, N = 10, 60 epochs, meta step every 5 iterations) with
its tuned target recipe (`presets.QUICK_TUNED["l2t_ww"]`, also for L2T-www), so the reference rows are the
preset's own runs (`runs/quick_preset_tuned/matching`). Steps, each resumable:

1. `<out>/tuning`: TRIALS (default 6) trials of L2T-ww over `tuning_space.META_SCHEDULE` only (the target's
   recipe fixed), on the tuning seeds' validation split; the test split is never read.
2. `<out>/learning`: L2T-ww and L2T-www with the chosen schedule, seeds 0-3.
3. `<out>/reference`: L2T-www with the reference schedule, seeds 0-3 (L2T-ww's are the preset's runs).
"""

import dataclasses
import sys
import time

from keras_l2t import process

process.configure()  # before TensorFlow loads
from keras_l2t import grid, presets, strategies, tuning, tuning_report, tuning_space  # noqa: E402

out = sys.argv[1]
trials = int(sys.argv[2]) if len(sys.argv) > 2 else 6
routine = presets.routine("quick", "matching")
routine.update(dataset="../shared/data/cifar10")
preset_part = presets.get_config("quick")["parts"]["matching"]
recipe = presets.QUICK_TUNED["l2t_ww"]
start = time.time()

# 1. the schedule, on validation: L2T-ww's search space replaced by the meta schedule's
strategies.register(
    dataclasses.replace(strategies.spec("l2t_ww"), search_space=tuning_space.META_SCHEDULE), replace=True
)
samples = {"samples_per_class": preset_part["samples_per_class"]}
study = tuning.tune({**routine, **recipe, **samples, "verbose": 0}, "l2t_ww", trials, f"{out}/tuning")
schedule = tuning.best_settings(study)
print(f"schedule {schedule} after {time.time() - start:.0f} s", flush=True)
print(tuning_report.settings_table({"l2t_ww": study}), flush=True)
tuning_report.plot_study(study, f"{out}/tuning/l2t_ww.png")

# 2. and 3. the evaluation seeds
evaluation = {**samples, "seeds": preset_part["seeds"], "quiet": True}
learning = {name: {**recipe, **schedule} for name in ("l2t_ww", "l2t_www")}
grid.compare(None, out=f"{out}/learning", strategy_names=list(learning), per_strategy=learning, **evaluation, **routine)
print(f"learning schedule runs done after {time.time() - start:.0f} s", flush=True)
grid.compare(
    None, out=f"{out}/reference", strategy_names=["l2t_www"], per_strategy={"l2t_www": recipe}, **evaluation, **routine
)
print(f"all done after {time.time() - start:.0f} s", flush=True)
