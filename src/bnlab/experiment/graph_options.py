"""TensorFlow graph options a job needs to run every model it accepts.

TensorFlow's graph optimizer (grappler's "remapper") fuses a fused BatchNorm with the
activation after it. On the CPU its oneDNN kernel implements that fusion for relu only:
with tanh, elu, selu, gelu, swish or softplus after BN, evaluation stops with
"UnimplementedError: Fusion is not implemented: [FusedBatchNorm,Tanh]". For those
activations the remapper is switched off; it only fuses ops, so the arithmetic, and
therefore what a run trains, is the same either way.
"""

from __future__ import annotations

from typing import Any

from bnlab.backend import keras_backend

# Activations whose fusion with TensorFlow's fused BatchNorm the CPU kernel implements
# (sigmoid is never fused, so it needs nothing either).
FUSABLE = ("relu", "sigmoid")


def apply(model: Any) -> None:
    """Switches the remapper off for a fused-BN model whose activation it cannot fuse, and
    back on for any other: one process may build several models (a worker's next job, the
    variants timed side by side). A function takes the setting when it first runs.

    Args:
        model: The model's config; a plug-in without `bn`, `bn_impl` or `activation` has
            no fused BN to worry about.
    """
    if keras_backend() != "tensorflow":
        return
    import tensorflow as tf

    bn, activation = getattr(model, "bn", False), getattr(model, "activation", None)
    unfusable = bn and getattr(model, "bn_impl", None) == "fused" and activation not in FUSABLE
    tf.config.optimizer.set_experimental_options({"remapping": not unfusable})
