"""What the BN study's models share: the BN switch, its settings and one block.

A block is a layer without bias, then BatchNormalization, then the activation (the
article's placement), or the layer with its bias and the activation alone. The
claims suite varies what the article fixes: a bias kept before BN (`bn_bias`), BN
after the activation (`bn_position`), and the scale of the initial weights
(`init_scale`); the defaults are the article's.
"""

from __future__ import annotations

from dataclasses import dataclass

from omegaconf import OmegaConf

from bnlab.backend import keras_backend
from bnlab.config import ModelConfig

ACTIVATIONS = ("relu", "sigmoid", "tanh", "elu", "selu", "gelu", "swish", "softplus")
# Where BN goes in a block: before the activation (the article) or after it.
BN_POSITIONS = ("before", "after")
# BN implementations, each with the Keras backends it runs on: TensorFlow's fused
# kernel (bnlab/batchnorm.py), or Keras's own layer, which XLA fuses under JAX.
BN_IMPLS = {"fused": ("tensorflow",), "keras": ("tensorflow", "jax", "torch")}
BN_IMPL_RESOLVER = "bnlab_bn_impl"
# The strongest noise after BN: a scale that can turn negative is no longer a distortion.
MAX_BN_NOISE = 1.0
# What the switch inserts: Batch Normalization (the article), Layer Normalization (Ba et
# al. 2016: each example over all its channels and positions, Wu and He's form) or Group
# Normalization (Wu and He 2018: each example over groups of channels).
NORMS = ("batch", "layer", "group")


def default_bn_impl() -> str:
    """The faster BN implementation on this process's backend: fused on TensorFlow."""
    return "fused" if keras_backend() == "tensorflow" else "keras"


if not OmegaConf.has_resolver(BN_IMPL_RESOLVER):
    OmegaConf.register_new_resolver(BN_IMPL_RESOLVER, default_bn_impl)


@dataclass
class BNModelConfig(ModelConfig):
    """The settings of a model that the study runs with and without BN."""

    # Insert BatchNormalization after every hidden and output layer (the experiment's switch).
    bn: bool = True
    # Hidden-layer activation; the output layer is always softmax.
    activation: str = "relu"
    # Weight of the old value in BN's moving statistics (used at evaluation). Keras's
    # 0.99 averages over ~100 steps, so on a 1,000-step schedule the validation curve
    # of a BN model lags its training accuracy by hundreds of steps; 0.9 tracks it.
    bn_momentum: float = 0.9
    # How BN is computed: "fused" (TensorFlow's fused kernel, 2x faster on the CPU than
    # Keras's layer) or "keras" (keras.layers.BatchNormalization). Same arithmetic; the
    # default is the faster one for the backend, and the choice is part of the identity.
    bn_impl: str = "${" + BN_IMPL_RESOLVER + ":}"
    # Keep each layer's bias when BN follows it. The article drops it: BN's own shift
    # (beta) makes it redundant, so it only costs parameters and time.
    bn_bias: bool = False
    # BN before the activation (the article: layer, BN, activation) or after it.
    bn_position: str = "before"
    # Initial weights: Keras's Glorot uniform, with their spread multiplied by this. BN
    # is said to make a network less sensitive to it.
    init_scale: float = 1.0
    # Noisy BN (Santurkar et al. 2018): after each hidden BN, random per-channel scale
    # and shift noise of this strength whose distribution changes at every training step
    # (plugins/noisy_bn.py); 0 leaves BN as it is.
    bn_noise: float = 0.0
    # Which normalization the switch inserts (`bn=true`): batch (BN), layer or group.
    norm: str = "batch"
    # Channels per layer are split into this many groups by GroupNorm (fewer where they
    # do not divide: the greatest common divisor).
    norm_groups: int = 8

    def check(self) -> None:
        if self.activation not in ACTIVATIONS:
            raise ValueError(
                f"activation: unknown activation '{self.activation}' "
                f"(accepted: {', '.join(ACTIVATIONS)})"
            )
        if not 0 <= self.bn_momentum < 1:
            raise ValueError(f"bn_momentum: must be in [0, 1), got {self.bn_momentum}")
        if self.bn_position not in BN_POSITIONS:
            raise ValueError(
                f"bn_position: must be one of {', '.join(BN_POSITIONS)}, got '{self.bn_position}'"
            )
        if not self.init_scale > 0:
            raise ValueError(f"init_scale: must be > 0, got {self.init_scale}")
        if not 0 <= self.bn_noise <= MAX_BN_NOISE:
            raise ValueError(f"bn_noise: must be in [0, {MAX_BN_NOISE:g}], got {self.bn_noise}")
        if self.norm not in NORMS:
            raise ValueError(f"norm: must be one of {', '.join(NORMS)}, got '{self.norm}'")
        if self.norm != "batch" and not self.bn:
            raise ValueError("norm: the normalization follows the switch, and bn=false has none")
        if self.norm_groups < 1:
            raise ValueError(f"norm_groups: must be >= 1, got {self.norm_groups}")
        if self.bn_noise and not self.bn:
            raise ValueError("bn_noise: noise follows BN, and this model has none (bn=false)")
        if self.bn_impl not in BN_IMPLS:
            raise ValueError(
                f"bn_impl: unknown implementation '{self.bn_impl}' (accepted: fused, keras)"
            )
        backend = keras_backend()
        if backend not in BN_IMPLS[self.bn_impl]:
            raise ValueError(
                f"bn_impl: '{self.bn_impl}' needs the TensorFlow backend, and this one is "
                f"{backend} (use model.bn_impl=keras)"
            )


def layer_settings(bn: bool, bn_bias: bool = False, init_scale: float = 1.0) -> dict:
    """The bias and kernel initializer a block's Conv2D or Dense layer is built with."""
    from keras import initializers

    # Glorot uniform is VarianceScaling(1, fan_avg, uniform); scaling the weights' spread
    # by s scales their variance by s**2.
    kernel = initializers.VarianceScaling(
        scale=init_scale**2, mode="fan_avg", distribution="uniform"
    )
    return {"use_bias": bn_bias or not bn, "kernel_initializer": kernel}


def block(
    x,
    layer,
    activation: str,
    bn: bool,
    bn_impl: str,
    bn_momentum: float,
    bn_position: str = "before",
    bn_noise: float = 0.0,
    norm: str = "batch",
    norm_groups: int = 8,
):
    """Applies `layer`, then BN and the activation (or BN after it), or the activation alone.

    `norm` picks what stands in BN's place: BN, LayerNorm or GroupNorm (both Keras's
    GroupNormalization: one group is LayerNorm over channels and positions, with a scale
    and shift per channel as BN has). With `bn_noise`, it is followed by non-stationary
    noise of that strength (Noisy BN).
    """
    import math

    from keras import layers

    from bnlab.experiment.batchnorm import batch_normalization

    def normalized(x):
        if norm == "batch":
            x = batch_normalization(bn_impl, bn_momentum)(x)
        else:
            groups = 1 if norm == "layer" else math.gcd(int(x.shape[-1]), norm_groups)
            x = layers.GroupNormalization(groups=groups, epsilon=1e-3)(x)
        if bn_noise:
            from bnlab.plugins.noisy_bn import NonStationaryNoise

            x = NonStationaryNoise(bn_noise)(x)
        return x

    x = layer(x)
    if bn and bn_position == "before":
        x = normalized(x)
    x = layers.Activation(activation)(x)
    if bn and bn_position == "after":
        x = normalized(x)
    return x
