"""Typed schemas for every config group, registered in Hydra's ConfigStore.

Model, data and optimizer are plug-ins: each option is a YAML file in its group with a
`_target_` (the function or class `hydra.utils.instantiate` calls) over a dataclass
schema that subclasses the group's base (`ModelConfig`, `DataConfig`). The schema lives
beside its `_target_`, in the same module; `register_configs` finds it from the YAML's
`_target_` and stores it as `<option>_schema`, which the YAML names in its defaults. So
Hydra checks types and unknown keys while it composes, and `validate` adds the range
checks that types cannot express, in one place, before any work starts.
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import math
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from hydra.core.config_store import ConfigStore
from hydra.utils import get_class
from omegaconf import MISSING, DictConfig, OmegaConf

from bnlab.keys import SHORTHANDS, ConfigError, shorthand_disagreement
from bnlab.store_uri import check_tracking_uri

# The project's config folder, found once here for every command that composes it.
CONF_DIR = Path(__file__).resolve().parents[2] / "conf"
# Seeds feed numpy's and Keras's generators, which take 32-bit unsigned values.
MAX_SEED = 2**32 - 1
# Experiment names become folder names and URL parts; keep them short and plain.
MAX_EXPERIMENT_NAME = 200
SWEEP_ID_RESOLVER = "bnlab_sweep_id"


@dataclass
class ModelConfig:
    """Base of every model option. Its `_target_` is called with the option's fields and
    with `input_shape` and `num_classes`, which the data supply, and returns a
    keras.Model. An option's range checks go in its `check`."""

    # The function that builds the model, e.g. bnlab.plugins.cnn.build_cnn.
    _target_: str = MISSING

    def check(self) -> None:
        """Raises ValueError('field: message') for a value out of range."""


@dataclass
class DataConfig:
    """Base of every data option. Its `_target_` is called with the option's fields and
    returns `bnlab.data.Splits`, which tell the model its input shape and class count."""

    # The function that loads and splits the data, e.g. bnlab.plugins.mnist.load_mnist_small.
    _target_: str = MISSING
    # Share of the training pool held out for validation curves.
    val_fraction: float = 0.1
    # Share of the pool held out for the final test (where the data have no test set).
    test_fraction: float = 0.1
    # Seed of the stratified split, fixed apart from the training seed so splits match.
    split_seed: int = 0
    # Keep only the first N training images (quick looks and tests); null keeps all.
    limit: int | None = None

    def check(self) -> None:
        """Raises ValueError('field: message') for a value out of range."""
        if not 0 < self.val_fraction < 0.5:
            raise ValueError(f"val_fraction: must be in (0, 0.5), got {self.val_fraction}")
        if not 0 < self.test_fraction < 0.5:
            raise ValueError(f"test_fraction: must be in (0, 0.5), got {self.test_fraction}")

    def train_images(self) -> int | None:
        """The fewest images the training split can hold before `limit`, when known
        without reading the data, so a batch larger than it is refused before any work."""
        return None


