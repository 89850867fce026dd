"""Transferability scores: how well a pretrained network suits a target task, from one forward pass.

Each score takes what a frozen network computes on the labelled target images and returns one number per
network (higher is better), with no training:

- `logme`: the log marginal evidence of a Bayesian linear model on the features (You et al., ICML 2021; the
  fixed-point algorithm of You et al., JMLR 2022, is the default).
- `leep`: the log expected empirical prediction of the source classifier's probabilities (Nguyen et al., 2020).
- `nce`: the negative conditional entropy of target labels given source predictions (Tran et al., 2019).
- `h_score`: the between-class share of the feature covariance (Bao et al., 2019).

LogME, LEEP and NCE compute what the reference implementations (thuml/LogME) compute, to 1e-6 relative
(tests/test_transferability.py checks them against their recorded outputs).
"""

from __future__ import annotations

import numpy as np

__all__ = ["MINIMUM_PER_CLASS", "check_labels", "h_score", "leep", "logme", "nce"]

MINIMUM_PER_CLASS = 5  # below this, a class's evidence or conditional entropy rests on a handful of images
LOGME_ALGORITHMS = ("fixed_point", "icml")
ITERATIONS = 11  # the reference's limit on evidence-maximisation steps (they converge in a few)
EPSILON = 1e-5  # the reference's guard on the alpha and beta updates' denominators
ENTROPY_FLOOR = 1e-20  # the reference adds this to P(y | z) before the logarithm of NCE


def check_labels(labels, minimum_per_class: int = 1, class_names=None) -> np.ndarray:
    """Check target labels: integers 0..C-1, every class present with at least `minimum_per_class` images.

    Args:
        labels: (N,) integer class labels.
        minimum_per_class: the fewest images a class may have.
        class_names: names for the messages (default the label values).

    Returns:
        The labels as an int64 array.

    Raises:
        ValueError: non-integer or negative labels, fewer than two classes, or a class with too few images.

    """
    labels = np.asarray(labels)
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer) or (labels.size and labels.min() < 0):
        raise ValueError(f"labels must be a 1-D array of class indices 0..C-1, got {labels.dtype} {labels.shape}.")
    counts = np.bincount(labels)
    if len(counts) < 2:
        raise ValueError("Transferability needs labelled images of at least two classes.")
    fewest = int(np.argmin(counts))
    if counts[fewest] < minimum_per_class:
        name = class_names[fewest] if class_names is not None else fewest
        raise ValueError(
            f"Class {name!r} has {counts[fewest]} images; scoring needs at least {minimum_per_class} per class. "
            "Use more images per class (e.g. samples_per_class=50)."
        )
    return labels.astype("int64")


def _check_rows(matrix, labels, what: str) -> tuple[np.ndarray, np.ndarray]:
    matrix = np.asarray(matrix, dtype="float64")
    labels = check_labels(labels)
    if matrix.ndim != 2 or len(matrix) != len(labels):
        raise ValueError(f"{what} must be (N, D) with one row per label; got {matrix.shape} for {len(labels)} labels.")
    return matrix, labels


