"""Rank pretrained networks for a dataset before training: transferability scores per candidate, timed.

A candidate is a backbone, its weights, an input size and a tap (the layer whose pooled output is the feature).
Candidates that share a network and a size share one forward pass over the N-per-class training images (read
through the decoded-folder cache, `data.load`); each tap's pooled output is then scored by LogME, H-score and,
when the network has its source classifier, LEEP and NCE (`transferability`). `validate` also fits the
linear probe (`probe.fit_logistic_regression`) on the same images and measures it on a held-out split, so the
scores can be checked against what they predict (`correlations`: Kendall's tau).

>>> from keras_l2t import ranking
>>> candidates = ranking.parse_candidates(["mobilenet_v2@96,160/out_relu"], {"mobilenet_v2": "weights.h5"})
>>> rows = ranking.rank("../shared/data/cats_vs_dogs", candidates, samples_per_class=50, validate=True)
"""

from __future__ import annotations

import dataclasses
import itertools
import time
from pathlib import Path

import keras
import numpy as np
import scipy.special
import scipy.stats

from keras_l2t.analysis import transferability
from keras_l2t.datasets import data
from keras_l2t.networks import backbones
from keras_l2t.training import features, probe

__all__ = ["SCORES", "SOURCE_CLASSES", "Candidate", "Row", "correlations", "parse_candidates", "rank"]

# networks whose weights keep their source classifier (LEEP and NCE need its probabilities): number of classes
SOURCE_CLASSES = {("resnet32", "tinyimagenet"): 200}
WEIGHT_SUFFIXES = (".weights.h5", ".h5", ".npz", ".pth.tar", ".pth")
SCORES = ("logme", "logme_icml", "logme_reference", "h_score", "leep", "nce")
FEATURE_SCORES = {
    "logme": transferability.logme,
    "logme_icml": lambda values, labels: transferability.logme(values, labels, algorithm="icml"),
    # as thuml/LogME computes it (without the zero eigenvalues when rank < D), to see whether that changes the order
    "logme_reference": lambda values, labels: transferability.logme(values, labels, full_spectrum=False),
    "h_score": transferability.h_score,
}
SOURCE_SCORES = {
    "leep": transferability.leep,
    "nce": lambda probabilities, labels: transferability.nce(probabilities.argmax(axis=1), labels),
}


@dataclasses.dataclass(frozen=True)
class Candidate:
    """One network to score: backbone x weights x input size x tap.

    Args:
        backbone: a registered backbone name.
        weights: a named pretraining of it (e.g. "imagenet"), a weights file, or None (random weights).
        image_size: input height and width.
        tap: the layer whose output, averaged over space, is the feature.
    """

    backbone: str
    weights: str | None
    image_size: int
    tap: str

    @property
    def name(self) -> str:
        """A short label, e.g. "mobilenet_v2@160/out_relu"."""
        return f"{self.backbone}@{self.image_size}/{self.tap}"

    @property
    def source_classes(self) -> int | None:
        """The source classifier's number of classes, or None when the weights have no classifier."""
        return SOURCE_CLASSES.get((self.backbone, self.weights))


@dataclasses.dataclass
class Row:
    """A scored candidate.

    Args:
        candidate: what was scored.
        dims: the feature's channels.
        scores: score name -> value (only the scores that apply).
        seconds: "features" (the forward pass over the training images, shared by the taps of one network and
            size), each score's own time, and with validation "probe" (fit) and "validation_features".
        notes: why a score is missing.
        probe_accuracy: the linear probe's held-out accuracy (with validation).
    """

    candidate: Candidate
    dims: int
    scores: dict[str, float]
    seconds: dict[str, float]
    notes: list[str] = dataclasses.field(default_factory=list)
    probe_accuracy: float | None = None


def _named_weights(backbone: str, weights_by_backbone: dict[str, str]) -> str:
    if backbone in weights_by_backbone:
        return weights_by_backbone[backbone]
    named = list(backbones.spec(backbone).weight_sources)
    if not named:
        raise ValueError(f"{backbone} has no named pretrained weights; give a file with --weights {backbone}=PATH.")
    return named[0]


def parse_candidates(texts, weights_by_backbone: dict[str, str] | None = None) -> list[Candidate]:
    """Candidates from "backbone[@size,size...][/tap,tap...|/all]" texts (defaults: its usual size, its last tap).

    Args:
        texts: e.g. ["mobilenet_v2@96,128/block_13_expand_relu,out_relu", "resnet32@32/all"].
        weights_by_backbone: weights per backbone (a named pretraining or a file); default its first named one.

    Returns:
        One `Candidate` per backbone x size x tap, in the order given.

    Raises:
        KeyError: unknown backbone. ValueError: unknown tap, bad size, or a backbone without named weights.

    """
    candidates = []
    for text in texts:
        head, _, taps_text = text.partition("/")
        backbone, _, sizes_text = head.partition("@")
        spec = backbones.spec(backbone.strip())
        try:
            sizes = [int(size) for size in sizes_text.split(",")] if sizes_text else [spec.default_size]
        except ValueError:
            raise ValueError(f"Candidate {text!r}: sizes must be integers, e.g. {spec.name}@96,160.") from None
        taps = spec.taps if taps_text == "all" else tuple(taps_text.split(",")) if taps_text else spec.taps[-1:]
        unknown = [tap for tap in taps if tap not in spec.taps]
        if unknown:
            raise ValueError(f"Candidate {text!r}: {spec.name} has no tap {unknown[0]!r}; its taps: {spec.taps}.")
        weights = _named_weights(spec.name, weights_by_backbone or {})
        candidates += [Candidate(spec.name, weights, size, tap) for size in sizes for tap in taps]
    return candidates


