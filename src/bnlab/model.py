"""The model and optimizer of a job, built from their configs' `_target_`."""

from __future__ import annotations

import keras
from hydra.utils import instantiate

from bnlab.config import ModelConfig, OptimizerConfig, target_class
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
    target_class(config._target_, config.arguments(), "optimizer")


def build_optimizer(config: OptimizerConfig) -> keras.optimizers.Optimizer:
    """Instantiates the optimizer's `_target_` with the arguments the config sets."""
    optimizer_class = target_class(config._target_, config.arguments(), "optimizer")
    return optimizer_class(**config.arguments())
