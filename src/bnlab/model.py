"""The model and optimizer of a job, built from their configs' `_target_`."""

from __future__ import annotations

import inspect

import keras
from hydra.utils import get_class, instantiate

from bnlab.config import ConfigError, ModelConfig, OptimizerConfig
from bnlab.data import Splits


def build_model(config: ModelConfig, data: Splits) -> keras.Model:
    """Calls the model's `_target_` with its settings and the data's input shape and
    number of classes."""
    return instantiate(config, input_shape=data.input_shape, num_classes=data.num_classes)


def check_optimizer(config: OptimizerConfig) -> None:
    """Refuses an argument the optimizer's class does not take, before any training.

    Raises:
        ConfigError: No such class, or it takes no such argument; the message names the key.
    """
    try:
        optimizer_class = get_class(config._target_)
    except Exception as error:
        raise ConfigError(f"optimizer._target_: no optimizer class {config._target_}") from error
    accepted = inspect.signature(optimizer_class).parameters
    for key in config.arguments():
        if key not in accepted:
            raise ConfigError(f"optimizer.{key}: {config._target_} takes no {key}")


def build_optimizer(config: OptimizerConfig) -> keras.optimizers.Optimizer:
    """Instantiates the optimizer's `_target_` with the arguments the config sets."""
    check_optimizer(config)
    return get_class(config._target_)(**config.arguments())
