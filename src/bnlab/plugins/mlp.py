"""A small multilayer perceptron, with or without Batch Normalization.

The digits example's model (conf/model/mlp.yaml): the same BN switch as the CNN, on
Dense layers only, for small flat or image inputs.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from bnlab.plugins.bn_switch import BNModelConfig, block, layer_settings


@dataclass
class MLPConfig(BNModelConfig):
    _target_: str = "bnlab.plugins.mlp.build_mlp"
    # Width of each hidden Dense layer, input side first.
    hidden_units: list[int] = field(default_factory=lambda: [64, 64])

    def check(self) -> None:
        super().check()
        if not self.hidden_units or min(self.hidden_units) < 1:
            raise ValueError("hidden_units: must be one or more positive widths")


def build_mlp(
    input_shape: tuple[int, ...],
    num_classes: int,
    bn: bool = True,
    activation: str = "relu",
    hidden_units: list[int] = (64, 64),
    bn_momentum: float = 0.9,
    bn_impl: str = "keras",
    bn_bias: bool = False,
    bn_position: str = "before",
    init_scale: float = 1.0,
    bn_noise: float = 0.0,
    norm: str = "batch",
    norm_groups: int = 8,
):
    """Builds Flatten -> Dense x len(hidden_units) -> Dense classes, softmax.

    Blocks as in the CNN (`bn_switch.block`); the output's BN stays before its softmax.
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
    x = layers.Flatten()(inputs)
    for units in hidden_units:
        x = block(x, layers.Dense(units=units, **made), activation, **hidden)
    outputs = block(x, layers.Dense(units=num_classes, **made), "softmax", **settings)
    return keras.Model(inputs=inputs, outputs=outputs, name="mlp_bn" if bn else "mlp_plain")
