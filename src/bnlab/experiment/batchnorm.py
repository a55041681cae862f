"""Batch Normalization through TensorFlow's fused kernel.

Keras 3's `layers.BatchNormalization` computes BN from separate ops (moments,
then the normalisation), which on TensorFlow's CPU backend made a BN step of
the blog's CNN cost 3.7x a plain one; TensorFlow's fused kernel, the one
tf.keras used by default, brings that down to 1.7x. `FusedBatchNormalization`
is that kernel behind the same interface and the same arithmetic as Keras's
layer: biased batch variance, moving statistics updated as
`moving = moving * momentum + batch * (1 - momentum)`, epsilon 1e-3.

JAX needs none of this: XLA fuses Keras's layer by itself (`bn_impl=keras`).
"""

from __future__ import annotations

import keras
from keras import layers


@keras.saving.register_keras_serializable(package="bnlab")
class FusedBatchNormalization(layers.Layer):
    """BN over the last axis of a 2-D or 4-D input, with TensorFlow's fused kernel.

    Args:
        momentum: Weight of the old value in the moving mean and variance.
        epsilon: Added to the variance before its square root, as in Keras (1e-3).
    """

    def __init__(self, momentum: float = 0.99, epsilon: float = 1e-3, **kwargs) -> None:
        super().__init__(**kwargs)
        self.momentum = float(momentum)
        self.epsilon = float(epsilon)

    def build(self, input_shape) -> None:
        if len(input_shape) not in (2, 4):
            raise ValueError(
                f"FusedBatchNormalization takes 2-D or 4-D inputs, got shape {input_shape}"
            )
        channels = (int(input_shape[-1]),)
        self.gamma = self.add_weight(shape=channels, initializer="ones", name="gamma")
        self.beta = self.add_weight(shape=channels, initializer="zeros", name="beta")
        self.moving_mean = self.add_weight(
            shape=channels, initializer="zeros", trainable=False, name="moving_mean"
        )
        self.moving_variance = self.add_weight(
            shape=channels, initializer="ones", trainable=False, name="moving_variance"
        )

    def call(self, inputs, training=None):
        import tensorflow as tf

        # The kernel takes NHWC images; a Dense layer's (batch, units) is (batch, 1, 1, units).
        flat = len(inputs.shape) == 2
        images = tf.reshape(inputs, (-1, 1, 1, inputs.shape[-1])) if flat else inputs
        if training and self.trainable:
            outputs, mean, variance = tf.compat.v1.nn.fused_batch_norm(
                images, self.gamma, self.beta, epsilon=self.epsilon, is_training=True
            )
            # The kernel hands back the Bessel-corrected variance for the moving
            # estimate; Keras's layer averages the biased one it normalises with.
            count = tf.cast(tf.size(images) // tf.shape(images)[-1], variance.dtype)
            variance = variance * (count - 1.0) / tf.maximum(count, 1.0)
            self.moving_mean.assign(self.moving_mean * self.momentum + mean * (1 - self.momentum))
            self.moving_variance.assign(
                self.moving_variance * self.momentum + variance * (1 - self.momentum)
            )
        else:
            outputs, _, _ = tf.compat.v1.nn.fused_batch_norm(
                images,
                self.gamma,
                self.beta,
                mean=self.moving_mean,
                variance=self.moving_variance,
                epsilon=self.epsilon,
                is_training=False,
            )
        return tf.reshape(outputs, tf.shape(inputs)) if flat else outputs

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self) -> dict:
        return {**super().get_config(), "momentum": self.momentum, "epsilon": self.epsilon}


def batch_normalization(impl: str, momentum: float) -> layers.Layer:
    """A BN layer of implementation `impl` ('fused' or 'keras') with the given momentum."""
    if impl == "fused":
        return FusedBatchNormalization(momentum=momentum)
    if impl == "keras":
        return layers.BatchNormalization(momentum=momentum)
    raise ValueError(f"model.bn_impl: unknown implementation '{impl}' (accepted: fused, keras)")