@dataclass
class OptimizerConfig:
    """Any Keras optimizer: `_target_` names its class, and the fields left null keep
    Keras's defaults. A new Keras optimizer is one YAML in conf/optimizer/."""

    # The optimizer class, e.g. keras.optimizers.Adam.
    _target_: str = "keras.optimizers.Adam"
    # Learning rate, the nuisance parameter every comparison sweeps.
    learning_rate: float = 0.001
    # The optional arguments of Keras's optimizers; null leaves an argument out.
    momentum: float | None = None
    nesterov: bool | None = None
    rho: float | None = None
    beta_1: float | None = None
    beta_2: float | None = None
    epsilon: float | None = None
    weight_decay: float | None = None
    amsgrad: bool | None = None
    clipnorm: float | None = None
    global_clipnorm: float | None = None

    def check(self) -> None:
        """Raises ValueError('field: message') for a value out of range."""
        if not self.learning_rate > 0:
            raise ValueError(f"learning_rate: must be a number > 0, got {self.learning_rate}")
        for name in ("momentum", "rho", "beta_1", "beta_2"):
            value = getattr(self, name)
            if value is not None and not 0 <= value < 1:
                raise ValueError(f"{name}: must be in [0, 1), got {value}")
        for name in ("epsilon", "weight_decay", "clipnorm", "global_clipnorm"):
            value = getattr(self, name)
            if value is not None and value < 0:
                raise ValueError(f"{name}: must be >= 0, got {value}")

    def arguments(self) -> dict[str, Any]:
        """The arguments given to `_target_`: the fields that are set."""
        return {
            key: value
            for key, value in dataclasses.asdict(self).items()
            if value is not None and key != "_target_"
        }


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
    # Also log what BN does inside the network at every evaluation (bnlab/internals.py):
    # activation percentiles, gradient norms, accuracy with batch statistics. Off by
    # default; the claims suite turns it on. It changes nothing that is trained.
    internals: bool = False


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
    # system/* metrics (MLflow's names), written through the run's writer, this often.
    system_metrics: bool = True
    system_metrics_seconds: float = 5.0
    # A RUNNING run whose last stamp is older than this is dead: the next launch
    # closes it as KILLED and trains its cell again.
    stale_after_seconds: float = 60.0
    # Where a job keeps its results when the store stops taking writes (relative to
    # the folder the command runs from); the next launch from there records them.
    spool_dir: str = "unsent"


@dataclass
class CompareConfig:
    # The true/false key whose two sides the report compares (a shorthand or a group key).
    variant: str = "bn"
    # The two keys that make a cell of the report's grid: panel rows, then columns; each
    # side is also compared at its own best value of the second (its best learning rate).
    cell: list[str] = field(default_factory=lambda: ["activation", "lr"])
    # How the page names the variant's true side, then its false side.
    labels: list[str] = field(default_factory=lambda: ["BN", "no BN"])


@dataclass
class TimingConfig:
    # A swept key whose values are timed side by side in one process (`bnlab.step_timing`):
    # runs trained at other times, under other loads, cannot compare step times. Empty: the
    # claim times nothing.
    key: str = ""
    # Steps per timed burst; the variants alternate, burst by burst, for `rounds` rounds.
    steps: int = 50
    rounds: int = 7


@dataclass
class ClaimConfig:
    # Set by a claim's saved study (conf/experiment/claims/): which claim of the article
    # its runs test, in the article's words, and the rule (bnlab/claims.py) that counts it.
    id: str | None = None
    says: str = ""
    rule: str = ""
    # Where the claim comes in the suite: a study whose runs another reuses goes first.
    order: int = 0
    # A claim about step time also times its variants side by side.
    timing: TimingConfig = field(default_factory=TimingConfig)


@dataclass
class SearchConfig:
    # Filled by the Optuna sweeper for each trial, so the job can report to its study.
    study: str | None = None
    # Optuna storage URL of that study.
    storage: str | None = None
    # Trial number: the job reopens its trial through the storage by this number.
    trial: int | None = None


@dataclass
class Config:
    # Shorthands users sweep; the groups read them by interpolation (keys.SHORTHANDS).
    # A model without one of them leaves it unused.
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
    # What the report compares; recorded with each run, never part of its identity.
    compare: CompareConfig = field(default_factory=CompareConfig)
    # The claim a claims-suite study tests; recorded with each run, never part of its identity.
    claim: ClaimConfig = field(default_factory=ClaimConfig)

    def __post_init__(self) -> None:
        _check_ranges(self)
        # The shorthands mirror what is trained, so params and run names never
        # disagree with the groups (e.g. `optimizer.learning_rate=0.05` sets lr=0.05).
        for shorthand, value in group_values(self).items():
            setattr(self, shorthand, value)


