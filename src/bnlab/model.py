"""The blog's small CNN, with or without Batch Normalization."""

from __future__ import annotations

import keras
from keras import layers

from bnlab.batchnorm import batch_normalization
from bnlab.config import ModelConfig, OptimizerConfig
from bnlab.data import IMAGE_SHAPE, NUM_CLASSES


def _block(x, layer: layers.Layer, activation: str, config: ModelConfig):
    """Applies `layer`, then BN and the activation, or the activation alone."""
    x = layer(x)
    if config.bn:
        x = batch_normalization(config.bn_impl, config.bn_momentum)(x)
    return layers.Activation(activation)(x)


def build_model(config: ModelConfig) -> keras.Model:
    """Builds Conv 32 -> Pool -> Conv 64 -> Pool -> Conv 64 -> Dense 64 -> Dense 10.

    With `config.bn`, every Conv2D and Dense (the output layer included) has no
    bias and is followed by BatchNormalization, then its activation. Without it,
    layers keep their biases and apply the activation directly.
    """
    bias = not config.bn
    inputs = keras.Input(shape=IMAGE_SHAPE)
    x = inputs
    for index, filters in enumerate(config.filters):
        if index > 0:
            x = layers.MaxPooling2D(pool_size=2)(x)
        x = _block(
            x,
            layers.Conv2D(filters=filters, kernel_size=3, use_bias=bias),
            config.activation,
            config,
        )
    x = layers.Flatten()(x)
    x = _block(x, layers.Dense(units=config.dense_units, use_bias=bias), config.activation, config)
    outputs = _block(x, layers.Dense(units=NUM_CLASSES, use_bias=bias), "softmax", config)
    name = "cnn_bn" if config.bn else "cnn_plain"
    return keras.Model(inputs=inputs, outputs=outputs, name=name)


def build_optimizer(config: OptimizerConfig) -> keras.optimizers.Optimizer:
    """Builds the optimizer named by `config.name` at learning rate `config.lr`."""
    if config.name == "adam":
        return keras.optimizers.Adam(learning_rate=config.lr)
    if config.name == "sgd":
        return keras.optimizers.SGD(learning_rate=config.lr, momentum=config.momentum)
    if config.name == "rmsprop":
        return keras.optimizers.RMSprop(learning_rate=config.lr, momentum=config.momentum)
    raise ValueError(f"optimizer.name: unknown optimizer '{config.name}'")
