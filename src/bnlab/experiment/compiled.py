"""Models compiled for training, kept for the next job of the same graph in this process.

Tracing a model's training and evaluation functions costs seconds (about 3 of a tiny
CNN job's 5), while a job of a sweep often differs from the worker's last one only in
its seed or learning rate. Such a job gets the kept model back with every variable set
to what a fresh build with its seed gives (weights, BN statistics, random-seed states),
its optimizer's state as it was before any step, and its own learning rate: the traced
functions are reused and the arithmetic is that of a fresh model (tested).

The kept models are a per-process cache, like `functools.lru_cache`: nothing reads them
but `compiled_model`, and a job's results do not depend on whether it got one.
"""

from __future__ import annotations

import dataclasses
from collections import OrderedDict
from dataclasses import dataclass

import keras
import numpy as np

from bnlab.backend import keras_backend
from bnlab.config import Config, effective_learning_rate
from bnlab.experiment.data import Splits
from bnlab.experiment.model import build_model, build_optimizer

# Models kept per process, least recently used dropped first: a sweep's worker sees a
# few graphs (BN and plain, two activations), and each small model holds little memory.
MAX_KEPT = 4


def compile_model(config: Config, data: Splits, batches_per_call: int) -> keras.Model:
    """Builds and compiles the model of `config` for `data`, seeded for reproducibility.

    Args:
        config: The experiment config.
        data: The splits, which give the model its input shape and class count.
        batches_per_call: Keras's steps_per_execution.
    """
    keras.utils.set_random_seed(config.train.seed)
    model = build_model(config.model, data)
    model.compile(
        optimizer=build_optimizer(
            dataclasses.replace(config.optimizer, learning_rate=effective_learning_rate(config))
        ),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
        steps_per_execution=batches_per_call,
    )
    return model


@dataclass
class _Kept:
    model: keras.Model
    # The optimizer's variables before its first step (iterations, slots, learning rate).
    optimizer_start: list[np.ndarray]


_kept: OrderedDict[str, _Kept] = OrderedDict()


def graph_key(config: Config, data: Splits, batches_per_call: int) -> str:
    """What decides the traced functions: everything but the seed and the learning rate."""
    optimizer = dataclasses.replace(config.optimizer, learning_rate=0.0)
    return repr(
        (
            keras_backend(),
            config.model,
            optimizer,
            data.input_shape,
            data.num_classes,
            str(data.x_train.dtype),
            config.train.batch_size,
            batches_per_call,
        )
    )


def compiled_model(config: Config, data: Splits, batches_per_call: int) -> keras.Model:
    """The model of `config`, compiled, in the state a fresh `compile_model` gives.

    Args:
        config: The experiment config.
        data: The splits the model trains on.
        batches_per_call: Keras's steps_per_execution.
    """
    key = graph_key(config, data, batches_per_call)
    kept = _kept.pop(key, None)
    if kept is not None:
        keras.utils.set_random_seed(config.train.seed)
        fresh = build_model(config.model, data)
        if _same_variables(kept.model.variables, fresh.variables):
            _reset(kept, fresh, effective_learning_rate(config))
            _kept[key] = kept
            return kept.model
    model = compile_model(config, data, batches_per_call)
    if _keepable(model):
        model.optimizer.build(model.trainable_variables)
        _kept[key] = _Kept(model, [np.array(v) for v in model.optimizer.variables])
        while len(_kept) > MAX_KEPT:
            _kept.popitem(last=False)
    return model


def _keepable(model: keras.Model) -> bool:
    """A model built with its variables, whose optimizer's learning rate is a variable (a
    schedule has nothing to set per job; a plug-in's model that creates its variables at
    its first call cannot be given a fresh model's)."""
    learning_rate = model.optimizer.learning_rate
    return (
        model.built
        and bool(model.trainable_variables)
        and isinstance(learning_rate, keras.Variable)
    )


def _same_variables(kept: list, fresh: list) -> bool:
    return len(kept) == len(fresh) and all(
        tuple(a.shape) == tuple(b.shape) and a.dtype == b.dtype
        for a, b in zip(kept, fresh, strict=True)
    )


def _reset(kept: _Kept, fresh: keras.Model, learning_rate: float) -> None:
    """Gives the kept model `fresh`'s state, its optimizer's first state and `learning_rate`."""
    for variable, value in zip(kept.model.variables, fresh.variables, strict=True):
        variable.assign(value.numpy())
    optimizer = kept.model.optimizer
    for variable, value in zip(optimizer.variables, kept.optimizer_start, strict=True):
        variable.assign(value)
    optimizer.learning_rate.assign(learning_rate)
