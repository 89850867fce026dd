"""What `ranking.rank` found, for people: a markdown table, Kendall's tau, a bar chart and a suggested start."""

from __future__ import annotations

import numpy as np

from keras_l2t.analysis.ranking import SCORES, Row, weights_label

__all__ = ["correlation_table", "costs", "plot", "suggestion", "table"]

HEADINGS = {
    "logme": "LogME",
    "logme_icml": "LogME (ICML)",
    "logme_reference": "LogME (ref. code)",
    "h_score": "H-score",
    "leep": "LEEP",
    "nce": "NCE",
}


def _ordered(rows: list[Row], score: str = "logme") -> list[Row]:
    return sorted(rows, key=lambda row: row.scores.get(score, float("-inf")), reverse=True)


def _milliseconds(row: Row) -> float:
    return 1000 * sum(row.seconds.get(name, 0.0) for name in SCORES)


def table(rows: list[Row], score: str = "logme") -> str:
    """A markdown table of the candidates, best `score` first: dims, every score, times, probe accuracy.

    Args:
        rows: from `ranking.rank`.
        score: the column that orders the rows.

    Returns:
        The table, one line per candidate ("-" for a score that does not apply).

    """
    shown = [name for name in SCORES if any(name in row.scores for row in rows)]
    validated = any(row.probe_accuracy is not None for row in rows)
    headings = ["rank", "candidate", "dims"] + [HEADINGS[name] for name in shown]
    headings += ["forward s", "scores ms"] + (["probe fit s", "probe acc %"] if validated else [])
    lines = ["| " + " | ".join(headings) + " |", "|" + "---|" * len(headings)]
    for position, row in enumerate(_ordered(rows, score), start=1):
        cells = [str(position), row.candidate.name, str(row.dims)]
        cells += [f"{row.scores[name]:.4f}" if name in row.scores else "-" for name in shown]
        cells += [f"{row.seconds['features']:.1f}", f"{_milliseconds(row):.0f}"]
        if validated:
            cells += [f"{row.seconds.get('probe', 0.0):.2f}", f"{100 * (row.probe_accuracy or 0.0):.1f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def costs(rows: list[Row]) -> str:
    """One line on the seconds spent: the forward passes and the scores, against the probes (when fitted).

    Args:
        rows: from `ranking.rank`; the taps of one network and size share their forward pass, counted once.

    Returns:
        The line.

    """
    networks = {(row.candidate.backbone, row.candidate.weights, row.candidate.image_size): row for row in rows}
    forward = sum(row.seconds["features"] for row in networks.values())
    scoring = sum(_milliseconds(row) for row in rows) / 1000
    text = f"Cost: {len(rows)} candidates, {len(networks)} forward passes over the scored images {forward:.1f} s"
    text += f" + scores {scoring:.1f} s = {forward + scoring:.1f} s"
    if any(row.probe_accuracy is not None for row in rows):
        fits = sum(row.seconds.get("probe", 0.0) for row in rows)
        held_out = sum(row.seconds.get("validation_features", 0.0) for row in networks.values())
        text += f"; the probes: the same forward passes + fits {fits:.1f} s + held-out passes {held_out:.1f} s"
        text += f" = {forward + fits + held_out:.1f} s"
    return text + "."


def correlation_table(correlations: dict[str, dict]) -> str:
    """A markdown table of Kendall's tau (with its p-value) and weighted tau of each score against probe accuracy.

    Args:
        correlations: from `ranking.correlations`.

    Returns:
        The table, one line per score.

    """
    lines = ["| score | candidates | Kendall tau | p | weighted tau |", "|---|---|---|---|---|"]
    for name, values in correlations.items():
        if np.isnan(values["tau"]):  # e.g. every candidate with this score has the same value
            lines.append(f"| {HEADINGS[name]} | {values['candidates']} | n/a (tied scores) | | |")
            continue
        lines.append(
            f"| {HEADINGS[name]} | {values['candidates']} | {values['tau']:+.3f} | {values['p_value']:.3g} | "
            f"{values['weighted_tau']:+.3f} |"
        )
    return "\n".join(lines)


def suggestion(rows: list[Row], score: str = "logme") -> str:
    """One sentence: the candidate to start from (best `score`), and the probe's best when it was measured.

    Args:
        rows: from `ranking.rank`.
        score: the score to follow.

    Returns:
        The sentence.

    """
    best = _ordered(rows, score)[0]
    text = f"Start from {best.candidate.name} ({weights_label(best.candidate.weights)}): the best {HEADINGS[score]}"
    text += f" ({best.scores[score]:.4f})."
    probed = [row for row in rows if row.probe_accuracy is not None]
    if probed:
        top = max(probed, key=lambda row: row.probe_accuracy)
        text += f" Its probe reached {100 * best.probe_accuracy:.1f} %; the best probe, {top.candidate.name}, "
        text += f"{100 * top.probe_accuracy:.1f} %."
    return text


def plot(rows: list[Row], path: str, title: str = "") -> None:
    """A bar chart per score (candidates in LogME order) with each bar's time, saved as a PNG.

    Args:
        rows: from `ranking.rank`.
        path: where to save it.
        title: the figure's title (e.g. the dataset and N).

    """
    from matplotlib.figure import Figure

    ordered = _ordered(rows)
    panels = [name for name in SCORES if any(name in row.scores for row in rows)]
    if any(row.probe_accuracy is not None for row in rows):
        panels.append("probe")
    figure = Figure(figsize=(3.2 * len(panels) + 2.5, 0.32 * len(rows) + 1.6), layout="constrained")
    axes = figure.subplots(1, len(panels), sharey=True, squeeze=False)[0]
    positions = range(len(ordered))
    for axis, name in zip(axes, panels, strict=True):
        if name == "probe":
            values = [100 * (row.probe_accuracy or 0.0) for row in ordered]
            times = [row.seconds["probe"] + row.seconds["validation_features"] for row in ordered]
            axis.set_title("linear probe: held-out acc %", fontsize=9)
        else:
            values = [row.scores.get(name, 0.0) for row in ordered]
            times = [row.seconds.get(name) for row in ordered]  # None: the score does not apply
            axis.set_title(HEADINGS[name], fontsize=9)
        axis.barh(
            positions, values, color=["C0" if name == "probe" or name in row.scores else "0.85" for row in ordered]
        )
        for position, value, seconds in zip(positions, values, times, strict=True):
            if seconds is None:
                continue
            axis.annotate(
                f"{seconds * 1000:.0f} ms" if seconds < 1 else f"{seconds:.1f} s",
                (value, position),
                fontsize=6,
                va="center",
                xytext=(2, 0),
                textcoords="offset points",
            )
        axis.tick_params(labelsize=7)
    axes[0].set_yticks(list(positions), [row.candidate.name for row in ordered])
    axes[0].invert_yaxis()
    figure.suptitle(
        title + " (bar labels: the time each score or probe took, beyond the shared forward pass)", fontsize=9
    )
    figure.savefig(path, dpi=120)
