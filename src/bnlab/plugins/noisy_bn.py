"""Noisy BN (Santurkar et al. 2018, section 2.1): BN followed by random, non-stationary
scale and shift noise, so that each layer's inputs shift at every step.

During training, every call draws, for each channel, a scale 1 + s * (u1 + z1) and a
shift s * (u2 + z2): u1, u2 ~ U(-1, 1) are drawn once per step for the whole layer (the
noise's distribution moves from step to step) and z1, z2 ~ N(0, 1) per channel. At
inference the layer passes its input through: the noise is a training-time distortion,
as in the paper.
"""

from __future__ import annotations

import keras
from keras import layers


@keras.saving.register_keras_serializable(package="bnlab")
class NonStationaryNoise(layers.Layer):
    """Random per-channel scale and shift whose distribution changes at every step."""

    def __init__(self, strength: float, seed: int | None = None, **kwargs) -> None:
        super().__init__(**kwargs)
        self.strength = float(strength)
        self.seed = seed
        self.generator = keras.random.SeedGenerator(seed)

    def call(self, inputs, training: bool = False):
        if not training or self.strength == 0:
            return inputs
        channels = (inputs.shape[-1],)
        step = keras.random.uniform((2,), -1.0, 1.0, seed=self.generator)
        scale = 1.0 + self.strength * (step[0] + keras.random.normal(channels, seed=self.generator))
        shift = self.strength * (step[1] + keras.random.normal(channels, seed=self.generator))
        return inputs * keras.ops.cast(scale, inputs.dtype) + keras.ops.cast(shift, inputs.dtype)

    def get_config(self) -> dict:
        return {**super().get_config(), "strength": self.strength, "seed": self.seed}
