"""What BN does inside the network, measured at every evaluation (off by default).

- The 15th, 50th and 85th percentiles of the input to the last hidden layer's
  activation, over a fixed batch of 64 validation images (64 x 64 values for the
  blog's CNN): the figure Ioffe and Szegedy drew to show the distribution that BN
  keeps steady.
- The norm of each layer's gradient on a fixed training batch, keyed by the layer's place
  and kind (`internals/grad_norm/1_conv2d`), the same in every run.
- At the end of training, the accuracy on 256 fixed validation images with BN using each
  training-sized batch's own statistics (training mode), and with its moving statistics
  (inference mode). The moving statistics are restored, so measuring changes nothing.

None of this changes what is trained (`train.internals` is not part of the identity).
"""

from __future__ import annotations

import re

import keras
import numpy as np

from bnlab import metrics
from bnlab.backend import keras_backend

# Validation images the percentiles are computed on. Each evaluation's forward pass over
# them costs as much as its gradient pass; 128 made the internals cost 5.7 % of a job.
PROBE_IMAGES = 64
PERCENTILES = (15, 50, 85)
# Validation images the end-of-run accuracies with batch and moving statistics share.
BATCH_STATS_IMAGES = metrics.BATCH_STATS_IMAGES


def layer_keys(layers: list) -> list[str]:
    """Each weighted layer's name in the metric keys: its place and kind (`1_conv2d`,
    `4_dense`). Keras names a layer by how many of its kind the process built before
    (`conv2d_137` in a sweep worker's tenth model), so its own name would give the same
    layer a different key in every run, and MLflow's charts would compare nothing."""
    return [
        f"{place}_{re.sub(r'(?<!^)(?=[A-Z][a-z])', '_', type(layer).__name__).lower()}"
        for place, layer in enumerate(layers, start=1)
    ]


class Internals:
    """Measures one model's internals on fixed batches; `measure()` returns metric values."""

    def __init__(self, model: keras.Model, x_train, y_train, x_val, y_val, batch_size: int):
        self.model = model
        self.batch_size = batch_size
        self.x_probe = x_val[:PROBE_IMAGES]
        self.x_val, self.y_val = x_val, y_val
        self.x_grad, self.y_grad = x_train[:batch_size], y_train[:batch_size]
        self.probe = keras.Model(model.input, last_hidden_activation(model).input)
        self.layers = [
            layer for layer in model.layers if getattr(layer, "kernel", None) is not None
        ]
        self.layer_keys = layer_keys(self.layers)
        self.has_bn = any("BatchNormalization" in type(layer).__name__ for layer in model.layers)
        self._measure = None
        self._batch_stats = None

    def measure(self) -> dict[str, float]:
        """Percentiles and gradient norms, for one evaluation."""
        if self._measure is None:
            self._measure = _compile_measure(self.model, self.probe, self.layers)
        # The gradient's forward pass runs BN in training mode; the compiled call leaves
        # the moving statistics as they were.
        values, norms = self._measure(self.x_probe, self.x_grad, self.y_grad)
        low, middle, high = np.percentile(keras.ops.convert_to_numpy(values), PERCENTILES)
        found = {
            metrics.PREACT_P15: float(low),
            metrics.PREACT_P50: float(middle),
            metrics.PREACT_P85: float(high),
        }
        norms = keras.ops.convert_to_numpy(norms)
        for name, norm in zip(self.layer_keys, norms, strict=True):
            found[f"{metrics.GRAD_NORM_PREFIX}{name}"] = float(norm)
        return found

    def at_end(self) -> dict[str, float]:
        """Validation accuracy with batch statistics and with moving ones, on the same fixed
        validation images, once training ended (BN models)."""
        if not self.has_bn:
            return {}
        return self._batch_stats_accuracy()

    def _batch_stats_accuracy(self) -> dict[str, float]:
        """Accuracy on the fixed validation images with BN normalising each training-sized
        batch by its own statistics, and with its moving statistics (inference mode)."""
        if self._batch_stats is None:
            self._batch_stats = _compile_batch_stats(self.model)
        x, y = self.x_val[:BATCH_STATS_IMAGES], self.y_val[:BATCH_STATS_IMAGES]
        saved = self._save()
        full = len(x) // self.batch_size * self.batch_size
        shape = (-1, self.batch_size, *x.shape[1:])
        correct = int(
            self._batch_stats(x[:full].reshape(shape), y[:full].reshape(-1, self.batch_size))
        )
        if full < len(x):  # the last, smaller batch, as training would see it
            correct += int(self._batch_stats(x[full:][None], y[full:][None]))
        self._restore(saved)
        moving = keras.ops.convert_to_numpy(self.model(x, training=False)).argmax(axis=-1)
        return {
            metrics.VAL_ACCURACY_BATCH_STATS: correct / len(x),
            metrics.VAL_ACCURACY_MOVING_STATS: float((moving == y).mean()),
        }

    def _save(self) -> list[np.ndarray]:
        """The moving statistics, which a forward pass in training mode updates."""
        return [keras.ops.convert_to_numpy(v.value) for v in self.model.non_trainable_variables]

    def _restore(self, saved: list[np.ndarray]) -> None:
        for variable, value in zip(self.model.non_trainable_variables, saved, strict=True):
            variable.assign(value)