def _spectrum(features: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A thin SVD F = U S V^T as (U, S^2, V), dropping singular values at or below 1e-10 when N > D."""
    if len(features) <= features.shape[1]:
        left, singular, right = np.linalg.svd(features, full_matrices=False)
        return left, singular**2, right.T
    eigenvalues, vectors = np.linalg.eigh(features.T @ features)  # D x D is the cheaper side
    singular = np.sqrt(np.clip(eigenvalues, 0.0, None))
    keep = singular > 1e-10
    return features @ vectors[:, keep] / singular[keep], singular[keep] ** 2, vectors[:, keep]


def _padded(sigma: np.ndarray, dims: int) -> np.ndarray:
    """The D eigenvalues of F^T F: the k nonzero ones, then D - k zeros."""
    return np.concatenate([sigma, np.zeros(dims - len(sigma))])


def _evidence(dims, count, alpha, beta, sigma, residual, weight_norm) -> float:
    """Eq. 2 of You et al. (2021): log p(y | F, alpha, beta) per sample, for eigenvalues `sigma` of F^T F."""
    return (
        dims / 2 * np.log(alpha)
        + count / 2 * np.log(beta)
        - 0.5 * np.sum(np.log(alpha + beta * sigma))
        - beta / 2 * residual
        - alpha / 2 * weight_norm
        - count / 2 * np.log(2 * np.pi)
    ) / count


def _logme_fixed_point(features: np.ndarray, target: np.ndarray, basis, sigma, full_spectrum: bool) -> float:
    """One target column by the fixed-point iteration (You et al., JMLR 2022, Algorithm 2), in SVD coordinates.

    `full_spectrum` counts the D - k zero eigenvalues of F^T F (rank k < D) in log|A|, as eq. 2 requires; the
    reference code leaves them out (thuml/LogME issue 23), which overstates the evidence when N < D.
    """
    count, dims = features.shape
    projected = (basis.T @ target) ** 2  # z_i^2 = (u_i^T y)^2
    outside = target @ target - projected.sum()  # |y|^2 outside the span of U
    alpha = beta = 1.0
    for _ in range(ITERATIONS):
        ratio = alpha / beta  # t = alpha / beta
        gamma = np.sum(sigma / (sigma + ratio))
        weight_norm = np.sum(sigma * projected / (ratio + sigma) ** 2)  # |m|^2
        residual = np.sum(projected / (1 + sigma / ratio) ** 2) + outside  # |y - F m|^2
        alpha, beta = gamma / (weight_norm + EPSILON), (count - gamma) / (residual + EPSILON)
        if abs(alpha / beta - ratio) / ratio <= 1e-3:
            break
    return _evidence(dims, count, alpha, beta, _padded(sigma, dims) if full_spectrum else sigma, residual, weight_norm)


def _logme_icml(features: np.ndarray, target: np.ndarray, vectors, sigma) -> float:
    """One target column by MacKay's updates (You et al., ICML 2021, Algorithm 1), with m = beta A^-1 F^T y.

    `vectors` (D x k) span the row space of F; F^T y has no part outside it, so m and gamma need only these,
    and the D - k zero eigenvalues enter log|A| alone.
    """
    count, dims = features.shape
    rotated = vectors.T @ (features.T @ target)
    alpha = beta = 1.0
    for _ in range(ITERATIONS):
        ratio = alpha / beta
        gamma = np.sum(sigma / (sigma + ratio))
        weights = vectors @ (rotated * beta / (alpha + beta * sigma))
        weight_norm = weights @ weights + EPSILON
        residual = np.sum((target - features @ weights) ** 2) + EPSILON
        alpha, beta = gamma / weight_norm, (count - gamma) / residual
        if abs(alpha / beta - ratio) / ratio < 0.01:
            break
    return _evidence(dims, count, alpha, beta, _padded(sigma, dims), residual, weight_norm)


def logme(features, labels, algorithm: str = "fixed_point", full_spectrum: bool = True) -> float:
    """LogME: the mean over classes of the maximised log evidence of a linear model from features to labels.

    You et al., "LogME: Practical Assessment of Pre-trained Models for Transfer Learning", ICML 2021, and
    "Ranking and Tuning Pre-trained Models: A New Paradigm for Exploiting Model Hubs", JMLR 2022. Each class c
    is a regression target y = 1[label = c] with prior w ~ N(0, 1/alpha) and noise N(0, 1/beta); the score is
    (1/C) sum_c max_{alpha, beta} (1/N) log p(y | F, alpha, beta), where (eq. 2 of the ICML paper)
    log p = D/2 log alpha + N/2 log beta - 1/2 log|alpha I + beta F^T F| - beta/2 |y - F m|^2
    - alpha/2 |m|^2 - N/2 log 2 pi, with m = beta (alpha I + beta F^T F)^-1 F^T y.

    Args:
        features: (N, D) features of the target images (e.g. pooled activations of one layer).
        labels: (N,) class indices 0..C-1.
        algorithm: "fixed_point" (JMLR 2022, Algorithm 2: alpha/beta from a closed form in the SVD of F) or
            "icml" (ICML 2021, Algorithm 1: MacKay's alternating updates). Both stop as the reference code does
            (at most 11 steps), so they agree to about 1e-3.
        full_spectrum: (fixed point) count the zero eigenvalues of F^T F in log|alpha I + beta F^T F|, as the
            formula requires. False reproduces the reference code (thuml/LogME at 56551ca), which drops them and
            so overstates the score by (D - k) / (2N) log alpha when the features' rank k is below D (N < D,
            or constant features); both agree when F has full column rank.

    Returns:
        The score (higher: the features explain the labels better); comparable across networks on one task.

    Raises:
        ValueError: mismatched shapes, bad labels or an unknown algorithm.

    """
    if algorithm not in LOGME_ALGORITHMS:
        raise ValueError(f"Unknown LogME algorithm {algorithm!r}; choose one of {', '.join(LOGME_ALGORITHMS)}.")
    features, labels = _check_rows(features, labels, "features")
    targets = np.eye(labels.max() + 1)[labels].T  # one regression target per class
    basis, sigma, vectors = _spectrum(features)
    if algorithm == "fixed_point":
        evidences = [_logme_fixed_point(features, target, basis, sigma, full_spectrum) for target in targets]
    else:
        evidences = [_logme_icml(features, target, vectors, sigma) for target in targets]
    return float(np.mean(evidences))


def _check_probabilities(probabilities) -> np.ndarray:
    probabilities = np.asarray(probabilities, dtype="float64")
    if probabilities.ndim != 2 or probabilities.min() < 0 or not np.allclose(probabilities.sum(1), 1, atol=1e-4):
        raise ValueError(
            "source_probabilities must be (N, source classes) rows of probabilities summing to 1 "
            "(apply a softmax to the source classifier's logits)."
        )
    return probabilities


def leep(source_probabilities, labels) -> float:
    """LEEP: the mean log-likelihood of the target labels under the source classifier's "dummy" target classifier.

    Nguyen et al., "LEEP: A New Measure to Evaluate Transferability of Learned Representations", ICML 2020, eq. 2:
    with theta(x) the source model's class probabilities, the empirical joint P(y, z) = (1/N) sum_i theta(x_i)_z
    1[y_i = y] gives P(y | z) = P(y, z) / P(z), and LEEP = (1/N) sum_i log sum_z P(y_i | z) theta(x_i)_z.

    Args:
        source_probabilities: (N, source classes) softmax outputs of the pretrained classifier on target images.
        labels: (N,) target class indices 0..C-1.

    Returns:
        The score, at most 0 (higher is better).

    """
    probabilities, labels = _check_rows(_check_probabilities(source_probabilities), labels, "source_probabilities")
    joint = np.eye(labels.max() + 1)[labels].T @ probabilities / len(labels)  # (target, source)
    conditional = joint / joint.sum(axis=0, keepdims=True)  # P(y | z)
    expected = probabilities @ conditional.T  # (N, target): the dummy classifier's prediction
    return float(np.mean(np.log(expected[np.arange(len(labels)), labels])))


def nce(source_labels, labels) -> float:
    """NCE: the negative conditional entropy -H(Y | Z) of target labels Y given the source model's predictions Z.

    Tran et al., "Transferability and Hardness of Supervised Classification Tasks", ICCV 2019, eq. 3-4: from the
    empirical joint P(y, z) of N (source prediction, target label) pairs, NCE = sum_z P(z) sum_y P(y | z) log
    P(y | z). As the reference code does, 1e-20 is added to P(y | z) inside the sum (so a perfect case gives
    about -1.8e-18 rather than 0).

    Args:
        source_labels: (N,) the source classifier's predicted class of each image (argmax of its probabilities).
        labels: (N,) target class indices 0..C-1.

    Returns:
        The score, at most 0 (higher is better; 0 when the source prediction determines the label).

    """
    source_labels, labels = np.asarray(source_labels), check_labels(labels)
    if source_labels.shape != labels.shape or not np.issubdtype(source_labels.dtype, np.integer):
        raise ValueError(
            f"source_labels must hold one source class index per label (argmax of the source probabilities); "
            f"got {source_labels.dtype} {source_labels.shape} for {len(labels)} labels."
        )
    joint = np.zeros((labels.max() + 1, source_labels.max() + 1))
    np.add.at(joint, (labels, source_labels), 1.0 / len(labels))
    source_marginal = joint.sum(axis=0)
    used = source_marginal > 0
    conditional = joint[:, used] / source_marginal[used] + ENTROPY_FLOOR  # P(y | z)
    return float(np.sum(source_marginal[used] * np.sum(conditional * np.log(conditional), axis=0)))


def h_score(features, labels) -> float:
    """H-score: tr(cov(f)^-1 cov(E[f | y])), how much of the features' spread lies between the classes.

    Bao et al., "An Information-Theoretic Approach to Transferability in Task Transfer Learning", ICIP 2019,
    eq. 4: H(f) = tr(cov(f(X))^-1 cov(E_{P_X|Y}[f(X) | Y])), with the class-conditional mean of f standing for
    each sample and the pseudo-inverse for the inverse. When N <= D the covariance is singular and the score
    tends to C - 1 for every network, so it ranks only features with fewer dimensions than images.

    Args:
        features: (N, D) features of the target images.
        labels: (N,) class indices 0..C-1.

    Returns:
        The score, between 0 and C - 1 (higher is better).

    """
    features, labels = _check_rows(features, labels, "features")
    class_means = np.stack([features[labels == label].mean(axis=0) for label in range(labels.max() + 1)])
    centred, between = features - features.mean(axis=0), class_means[labels] - features.mean(axis=0)
    # cov(f)^+ from the thin SVD of the centred features (pinv's cut: s^2 <= 1e-15 s_max^2); the N - 1 cancels
    _, singular, right = np.linalg.svd(centred, full_matrices=False)
    keep = singular**2 > 1e-15 * singular[0] ** 2
    return float(np.sum((between @ right[keep].T / singular[keep]) ** 2))