def _fail(key: str, message: str) -> None:
    shorthand_of = {key: shorthand for shorthand, key in SHORTHANDS.items()}
    raise ConfigError(f"{shorthand_of.get(key, key)}: {message}")


def _groups(config: Config) -> list[tuple[str, Any]]:
    return [
        (group.name, getattr(config, group.name))
        for group in dataclasses.fields(config)
        if dataclasses.is_dataclass(getattr(config, group.name))
    ]


def _check_finite(config: Config) -> None:
    """Every float of every schema is a finite number: inf, -inf, nan and literals that
    overflow (1e400 reads as inf) are refused with the key."""
    for prefix, node in [("", config)] + [(f"{name}.", node) for name, node in _groups(config)]:
        for setting in dataclasses.fields(node):
            value = getattr(node, setting.name)
            if isinstance(value, float) and not math.isfinite(value):
                _fail(f"{prefix}{setting.name}", f"must be a finite number, got {value}")


def _value_of(config: Config, key: str) -> Any:
    """The value at a dotted key of `config`, or _MISSING_KEY when it holds no such key."""
    node: Any = config
    for part in key.split("."):
        if not part or not hasattr(node, part):
            return _MISSING_KEY
        node = getattr(node, part)
    return node


def _check_compare(config: Config) -> None:
    """The compared keys exist, the variant is true/false, and two labels name its sides."""
    compare = config.compare
    if not isinstance(_value_of(config, compare.variant), bool):
        raise ConfigError(f"compare.variant: '{compare.variant}' is not a true/false key")
    if len(compare.cell) != 2:
        raise ConfigError(f"compare.cell: names two keys (rows, columns), got {compare.cell}")
    for key in compare.cell:
        if _value_of(config, key) is _MISSING_KEY:
            raise ConfigError(f"compare.cell: '{key}' is not a key of this config")
    if len(compare.labels) != 2:
        raise ConfigError(f"compare.labels: names the two sides, got {compare.labels}")


# Marks a compared key that the config does not hold.
_MISSING_KEY = object()


def _check_timing(config: Config) -> None:
    """A claim's side-by-side timing names a key of this config, and times enough steps."""
    timing = config.claim.timing
    if not timing.key:
        return
    if _value_of(config, timing.key) is _MISSING_KEY:
        raise ConfigError(f"claim.timing.key: '{timing.key}' is not a key of this config")
    if timing.steps < 1:
        _fail("claim.timing.steps", f"must be >= 1, got {timing.steps}")
    if timing.rounds < 2:
        _fail("claim.timing.rounds", f"must be >= 2 (rounds are compared), got {timing.rounds}")


def _check_ranges(config: Config) -> None:
    _check_finite(config)
    # Each plug-in checks its own fields; the message gains the group's name.
    for group in ("model", "optimizer", "data"):
        try:
            getattr(config, group).check()
        except ValueError as error:
            key, _, message = str(error).partition(": ")
            _fail(f"{group}.{key}", message)
    _check_compare(config)
    _check_timing(config)
    data, train = config.data, config.train
    if not 0 <= train.seed <= MAX_SEED:
        _fail("seed", f"must be in [0, {MAX_SEED}], got {train.seed}")
    if data.limit is not None and data.limit < train.batch_size:
        _fail("data.limit", f"must be >= train.batch_size ({train.batch_size})")
    bound = data.train_images()
    if bound is not None and train.batch_size > bound:
        _fail(
            "train.batch_size",
            f"must be at most the training split (about {bound} images), got {train.batch_size}",
        )
    for key in ("steps", "batch_size", "eval_every", "steps_per_execution"):
        if getattr(train, key) < 1:
            _fail(f"train.{key}", f"must be >= 1, got {getattr(train, key)}")
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


