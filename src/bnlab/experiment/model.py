"""The model and optimizer of a job, built from their configs' `_target_`."""

from __future__ import annotations

import keras
from hydra.utils import instantiate

from bnlab.config import ModelConfig, OptimizerConfig, target_class
from bnlab.experiment.data import Splits


def build_model(config: ModelConfig, data: Splits) -> keras.Model:
    """Calls the model's `_target_` with its settings and the data's input shape and
    number of classes."""
    return instantiate(config, input_shape=data.input_shape, num_classes=data.num_classes)


def build_optimizer(config: OptimizerConfig) -> keras.optimizers.Optimizer:
    """Instantiates the optimizer's `_target_` with the arguments the config sets."""
    optimizer_class = target_class(config._target_, config.arguments(), "optimizer")
    return optimizer_class(**config.arguments())