def _build(candidate: Candidate, taps: list[str]) -> keras.Model:
    """The network of a group of candidates, returning their taps (then the source logits when it has them)."""
    input_shape = (candidate.image_size, candidate.image_size, 3)
    model = backbones.build(
        candidate.backbone, weights=candidate.weights, input_shape=input_shape, num_classes=candidate.source_classes
    )
    return backbones.tap_model(model, taps, include_output=candidate.source_classes is not None)


def _timed(function, *arguments):
    started = time.perf_counter()
    value = function(*arguments)
    return value, time.perf_counter() - started


def _score(candidate: Candidate, values, labels, probabilities, seconds: float) -> Row:
    """Every score that applies to one candidate's training features, each timed."""
    row = Row(candidate, values.shape[1], {}, {"features": seconds})
    for name, function in FEATURE_SCORES.items():
        row.scores[name], row.seconds[name] = _timed(function, values, labels)
    if probabilities is None:
        row.notes.append(
            f"LEEP and NCE skipped: {candidate.backbone} ({weights_label(candidate.weights)}) has no source classifier"
        )
        return row
    for name, function in SOURCE_SCORES.items():
        row.scores[name], row.seconds[name] = _timed(function, probabilities, labels)
    return row


def _group_rows(group: list[Candidate], dataset, options: dict, validate: bool) -> list[Row]:
    """Load the data at the group's size, run its network once, score (and probe) each of its taps."""
    first = group[0]
    splits = data.load(dataset, backbone=first.backbone, image_size=first.image_size, **options)
    per_class = np.repeat(np.arange(splits.num_classes), splits.counts["train_per_class"])
    transferability.check_labels(per_class, transferability.MINIMUM_PER_CLASS, splits.class_names)
    extractor = _build(first, [candidate.tap for candidate in group])
    (outputs, labels), seconds = _timed(features.pooled_outputs, extractor, splits.train)
    probabilities = scipy.special.softmax(outputs[-1], axis=1) if first.source_classes else None
    rows = [_score(candidate, outputs[index], labels, probabilities, seconds) for index, candidate in enumerate(group)]
    if validate and splits.validation is None:
        raise ValueError("validate needs held-out images to measure the probes on: give a validation split above 0.")
    if validate:
        (held_out, held_out_labels), held_out_seconds = _timed(features.pooled_outputs, extractor, splits.validation)
        for index, row in enumerate(rows):
            predict, row.seconds["probe"] = _timed(probe.fit_logistic_regression, outputs[index], labels)
            row.probe_accuracy = float(np.mean(predict(held_out[index]) == held_out_labels))
            row.seconds["validation_features"] = held_out_seconds
    keras.backend.clear_session()
    return rows


def rank(
    dataset,
    candidates: list[Candidate],
    *,
    samples_per_class: int = 50,
    validation: float | int = 0.1,
    validate: bool = False,
    seed: int = 0,
    progress=None,
) -> list[Row]:
    """Score every candidate on N images per class of a dataset (and, with `validate`, fit its linear probe).

    Args:
        dataset: what `data.load` reads (an image folder, a TFDS name, arrays).
        candidates: from `parse_candidates`.
        samples_per_class: N, the labelled images per class that are scored (the same images for every candidate).
        validation: the held-out split carved from train (fraction or image count); the probes are measured on it.
        validate: fit and measure the linear probe of each candidate.
        seed: decides the split and the N images.
        progress: called with each finished row (e.g. to print it).

    Returns:
        One `Row` per candidate, in the order given.

    Raises:
        ValueError: a class with fewer than `transferability.MINIMUM_PER_CLASS` images, or fewer than N.

    """
    if samples_per_class < transferability.MINIMUM_PER_CLASS:
        raise ValueError(
            f"samples_per_class={samples_per_class} is too few to score: use at least "
            f"{transferability.MINIMUM_PER_CLASS} images per class (50 is a good start)."
        )
    options = dict(samples_per_class=samples_per_class, validation=validation, seed=seed, augment="none")
    options["batch_size"] = 64
    rows = []
    for _, group in itertools.groupby(candidates, key=lambda c: (c.backbone, c.weights, c.image_size)):
        for row in _group_rows(list(group), dataset, options, validate):
            rows.append(row)
            if progress is not None:
                progress(row)
    return rows


def correlations(rows: list[Row]) -> dict[str, dict]:
    """Kendall's tau and weighted tau between each score and the probes' held-out accuracy, over the candidates.

    Args:
        rows: validated rows (with `probe_accuracy`).

    Returns:
        score name -> {"tau", "p_value", "weighted_tau", "candidates"}, for the scores that at least two candidates
        have; `weighted_tau` (scipy's hyperbolic weighting) counts agreement among the top candidates more.

    """
    result = {}
    for name in SCORES:
        measured = [row for row in rows if name in row.scores and row.probe_accuracy is not None]
        pairs = [(row.scores[name], row.probe_accuracy) for row in measured]
        if len(pairs) < 2:
            continue
        scores, accuracies = np.array(pairs).T
        tau = scipy.stats.kendalltau(scores, accuracies)
        weighted = scipy.stats.weightedtau(scores, accuracies)
        result[name] = {
            "tau": float(tau.statistic),
            "p_value": float(tau.pvalue),
            "weighted_tau": float(weighted.statistic),
            "candidates": len(pairs),
        }
    return result


def weights_label(weights: str | None) -> str:
    """A short name for weights: a named pretraining as it is, a file by its stem, None as "random"."""
    if weights is None:
        return "random"
    name = Path(weights).name
    for suffix in WEIGHT_SUFFIXES:
        name = name.removesuffix(suffix)
    return name