def target_class(target: str, arguments: Iterable[str], key: str, base: type | None = None) -> type:
    """The class a `_target_` names, after checking that it takes every argument set.

    Used for the optimizer (built in the job, where Keras is loaded) and for Optuna's
    sampler and pruner (built by the sweeper).

    Raises:
        ConfigError: No such class, not a subclass of `base`, or it takes no such
            argument; the message names `key` and the argument.
    """
    try:
        found = get_class(target)
    except Exception as error:
        raise ConfigError(f"{key}._target_: no class {target}") from error
    if base is not None and not (isinstance(found, type) and issubclass(found, base)):
        raise ConfigError(f"{key}._target_: {target} is not an {base.__module__}.{base.__name__}")
    accepted = inspect.signature(found).parameters
    for argument in arguments:
        if argument not in accepted:
            raise ConfigError(f"{key}.{argument}: {target} takes no {argument}")
    return found


def group_values(config: Config) -> dict[str, Any]:
    """Each shorthand with the value of the group key it sets, for those the groups hold
    (a model without `activation` leaves that shorthand out)."""
    values = {}
    for shorthand, key in SHORTHANDS.items():
        group, name = key.split(".")
        node = getattr(config, group)
        if hasattr(node, name):
            values[shorthand] = getattr(node, name)
    return values


def _new_sweep_id() -> str:
    return uuid.uuid4().hex[:12]


# The plug-in groups and the base every option's schema subclasses.
PLUGIN_GROUPS = {"model": ModelConfig, "data": DataConfig}


def schema_of(target: str, base: type) -> type:
    """The dataclass schema of a plug-in: the subclass of `base`, in the module of
    `target`, whose `_target_` is `target`.

    Raises:
        ConfigError: No such module or schema; the message names the target.
    """
    module_name = target.rpartition(".")[0]
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        raise ConfigError(f"_target_: cannot import {module_name} ({error})") from error
    for value in vars(module).values():
        if (
            isinstance(value, type)
            and dataclasses.is_dataclass(value)
            and issubclass(value, base)
            and value is not base
            and getattr(value, "_target_", None) == target
        ):
            return value
    raise ConfigError(
        f"_target_: {module_name} has no dataclass subclassing {base.__name__} "
        f"with _target_ = '{target}'"
    )


def register_plugins(conf_dir: Path = CONF_DIR) -> None:
    """Stores the schema of every plug-in option in `conf_dir` as `<group>/<option>_schema`.

    The option's YAML names its `_target_`; its module holds the schema and is imported
    here, so a plug-in module keeps heavy imports (Keras) inside its functions.
    """
    store = ConfigStore.instance()
    for group, base in PLUGIN_GROUPS.items():
        for path in sorted((conf_dir / group).glob("*.yaml")):
            target = (yaml.safe_load(path.read_text()) or {}).get("_target_")
            if target:
                store.store(group=group, name=f"{path.stem}_schema", node=schema_of(target, base))


def register_configs() -> None:
    """Registers every schema so YAML files can start from `base_<group>` or
    `<option>_schema`."""
    # Cached like Hydra's ${now:}: Hydra copies the multirun's resolved values into
    # each job's config, wherever that job runs, so all jobs see one sweep id.
    if not OmegaConf.has_resolver(SWEEP_ID_RESOLVER):
        OmegaConf.register_new_resolver(SWEEP_ID_RESOLVER, _new_sweep_id, use_cache=True)
    store = ConfigStore.instance()
    store.store(name="base_config", node=Config)
    store.store(group="optimizer", name="base_optimizer", node=OptimizerConfig)
    store.store(group="train", name="base_train", node=TrainConfig)
    store.store(group="tracking", name="base_tracking", node=TrackingConfig)
    register_plugins()


def check_shorthands(overrides: list[str]) -> None:
    """Refuses a shorthand and its group key set to different values.

    Raises:
        ConfigError: The two disagree; the message names both keys.
    """
    message = shorthand_disagreement(overrides)
    if message:
        raise ConfigError(message)


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
