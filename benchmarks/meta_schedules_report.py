"""Issue 37's table and figures from `benchmarks/meta_schedules.py` and the quick preset's matching runs.

    python benchmarks/meta_schedules_report.py runs/meta_schedules runs/quick_preset_tuned/matching docs

Prints the markdown (test accuracy mean +- std with a 95 % bootstrap interval, Mann-Whitney p against fm_uniform
and against the same method with the reference schedule, the meta-networks' movement per run) and draws
`<figures>/meta_schedule_weights.png` (lambdas and what weights, start and end) and
`<figures>/meta_schedule_trajectories.png` (lambda and what entropy over epochs), seed 0 of each L2T row.
"""

import json
import os
import sys

import numpy as np
import pandas as pd

from keras_l2t import intervals, meta_health, meta_plots, stats
from keras_l2t.running.results import read_results

out, preset_matching, figures = sys.argv[1:4]
reference = read_results(preset_matching)
rows = [
    reference[reference["strategy"] == "fm_uniform"].assign(method="fm_uniform", folder=preset_matching),
    reference[reference["strategy"] == "l2t_ww"].assign(method="l2t_ww reference", folder=preset_matching),
]
if os.path.exists(f"{out}/reference/results.csv"):  # the last step: may not have run yet
    www = read_results(f"{out}/reference")
    rows.append(www.assign(method="l2t_www reference", folder=f"{out}/reference"))
learning = read_results(f"{out}/learning")
rows.append(learning.assign(method=learning["strategy"] + " learning", folder=f"{out}/learning"))
runs = pd.concat(rows, ignore_index=True)
runs["test"] = 100 * runs["test_accuracy"]

print("| method | runs | test accuracy (%) | 95 % interval | p vs fm_uniform | p vs reference schedule |")
print("|---|---|---|---|---|---|")
uniform = runs.loc[runs["method"] == "fm_uniform", "test"].to_numpy()
for method, group in runs.groupby("method", sort=False):
    values = group["test"].to_numpy()
    low, high = intervals.mean_interval(values)
    against = []
    for other in ("fm_uniform", method.replace("learning", "reference")):
        other_values = runs.loc[runs["method"] == other, "test"].to_numpy()
        missing = other == method or not len(other_values)
        against.append("-" if missing else f"{stats._mann_whitney_u(values, other_values)[1]:.3f}")
    print(
        f"| {method} | {len(values)} | {values.mean():.1f} +- {values.std(ddof=1):.1f} | {low:.1f} to {high:.1f} "
        f"| {against[0]} | {against[1]} |"
    )
print(f"\nfm_uniform: {uniform.round(1).tolist()}\n")

header = (
    "| method | seed | verdict | meta steps | bound | entropy drop (of log C) | lambda change | rank corr | gamma |"
)
print(header)
print("|---|---|---|---|---|---|---|---|---|")
has_health = runs["meta_health"].map(lambda text: isinstance(text, str) and text.startswith("{"))
for row in runs[has_health].itertuples():
    health = json.loads(row.meta_health)
    gamma = f"{health['gamma_min']:.2f}-{health['gamma_max']:.2f}" if "gamma_min" in health else "-"
    print(
        f"| {row.method} | {row.seed} | {health['verdict']} | {health['meta_steps']} | {health['bound']:.3g} | "
        f"{100 * health.get('what_entropy_drop', np.nan):.2f} % | {health.get('where_change', np.nan):.3f} | "
        f"{health.get('where_rank_correlation', np.nan):.2f} | {gamma} |"
    )

first = runs[(runs["seed"] == 0) & has_health]
tensorboard = {row.method: os.path.join(row.folder, "tb", row.run) for row in first.itertuples()}
weights = {label: os.path.join(folder, "meta", meta_health.WEIGHTS_FILE) for label, folder in tensorboard.items()}
weights = {label: path for label, path in weights.items() if os.path.exists(path)}
if weights:
    meta_plots.plot_meta_weights(weights, f"{figures}/meta_schedule_weights.png")
channels = None
if weights:  # every L2T run here has the same pairs: C per pair from any kept meta_weights.npz
    saved = np.load(next(iter(weights.values())))
    channels = [saved[f"start_what_pair{index}"].size for index in range(len(saved["pairs"]))]
meta_plots.plot_meta_trajectories(tensorboard, f"{figures}/meta_schedule_trajectories.png", channels)
print(f"\nfigures: {sorted(weights)} weights, {sorted(tensorboard)} trajectories")
