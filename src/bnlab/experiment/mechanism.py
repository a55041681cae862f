"""Why BN helps, measured as Santurkar et al. (2018) measured it (off by default).

At every evaluation, on a fixed training batch of the run's batch size, at the current
weights w with gradient g = dL/dw (BN in training mode, its moving statistics untouched):

- Internal covariate shift, their Definition 2.1: for each layer with a kernel, the
  gradient of its kernel G before and G' after the layers before it take one step
  (w - eta * g on those layers only, eta = ICS_STEP); logged as the mean over layers of
  ||G - G'|| (`mechanism/ics_l2`) and of the cosine of their angle (`mechanism/ics_cosine`).
- The loss landscape along the gradient, their section 3.1: at each step size eta in
  STEPS, the loss L(w - eta * g) and the gradient there. Logged: the range of those losses
  (`mechanism/loss_variation`), the largest ||g - grad L(w - eta * g)|| (gradient
  predictiveness, `mechanism/gradient_change`: smaller is more predictive) and the largest
  ||g - grad L(w - eta * g)|| / ||eta * g|| (effective beta-smoothness,
  `mechanism/beta_smoothness`).

- How much the layer inputs' distribution moves, their section 2.1: the mean and spread
  per channel of the input to the last hidden activation on the batch, in training mode
  (Noisy BN's noise included), and their change since the previous evaluation, averaged
  over channels (`mechanism/input_shift`, from the second evaluation on).

The steps are plain gradient steps whatever the run's optimizer: they probe the
landscape the optimizer moves on, as the paper's do. Nothing measured changes what is
trained (`train.mechanism` is not part of the identity).
"""

from __future__ import annotations

import keras
import numpy as np

from bnlab import metrics
from bnlab.backend import keras_backend

# Step sizes along the gradient (the range of the paper's VGG landscapes, 0.05 to 0.4).
STEPS = (0.05, 0.1, 0.2, 0.4)
# The step the earlier layers take for the internal covariate shift.
ICS_STEP = 0.1


class Mechanism:
    """Measures one model's landscape and covariate shift on a fixed training batch."""

    def __init__(self, model: keras.Model, x_train, y_train, batch_size: int) -> None:
        self.model = model
        self.x, self.y = x_train[:batch_size], y_train[:batch_size]
        trainable = model.trainable_variables
        kernels = {
            id(layer.kernel) for layer in model.layers if getattr(layer, "kernel", None) is not None
        }
        # Each kernel's position among the trainable variables, in layer order.
        self.kernels = [index for index, v in enumerate(trainable) if id(v) in kernels]
        self._gradient = _gradient_function(model)
        from bnlab.experiment.internals import last_hidden_activation

        self.probe = keras.Model(model.input, last_hidden_activation(model).input)
        self._moments: tuple[np.ndarray, np.ndarray] | None = None

    def measure(self) -> dict[str, float]:
        """The measures at the current weights."""
        weights = [keras.ops.convert_to_numpy(v.value) for v in self.model.trainable_variables]
        loss, gradient = self._gradient(weights, self.x, self.y)
        found = _ics(self, weights, gradient) | _landscape(self, weights, loss, gradient)
        return found | self._input_shift()

    def _input_shift(self) -> dict[str, float]:
        """The change of the probed inputs' per-channel mean and spread since last time."""
        frozen = [keras.ops.convert_to_numpy(v.value) for v in self.model.non_trainable_variables]
        try:
            values = keras.ops.convert_to_numpy(self.probe(self.x, training=True))
        finally:
            for variable, value in zip(self.model.non_trainable_variables, frozen, strict=True):
                variable.assign(value)
        flat = values.reshape(-1, values.shape[-1])
        moments = (flat.mean(axis=0), flat.std(axis=0))
        previous, self._moments = self._moments, moments
        if previous is None:
            return {}
        shift = np.abs(moments[0] - previous[0]) + np.abs(moments[1] - previous[1])
        return {metrics.MECHANISM_INPUT_SHIFT: float(shift.mean())}


def _landscape(mechanism: Mechanism, weights, loss: float, gradient) -> dict[str, float]:
    norm = _norm(gradient)
    losses, changes, smoothness = [loss], [], []
    for eta in STEPS:
        moved = [w - eta * g for w, g in zip(weights, gradient, strict=True)]
        there, gradient_there = mechanism._gradient(moved, mechanism.x, mechanism.y)
        change = _norm([a - b for a, b in zip(gradient, gradient_there, strict=True)])
        losses.append(there)
        changes.append(change)
        smoothness.append(change / (eta * norm) if norm > 0 else 0.0)
    return {
        metrics.MECHANISM_LOSS_VARIATION: float(max(losses) - min(losses)),
        metrics.MECHANISM_GRADIENT_CHANGE: float(max(changes)),
        metrics.MECHANISM_BETA_SMOOTHNESS: float(max(smoothness)),
    }


def _ics(mechanism: Mechanism, weights, gradient) -> dict[str, float]:
    distances, cosines = [], []
    for position in mechanism.kernels[1:]:
        # The layers before this kernel take their step; this layer and the later ones not.
        moved = [
            w - ICS_STEP * g if index < position else w
            for index, (w, g) in enumerate(zip(weights, gradient, strict=True))
        ]
        _, after = mechanism._gradient(moved, mechanism.x, mechanism.y)
        before, later = gradient[position].ravel(), after[position].ravel()
        distances.append(float(np.linalg.norm(before - later)))
        scale = float(np.linalg.norm(before) * np.linalg.norm(later))
        cosines.append(float(before @ later) / scale if scale > 0 else 1.0)
    if not distances:
        return {}
    return {
        metrics.MECHANISM_ICS_L2: float(np.mean(distances)),
        metrics.MECHANISM_ICS_COSINE: float(np.mean(cosines)),
    }


def _norm(arrays) -> float:
    return float(np.sqrt(sum(float(np.sum(np.square(a))) for a in arrays)))


def _gradient_function(model: keras.Model):
    """A function of (weights, x, y) -> (loss, gradients as numpy arrays), with BN in
    training mode and the model's variables (weights, moving statistics) left as they were."""
    loss = keras.losses.SparseCategoricalCrossentropy()
    if keras_backend() == "jax":
        import jax

        @jax.jit
        def value_and_grad(trainable, frozen, x, y):
            def objective(values):
                outputs, _ = model.stateless_call(values, frozen, x, training=True)
                return loss(y, outputs)

            return jax.value_and_grad(objective)(trainable)

        def gradient_jax(weights, x, y):
            frozen = [v.value for v in model.non_trainable_variables]
            value, grads = value_and_grad(weights, frozen, x, y)
            return float(value), [np.asarray(g) for g in grads]

        return gradient_jax
    import tensorflow as tf

    def gradient_tf(weights, x, y):
        variables = model.trainable_variables
        kept = [keras.ops.convert_to_numpy(v.value) for v in variables]
        frozen = [keras.ops.convert_to_numpy(v.value) for v in model.non_trainable_variables]
        for variable, value in zip(variables, weights, strict=True):
            variable.assign(value)
        try:
            with tf.GradientTape() as tape:
                value = loss(y, model(x, training=True))
            grads = tape.gradient(value, [v.value for v in variables])
            return float(value), [g.numpy() for g in grads]
        finally:
            for variable, value in zip(variables, kept, strict=True):
                variable.assign(value)
            for variable, value in zip(model.non_trainable_variables, frozen, strict=True):
                variable.assign(value)

    return gradient_tf
