"""What a run is, checked before any work: schemas, validation, keys, the plug-in registry."""

from bnlab.config.errors import USER_ERRORS, ConfigError, DataError
from bnlab.config.registry import CONF_DIR, CONFIG_PATH, register_configs, schema_of  # noqa: F401
from bnlab.config.schemas import (
    ClaimConfig,
    CompareConfig,
    Config,
    DataConfig,
    ModelConfig,
    OptimizerConfig,
    SearchConfig,
    TimingConfig,
    TrackingConfig,
    TrainConfig,
)
from bnlab.config.validation import (
    MAX_SEED,
    check_shorthands,
    effective_learning_rate,
    group_values,
    target_class,
    typed,
    validate,
)

__all__ = [
    "CONFIG_PATH",
    "CONF_DIR",
    "USER_ERRORS",
    "ClaimConfig",
    "CompareConfig",
    "Config",
    "ConfigError",
    "DataConfig",
    "DataError",
    "MAX_SEED",
    "ModelConfig",
    "OptimizerConfig",
    "SearchConfig",
    "TimingConfig",
    "TrackingConfig",
    "TrainConfig",
    "check_shorthands",
    "effective_learning_rate",
    "group_values",
    "target_class",
    "typed",
    "validate",
    "schema_of",
]
