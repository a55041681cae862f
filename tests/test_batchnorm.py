"""The fused BN layer computes what keras.layers.BatchNormalization computes.

Forward output in training and inference mode, gradients with respect to the
input, gamma and beta, and the moving statistics after 20 updates, for the 4-D
input after a Conv2D and the 2-D input after a Dense, at the project's momentum
(0.9) and Keras's (0.99). Keras averages the biased batch variance into its
moving variance; TensorFlow's kernel returns the unbiased one, which the layer
corrects, and the moving-variance check would catch a missing correction.
"""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
import pytest
from keras import layers

pytestmark = pytest.mark.skipif(
    keras.backend.backend() != "tensorflow", reason="the fused kernel is TensorFlow's"
)

FORWARD_RTOL = 1e-5
GRADIENT_RTOL = 1e-4
SHAPES = {"conv (4-D)": (8, 6, 6, 5), "dense (2-D)": (16, 7)}


def pair(shape: tuple[int, ...], momentum: float):
    """Keras's layer and the fused one, built alike with the same random gamma and beta."""
    from bnlab.experiment.batchnorm import FusedBatchNormalization

    reference = layers.BatchNormalization(momentum=momentum)
    fused = FusedBatchNormalization(momentum=momentum)
    rng = np.random.default_rng(1)
    gamma = rng.uniform(0.5, 1.5, shape[-1]).astype("float32")
    beta = rng.normal(size=shape[-1]).astype("float32")
    for layer in (reference, fused):
        layer.build(shape)
        layer.gamma.assign(gamma)
        layer.beta.assign(beta)
    return reference, fused


def batch(shape: tuple[int, ...], seed: int) -> np.ndarray:
    # An offset and a scale away from 0 and 1, so the statistics really move.
    return (np.random.default_rng(seed).normal(size=shape) * 3.0 + 2.0).astype("float32")


def close(actual, expected, rtol: float) -> None:
    actual, expected = np.asarray(actual), np.asarray(expected)
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=rtol * np.abs(expected).max())


@pytest.mark.parametrize("momentum", [0.9, 0.99])
@pytest.mark.parametrize("shape", SHAPES.values(), ids=SHAPES.keys())
def test_forward_in_training_and_inference_and_moving_statistics_after_20_updates(
    shape, momentum
) -> None:
    reference, fused = pair(shape, momentum)
    for step in range(20):
        x = batch(shape, seed=step)
        close(fused(x, training=True), reference(x, training=True), FORWARD_RTOL)
    close(fused.moving_mean.numpy(), reference.moving_mean.numpy(), FORWARD_RTOL)
    close(fused.moving_variance.numpy(), reference.moving_variance.numpy(), FORWARD_RTOL)
    # The variance really moved away from its initial 1 (it is ~9 here).
    assert reference.moving_variance.numpy().mean() > 2.0
    x = batch(shape, seed=99)
    close(fused(x, training=False), reference(x, training=False), FORWARD_RTOL)


@pytest.mark.parametrize("shape", SHAPES.values(), ids=SHAPES.keys())
def test_gradients_with_respect_to_input_gamma_and_beta(shape) -> None:
    import tensorflow as tf

    reference, fused = pair(shape, momentum=0.9)
    x = tf.constant(batch(shape, seed=5))
    # Weights the outputs unevenly, so no gradient is zero by symmetry.
    weights = tf.constant(np.random.default_rng(7).normal(size=shape).astype("float32"))
    grads = []
    for layer in (reference, fused):
        with tf.GradientTape() as tape:
            tape.watch(x)
            loss = tf.reduce_sum(layer(x, training=True) ** 2 * weights)
        grads.append(tape.gradient(loss, [x, layer.gamma, layer.beta]))
    for expected, actual in zip(*grads, strict=True):
        close(actual, expected, GRADIENT_RTOL)


def test_model_with_fused_bn_saves_and_loads_through_mlflow(tmp_path: Path) -> None:
    import mlflow.keras

    from bnlab.experiment.batchnorm import FusedBatchNormalization
    from bnlab.plugins.cnn import build_cnn

    model = build_cnn(input_shape=(28, 28, 1), num_classes=10, bn=True, bn_impl="fused")
    x = batch((4, 28, 28, 1), seed=3)
    model(x, training=True)  # moves the moving statistics off their initial values
    mlflow.keras.save_model(model, str(tmp_path / "model"))
    loaded = mlflow.keras.load_model(str(tmp_path / "model"))
    assert sum(isinstance(layer, FusedBatchNormalization) for layer in loaded.layers) == 5
    np.testing.assert_allclose(loaded.predict(x, verbose=0), model.predict(x, verbose=0))


def test_an_unknown_implementation_is_refused() -> None:
    from bnlab.experiment.batchnorm import batch_normalization

    with pytest.raises(ValueError, match="model.bn_impl"):
        batch_normalization("cudnn", 0.9)
