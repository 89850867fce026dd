"""Issue 19's figures from the 200-epoch N = 10 runs: weight trajectories (thesis Figure 36) and gamma (Figure 35).

Reads `<out>/trajectories/*.csv` and `<out>/gamma/*.npz` written by `apps/compare_strategies.py` (one seed), draws
`docs/weight_trajectories_n10.png` and `docs/gamma_n10.png`, and prints the figures the README reads from them:
how far each followed weight moves and the epoch after which it stays within 10 % of that move of its last value.

    python benchmarks/meta_figures.py runs/figures_n10 [--docs docs]
"""

import argparse
from pathlib import Path

import numpy as np

from keras_l2t import trajectories

LABELS = {"scratch": "scratch", "l2t_ww": "L2T-ww", "l2t_www": "L2T-www"}


def settled_epoch(values: np.ndarray, fraction: float = 0.1) -> int:
    """The first epoch after which a weight stays within `fraction` of its total move of its last value."""
    band = fraction * max(abs(values[-1] - values[0]), 1e-12)
    outside = np.flatnonzero(np.abs(values - values[-1]) > band)
    return int(outside[-1] + 1) if len(outside) else 0


def weight_summary(files: dict[str, str]) -> None:
    """Print, per method, the median move and settling epoch over all followed weights."""
    print("method   | weights | median |w_last - w_0| | median settling epoch (10 % band) | epochs")
    for label, file in files.items():
        table = np.genfromtxt(file, delimiter=",", names=True, deletechars="")
        columns = [name for name in table.dtype.names if name != "epoch"]
        moves = [abs(table[column][-1] - table[column][0]) for column in columns]
        settled = [settled_epoch(table[column]) for column in columns]
        print(f"{label:8} | {len(columns):7} | {np.median(moves):.4f} | {np.median(settled):.0f} | {len(table) - 1}")


def gamma_summary(npz_path: str) -> None:
    """Print, per kept epoch, gamma's spread over pixels and its change since the previous kept epoch."""
    saved = np.load(npz_path)
    epochs = trajectories.kept_epochs(saved)
    for pair in range(len(saved["pairs"])):
        previous = None
        for epoch in epochs:
            maps = saved[f"epoch{epoch}_pair{pair}"]
            change = "" if previous is None else f", mean |change| {np.mean(np.abs(maps - previous)):.4f}"
            spread = np.mean(np.std(maps, axis=(1, 2)))
            print(f"pair {pair} epoch {epoch:3}: mean {maps.mean():.4f}, pixel std {spread:.4f}{change}")
            previous = maps


def main() -> None:
    """Draw both figures and print their summaries."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="the grid's output folder (one seed of scratch, L2T-ww, L2T-www)")
    parser.add_argument("--docs", type=Path, default=Path("docs"))
    arguments = parser.parse_args()
    files = {}
    for strategy, label in LABELS.items():
        found = sorted((arguments.out / "trajectories").glob(f"{strategy}-*.csv"))
        if found:
            files[label] = str(found[0])
    if not files:
        raise SystemExit(f"No trajectory CSVs in {arguments.out / 'trajectories'}; run the grid first.")
    drawn = trajectories.plot_weight_trajectories(files, str(arguments.docs / "weight_trajectories_n10.png"))
    print("weights drawn:", ", ".join(drawn))
    weight_summary(files)
    for npz in sorted((arguments.out / "gamma").glob("l2t_www-*.npz")):
        pair = trajectories.plot_gamma(str(npz), str(arguments.docs / "gamma_n10.png"))
        print(f"gamma figure: {npz.name}, pair {pair}")
        gamma_summary(str(npz))


if __name__ == "__main__":
    main()
