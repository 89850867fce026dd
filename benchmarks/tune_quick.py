"""Tune scratch, fm_uniform and L2T-ww on the quick preset's matching part (N = 10), 8 trials each (issue 35).

    KERAS_L2T_WEIGHTS_DIR=../shared/weights python benchmarks/tune_quick.py runs/tuning_quick [ray]

Resumable: run it again and the studies in `<out>/tuning.db` continue. Prints the wall time and the chosen
settings, and draws each study's history and importances to `<out>/<strategy>.png` (docs/tuning.md).
"""

import sys
import time

from keras_l2t import process

process.configure()  # before TensorFlow loads
from keras_l2t import executors, presets, tuning, tuning_report  # noqa: E402

out = sys.argv[1]
executor = executors.make(sys.argv[2], cpus_per_run=1) if len(sys.argv) > 2 else None
base = presets.get_config("quick")["parts"]["matching"]
base.pop("description", None)
base.update(dataset="../shared/data/cifar10", verbose=0)
start = time.time()
studies = tuning.tune_grid(base, ["scratch", "fm_uniform", "l2t_ww"], trials=8, out=out, executor=executor)
print(f"wall {time.time() - start:.0f} s", flush=True)
print(tuning_report.settings_table(studies), flush=True)
for name, study in studies.items():
    tuning_report.plot_study(study, f"{out}/{name}.png")