def _compile_batch_stats(model: keras.Model):
    """A function of batches (B, n, ...) and labels (B, n): how many the model classifies
    right with BN in training mode, one batch at a time."""
    if keras_backend() == "jax":
        import jax
        import jax.numpy as jnp

        @jax.jit
        def correct(trainable, frozen, x_batches, y_batches):
            def one(batch):
                x, y = batch
                outputs, _ = model.stateless_call(trainable, frozen, x, training=True)
                return jnp.sum(jnp.argmax(outputs, axis=-1) == y)

            return jnp.sum(jax.lax.map(one, (x_batches, y_batches)))

        return lambda x, y: correct(
            [v.value for v in model.trainable_variables],
            [v.value for v in model.non_trainable_variables],
            x,
            y,
        )

    # TensorFlow: eagerly, batch by batch. It runs once per job, and tracing a compiled
    # loop would cost more than the loop itself.
    def correct_eagerly(x_batches, y_batches):
        total = 0
        for x, y in zip(x_batches, y_batches, strict=True):
            outputs = keras.ops.convert_to_numpy(model(x, training=True))
            total += int((outputs.argmax(axis=-1) == y).sum())
        return total

    return correct_eagerly


def _compile_measure(model: keras.Model, probe: keras.Model, layers: list):
    """One compiled function of (probe images, x, y): the probed values in inference mode
    and the gradient norm of each layer's kernel on (x, y): one trace, one call each time.
    The moving statistics are left as they were (JAX: a stateless call; TensorFlow: saved
    and restored inside the graph, with no round trip through the host)."""
    loss = keras.losses.SparseCategoricalCrossentropy()
    if keras_backend() == "jax":
        import jax
        import jax.numpy as jnp

        kernels = {id(layer.kernel): index for index, layer in enumerate(layers)}
        positions = [kernels.get(id(v)) for v in model.trainable_variables]

        @jax.jit
        def norms(trainable, frozen, x, y):
            def objective(values):
                outputs, _ = model.stateless_call(values, frozen, x, training=True)
                return loss(y, outputs)

            gradients = jax.grad(objective)(trainable)
            found = [None] * len(layers)
            for position, gradient in zip(positions, gradients, strict=True):
                if position is not None:
                    found[position] = jnp.linalg.norm(gradient)
            return jnp.stack(found)

        def measure_jax(images, x, y):
            values = probe(images, training=False)
            trainable = [v.value for v in model.trainable_variables]
            frozen = [v.value for v in model.non_trainable_variables]
            return values, norms(trainable, frozen, x, y)

        return measure_jax
    import tensorflow as tf

    # Without AutoGraph: the Keras calls need no conversion, and tracing takes less.
    @tf.function(reduce_retracing=True, autograph=False)
    def measure_tf(images, x, y):
        values = probe(images, training=False)
        saved = [tf.identity(v.value) for v in model.non_trainable_variables]
        kernels = [layer.kernel.value for layer in layers]
        with tf.GradientTape() as tape:
            value = loss(y, model(x, training=True))
        norms = tf.stack([tf.norm(g) for g in tape.gradient(value, kernels)])
        with tf.control_dependencies([norms]):
            restored = [
                v.assign(kept) for v, kept in zip(model.non_trainable_variables, saved, strict=True)
            ]
        with tf.control_dependencies(restored):
            return tf.identity(values), tf.identity(norms)

    return measure_tf


def last_hidden_activation(model: keras.Model) -> keras.layers.Layer:
    """The last Activation layer that is not the output's softmax."""
    found = [
        layer
        for layer in model.layers
        if isinstance(layer, keras.layers.Activation)
        and layer.get_config()["activation"] != "softmax"
    ]
    if not found:
        raise ValueError("train.internals: the model has no hidden Activation layer to probe")
    return found[-1]
