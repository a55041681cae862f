"""The plug-in registry: where configs are found, and each selected option's schema.

Model and data are plug-ins: an option is a YAML file in its group whose `_target_`
names a builder function. Only the options a launch selects are looked at, when its
config is validated, so a broken plug-in harms only the runs that select it. A
builder's schema is, in this order: the dataclass in the builder's module that subclasses
the group's base and names this builder as its `_target_`; the one that names a builder
of the same function name (a copied plug-in keeps its schema); else one derived from
the builder's signature, so a plain typed function is a plug-in.
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import uuid
from importlib import resources
from pathlib import Path
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, OmegaConf

from bnlab.config.errors import ConfigError
from bnlab.config.schemas import (
    SWEEP_ID_RESOLVER,
    Config,
    DataConfig,
    ModelConfig,
    OptimizerConfig,
    TrackingConfig,
    TrainConfig,
)

# The package that holds the shipped configs, and Hydra's name for it.
CONFIG_PACKAGE = "bnlab.conf"
CONFIG_PATH = f"pkg://{CONFIG_PACKAGE}"
# The shipped config folder on disk, for listing its saved studies.
CONF_DIR = Path(str(resources.files(CONFIG_PACKAGE)))
# The plug-in groups and the base every option's schema subclasses.
PLUGIN_GROUPS = {"model": ModelConfig, "data": DataConfig}
# Arguments the pipeline supplies to a group's builder, not the YAML.
# Argument types a derived schema keeps (OmegaConf converts and checks them).
PLAIN_TYPES = {kind: kind for kind in (int, float, bool, str)} | {
    kind.__name__: kind for kind in (int, float, bool, str)
}
SUPPLIED = {"model": ("input_shape", "num_classes"), "data": ()}


def new_sweep_id() -> str:
    """A fresh sweep id: the one way a launch's id is drawn."""
    return uuid.uuid4().hex[:12]


def register_configs() -> None:
    """Registers the base schemas (`base_config`, `base_<group>`) and the sweep-id resolver."""
    # Cached like Hydra's ${now:}: Hydra copies the multirun's resolved values into
    # each job's config, wherever that job runs, so all jobs see one sweep id.
    if not OmegaConf.has_resolver(SWEEP_ID_RESOLVER):
        OmegaConf.register_new_resolver(SWEEP_ID_RESOLVER, new_sweep_id, use_cache=True)
    store = ConfigStore.instance()
    store.store(name="base_config", node=Config)
    store.store(group="optimizer", name="base_optimizer", node=OptimizerConfig)
    store.store(group="train", name="base_train", node=TrainConfig)
    store.store(group="tracking", name="base_tracking", node=TrackingConfig)


def _where(group: str, choice: str | None) -> str:
    """How a message names the YAML a group's option comes from."""
    return f"the `_target_` in {group}/{choice}.yaml" if choice else f"{group}._target_"


def builder(group: str, target: Any, choice: str | None = None) -> Any:
    """The function a plug-in's `_target_` names, imported now.

    Raises:
        ConfigError: No such module or function, or it is not callable; one line that
            names `<group>._target_` and what to change.
    """
    key = f"{group}._target_"
    if not isinstance(target, str) or "." not in target:
        raise ConfigError(f"{key}: must be a dotted path to a builder function, got {target!r}")
    module_name, _, name = target.rpartition(".")
    try:
        module = importlib.import_module(module_name)
    except Exception as error:  # a plug-in's own bug: SyntaxError, NameError, ImportError
        detail = f"{type(error).__name__}: {error}".splitlines()[0]
        raise ConfigError(
            f"{key}: cannot import {module_name} ({detail}); fix that module or "
            f"{_where(group, choice)}"
        ) from error
    found = getattr(module, name, None)
    if found is None:
        raise ConfigError(
            f"{key}: {module_name} has no '{name}'; fix {_where(group, choice)} "
            f"or define {name} in {module_name}"
        )
    if not callable(found) or dataclasses.is_dataclass(found):
        raise ConfigError(f"{key}: {target} is not a builder function; point it at one")
    return found


def schema_of(group: str, target: str, choice: str | None = None) -> type:
    """The dataclass schema of the plug-in `target` in `group` (see the module docstring).

    Raises:
        ConfigError: The target cannot be imported, or no schema fits it.
    """
    base = PLUGIN_GROUPS[group]
    function = builder(group, target, choice)
    module = importlib.import_module(function.__module__)
    candidates = [
        value
        for value in vars(module).values()
        if isinstance(value, type)
        and dataclasses.is_dataclass(value)
        and issubclass(value, base)
        and value is not base
    ]
    name = target.rpartition(".")[2]
    for value in candidates:
        if getattr(value, "_target_", None) == target:
            return value
    for value in candidates:
        if str(getattr(value, "_target_", "")).rpartition(".")[2] == name:
            # A copied plug-in: its schema still names the original's module.
            return dataclasses.make_dataclass(
                value.__name__,
                [("_target_", str, dataclasses.field(default=target))],
                bases=(value,),
            )
    return _derived(group, base, target, function)


def _derived(group: str, base: type, target: str, function: Any) -> type:
    """A schema made from a builder's signature: one field per argument."""
    try:
        parameters = inspect.signature(function).parameters.values()
    except (TypeError, ValueError) as error:
        raise ConfigError(f"{group}._target_: cannot read the arguments of {target}") from error
    inherited = {item.name for item in dataclasses.fields(base)}
    taken = {parameter.name for parameter in parameters}
    for name in sorted(inherited - taken - {"_target_"}):
        raise ConfigError(
            f"{group}._target_: {target} takes no '{name}', which every {group} builder is "
            f"given; add it to its arguments or write a {base.__name__} subclass beside it"
        )
    fields: list[tuple[str, Any, Any]] = [("_target_", str, dataclasses.field(default=target))]
    for parameter in parameters:
        if parameter.name in inherited or parameter.name in SUPPLIED[group]:
            continue
        if parameter.kind in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD):
            continue
        # OmegaConf types plain values; anything richer is checked by the builder.
        annotation = PLAIN_TYPES.get(parameter.annotation, Any)
        default = MISSING if parameter.default is inspect.Parameter.empty else parameter.default
        if isinstance(default, list | tuple | dict):
            copy = dict if isinstance(default, dict) else list
            default = dataclasses.field(
                default_factory=lambda value=default, copy=copy: copy(value)
            )
        else:
            default = dataclasses.field(default=default)
        fields.append((parameter.name, annotation, default))
    name = "".join(part.title() for part in function.__name__.split("_")) + "Config"
    return dataclasses.make_dataclass(name, fields, bases=(base,))
