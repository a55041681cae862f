"""The one validation point: a composed config becomes a checked `Config`, or one error line.

Hydra checks types and unknown keys of the fixed groups while it composes; the selected
plug-ins' schemas (`registry.schema_of`) are applied here, then the range checks that
types cannot express, before any work starts.
"""

from __future__ import annotations

import dataclasses
import inspect
import math
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, NoReturn

from hydra.utils import get_class
from omegaconf import DictConfig, OmegaConf, open_dict
from omegaconf.errors import OmegaConfBaseException

from bnlab import backend, names
from bnlab.config.errors import ConfigError, fail
from bnlab.config.keys import SHORTHANDS, shorthand_disagreement
from bnlab.config.store_uri import check_tracking_uri

if TYPE_CHECKING:
    from bnlab.config.schemas import Config

# Keras's own optimizers, which all take `learning_rate`.
KERAS_OPTIMIZERS = {
    f"keras.optimizers.{name}"
    for name in ("SGD", "Adam", "AdamW", "RMSprop", "Adagrad", "Adadelta", "Adamax", "Nadam")
}
# Seeds feed numpy's and Keras's generators, which take 32-bit unsigned values.
MAX_SEED = 2**32 - 1


# How the learning rate may follow the batch size (train.lr_scaling): the factor on `lr`
# for a batch `ratio` times the reference one.
LR_SCALINGS = {"none": lambda ratio: 1.0, "linear": lambda ratio: ratio, "sqrt": math.sqrt}


def effective_learning_rate(config: Config) -> float:
    """The learning rate a job trains with: `lr` scaled to its batch size by
    `train.lr_scaling` (`lr` itself with the default, none)."""
    train = config.train
    factor = LR_SCALINGS[train.lr_scaling](train.batch_size / train.lr_reference_batch)
    return config.optimizer.learning_rate * factor


def _fail(key: str, message: str) -> NoReturn:
    """`errors.fail`, naming a key by the shorthand users type (`lr`, not `optimizer.lr`)."""
    shorthand_of = {key: shorthand for shorthand, key in SHORTHANDS.items()}
    fail(shorthand_of.get(key, key), message)


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
    """The compared keys exist and the variant is not a key of the cell; two labels name a
    true/false variant's sides, `VALUE: LABEL` entries name the sides of any other."""
    compare = config.compare
    keys = compare.variant.split("+")
    for key in keys:
        if _value_of(config, key) is _MISSING_KEY:
            raise ConfigError(f"compare.variant: '{key}' is not a key of this config")
    if len(compare.cell) != 2:
        raise ConfigError(f"compare.cell: names two keys (rows, columns), got {compare.cell}")
    for key in compare.cell:
        if _value_of(config, key) is _MISSING_KEY:
            raise ConfigError(f"compare.cell: '{key}' is not a key of this config")
        if key in keys:
            raise ConfigError(f"compare.variant: '{key}' is also a key of compare.cell")
    named = [label for label in compare.labels if ": " in label]
    several = len(keys) > 1 or not isinstance(_value_of(config, keys[0]), bool) or named
    if not several and len(compare.labels) != 2:
        raise ConfigError(f"compare.labels: names the two sides, got {compare.labels}")
    if several and len(named) != len(compare.labels):
        unnamed = next(label for label in compare.labels if ": " not in label)
        raise ConfigError(
            f"compare.labels: with several sides each entry is 'VALUE: LABEL', got '{unnamed}'"
        )


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


def check_ranges(config: Config) -> None:
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
    if train.lr_scaling not in LR_SCALINGS:
        _fail(
            "train.lr_scaling", f"must be one of {', '.join(LR_SCALINGS)}, got {train.lr_scaling!r}"
        )
    for key in ("steps", "batch_size", "eval_every", "steps_per_execution", "lr_reference_batch"):
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
    refused = names.problem(name)
    if refused:
        _fail("tracking.experiment", refused)


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


def check_shorthands(overrides: list[str]) -> None:
    """Refuses a shorthand and its group key set to different values.

    Raises:
        ConfigError: The two disagree; the message names both keys.
    """
    message = shorthand_disagreement(overrides)
    if message:
        raise ConfigError(message)


def validate(
    cfg: DictConfig,
    overrides: list[str] | None = None,
    choices: dict[str, str] | None = None,
) -> Config:
    """Turns a composed config into a checked `Config`.

    Args:
        cfg: The job config Hydra composed.
        overrides: The command-line overrides it was composed from, if known.
        choices: The option Hydra chose per group (names the YAML in errors), if known.

    Returns:
        The typed config with every interpolation resolved and the shorthands
        equal to the group values they stand for.

    Raises:
        ConfigError: A value is out of range, or a shorthand and its group key
            disagree; the message names the key.
    """
    # A backend that is not installed is one line, before any store is opened.
    missing = backend.missing_backend()
    if missing:
        raise ConfigError(missing)
    if overrides:
        check_shorthands(overrides)
    config = OmegaConf.to_object(typed(cfg, choices))
    check_ranges(config)
    # The shorthands mirror what is trained, so params and run names never
    # disagree with the groups (e.g. `optimizer.learning_rate=0.05` sets lr=0.05).
    for shorthand, value in group_values(config).items():
        setattr(config, shorthand, value)
    return config  # type: ignore[return-value]


def typed(cfg: DictConfig, choices: dict[str, str] | None = None) -> DictConfig:
    """A copy of `cfg` whose plug-in groups carry their schemas, so wrong types and
    unknown keys fail naming the key. `choices` (group: option) name the YAML files."""
    from bnlab.config.registry import PLUGIN_GROUPS, schema_of

    choices = choices if choices is not None else _hydra_choices()
    cfg = cfg.copy()
    for group in PLUGIN_GROUPS:
        node = cfg.get(group)
        if not isinstance(node, DictConfig):
            continue
        target = node.get("_target_")
        schema = schema_of(group, target, choices.get(group))
        try:
            merged = OmegaConf.merge(OmegaConf.structured(schema), node)
        except OmegaConfBaseException as error:
            key = getattr(error, "full_key", "") or ""
            message = str(error).splitlines()[0]
            named = f"{group}.{key}" if key else group
            raise ConfigError(f"{named}: {message}") from None
        with open_dict(cfg):
            cfg[group] = merged
    return cfg


def _hydra_choices() -> dict[str, str]:
    """The options Hydra selected for this job, when it runs inside a Hydra app."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return {}
    return {key: str(value) for key, value in HydraConfig.get().runtime.choices.items()}


def check_optimizer(config: Any) -> None:
    """Refuses an argument the optimizer's class does not take, before any training.

    Raises:
        ConfigError: No such class, or it takes no such argument; the message names the key.
    """
    if config._target_ in KERAS_OPTIMIZERS and set(config.arguments()) <= {"learning_rate"}:
        # Every Keras optimizer takes a learning rate: nothing to read, no backend to start.
        return
    target_class(config._target_, config.arguments(), "optimizer")
