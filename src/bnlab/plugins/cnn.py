"""The blog's small CNN, with or without Batch Normalization."""

from __future__ import annotations

from dataclasses import dataclass, field

from bnlab.plugins.bn_switch import BNModelConfig, block, layer_settings


@dataclass
class CNNConfig(BNModelConfig):
    _target_: str = "bnlab.plugins.cnn.build_cnn"
    # Filters of the three 3x3 convolutions, as in the original notebook.
    filters: list[int] = field(default_factory=lambda: [32, 64, 64])
    # Width of the hidden Dense layer.
    dense_units: int = 64

    def check(self) -> None:
        super().check()
        if len(self.filters) != 3 or min(self.filters) < 1:
            raise ValueError("filters: must be three positive filter counts")
        if self.dense_units < 1:
            raise ValueError("dense_units: must be >= 1")


def build_cnn(
    input_shape: tuple[int, ...],
    num_classes: int,
    bn: bool = True,
    activation: str = "relu",
    filters: list[int] = (32, 64, 64),
    dense_units: int = 64,
    bn_momentum: float = 0.9,
    bn_impl: str = "keras",
    bn_bias: bool = False,
    bn_position: str = "before",
    init_scale: float = 1.0,
    bn_noise: float = 0.0,
    norm: str = "batch",
    norm_groups: int = 8,
):
    """Builds Conv 32 -> Pool -> Conv 64 -> Pool -> Conv 64 -> Dense 64 -> Dense classes.

    With `bn`, every Conv2D and Dense (the output layer included) has no bias and is
    followed by BatchNormalization, then its activation. Without it, layers keep their
    biases and apply the activation directly. `bn_bias`, `bn_position` and `init_scale`
    vary what the article fixes (see `bn_switch`). The output layer's BN stays before
    its softmax whatever `bn_position` says: BN after a softmax would no longer output
    probabilities.
    """
    import keras
    from keras import layers

    settings = {
        "bn": bn,
        "bn_impl": bn_impl,
        "bn_momentum": bn_momentum,
        "norm": norm,
        "norm_groups": norm_groups,
    }
    # Noise (Noisy BN) follows the hidden layers' BN only: the output stays a softmax of
    # the normalized logits.
    hidden = {**settings, "bn_position": bn_position, "bn_noise": bn_noise}
    made = layer_settings(bn, bn_bias, init_scale)
    inputs = keras.Input(shape=tuple(input_shape))
    x = inputs
    for index, count in enumerate(filters):
        if index > 0:
            x = layers.MaxPooling2D(pool_size=2)(x)
        x = block(x, layers.Conv2D(filters=count, kernel_size=3, **made), activation, **hidden)
    x = layers.Flatten()(x)
    x = block(x, layers.Dense(units=dense_units, **made), activation, **hidden)
    outputs = block(x, layers.Dense(units=num_classes, **made), "softmax", **settings)
    return keras.Model(inputs=inputs, outputs=outputs, name="cnn_bn" if bn else "cnn_plain")
