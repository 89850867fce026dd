"""The tables of `benchmarks/meta_schedules_n50.py` (CIFAR-10, N = 50): accuracy with p-values, effect sizes.

    python benchmarks/n50_report.py runs/meta_schedules_n50

An L2T run with the learning meta schedule is the method "<name> learning". Prints, as markdown: test accuracy
mean +- std (runs) with Mann-Whitney p-values against scratch (issue 34's comparison), then each method against
fm_uniform and each learning schedule against the reference one (issue 37's), with bootstrap intervals.
"""

import json
import sys

from keras_l2t import intervals, stats
from keras_l2t.running.results import read_results

ORDER = ["scratch", "fm_single", "at", "lwf", "lwf_at", "fm_uniform", "l2t_ww", "l2t_ww learning", "l2t_www",
         "l2t_www learning"]  # fmt: skip

results = read_results(sys.argv[1])
learning = results["config"].map(lambda text: json.loads(text).get("meta_reach") is not None)
results["strategy"] = results["strategy"] + learning.map({True: " learning", False: ""})
order = [method for method in ORDER if method in set(results["strategy"])]
print(stats.accuracy_table(results, order, baseline="scratch"))
print()
print(intervals.effect_table(results, order, baseline="fm_uniform"))
for name in ("l2t_ww", "l2t_www"):
    pair = results[results["strategy"].isin([name, f"{name} learning"])]
    if pair["strategy"].nunique() == 2:
        print()
        print(intervals.effect_table(pair, [name, f"{name} learning"], baseline=name))
print()
print(stats.seed_table(results, order))
