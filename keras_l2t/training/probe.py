"""Linear probes: how good a frozen backbone's features are, measured by a linear classifier on top."""

from __future__ import annotations

import numpy as np
import scipy.optimize
import scipy.special

from keras_l2t.datasets import sources
from keras_l2t.networks import backbones


def pooled_features(model, images: np.ndarray, preprocess, batch_size: int = 64) -> np.ndarray:
    """Run a frozen backbone in inference mode and average its output over space.

    Args:
        model: a feature extractor (no classifier).
        images: uint8 or float RGB images in [0, 255], shape (N, H, W, 3).
        preprocess: the backbone's preprocessing function.
        batch_size: images per forward pass.

    Returns:
        float32 features of shape (N, channels).

    """
    chunks = []
    for start in range(0, len(images), batch_size):
        output = np.asarray(model(preprocess(images[start : start + batch_size].astype("float32")), training=False))
        chunks.append(output.mean(axis=(1, 2)) if output.ndim == 4 else output)
    return np.concatenate(chunks).astype("float32")


def fit_logistic_regression(features: np.ndarray, labels: np.ndarray, l2: float = 1e-3, max_iterations: int = 500):
    """Multinomial logistic regression with an L2 penalty, fitted exactly by L-BFGS on standardised features.

    Args:
        features: (N, D) training features.
        labels: (N,) integer labels.
        l2: penalty on the weights (times the mean loss).
        max_iterations: L-BFGS iteration limit.

    Returns:
        A function mapping features (M, D) to predicted labels (M,).

    """
    weights, bias = fit_linear_classifier(features, labels, l2, max_iterations)
    return lambda new: np.argmax(new @ weights + bias, axis=1)


def fit_linear_classifier(features: np.ndarray, labels: np.ndarray, l2: float = 1e-3, max_iterations: int = 500):
    """The logistic regression of `fit_logistic_regression` as weights and bias on the raw (unstandardised) features.

    Args:
        features: (N, D) training features.
        labels: (N,) integer labels.
        l2: penalty on the weights of the standardised features (times the mean loss).
        max_iterations: L-BFGS iteration limit.

    Returns:
        (weights (D, classes), bias (classes,)): logits = features @ weights + bias.

    """
    mean, std = features.mean(0), features.std(0) + 1e-6
    x = ((features - mean) / std).astype("float64")
    classes = int(labels.max()) + 1
    one_hot = np.eye(classes)[labels]
    dims = x.shape[1]

    def loss_and_gradient(parameters):
        weights, bias = parameters[: dims * classes].reshape(dims, classes), parameters[dims * classes :]
        logits = x @ weights + bias
        log_probs = logits - scipy.special.logsumexp(logits, axis=1, keepdims=True)
        loss = -(one_hot * log_probs).sum(1).mean() + 0.5 * l2 * (weights**2).sum()
        delta = (np.exp(log_probs) - one_hot) / len(x)
        gradient = np.concatenate([(x.T @ delta + l2 * weights).ravel(), delta.sum(0)])
        return loss, gradient

    start = np.zeros(dims * classes + classes)
    result = scipy.optimize.minimize(
        loss_and_gradient, start, jac=True, method="L-BFGS-B", options={"maxiter": max_iterations}
    )
    weights, bias = result.x[: dims * classes].reshape(dims, classes), result.x[dims * classes :]
    return weights / std[:, None], bias - (mean / std) @ weights  # ((x - mean) / std) @ W + b, expanded


def linear_probe(backbone: str, weights, train_root: str, test_root: str, image_size: int) -> dict:
    """Test accuracy of a linear classifier on a frozen backbone's pooled features.

    Args:
        backbone: a registered backbone name.
        weights: None (random weights), a named pretraining or a local weights file.
        train_root: `<root>/<class>/*` training images.
        test_root: `<root>/<class>/*` test images (same classes).
        image_size: input height and width.

    Returns:
        {"backbone", "weights", "image_size", "train_images", "test_images", "test_accuracy"}.

    """
    spec = backbones.spec(backbone)
    model = backbones.build(backbone, weights=weights, input_shape=(image_size, image_size, 3))
    train_images, train_labels, train_classes = sources.load_image_folder(train_root, image_size)
    test_images, test_labels, test_classes = sources.load_image_folder(test_root, image_size)
    if train_classes != test_classes:
        raise ValueError(f"train classes {train_classes} differ from test classes {test_classes}")
    train_features = pooled_features(model, train_images, spec.preprocess)
    predict = fit_logistic_regression(train_features, train_labels)
    accuracy = float(np.mean(predict(pooled_features(model, test_images, spec.preprocess)) == test_labels))
    return {
        "backbone": backbone,
        "weights": str(weights),
        "image_size": image_size,
        "train_images": len(train_labels),
        "test_images": len(test_labels),
        "test_accuracy": accuracy,
    }
