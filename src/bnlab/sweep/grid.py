"""A grid sweep's jobs: the overrides expanded as Hydra's grid does, each checked before a run."""

from __future__ import annotations

import copy
import itertools
from collections.abc import Iterator
from typing import Any

from hydra import compose
from omegaconf import DictConfig, OmegaConf, read_write

from bnlab.config import Config, ConfigError, target_class, validate
from bnlab.config.overrides import parse


def grid_jobs(config: DictConfig) -> list[list[str]]:
    """Expands a multirun's overrides into one override list per job, as Hydra's grid does.

    The sweeper's `params` come first and the command line's overrides after them,
    so a command-line value of the same key wins, as in Hydra's basic sweeper.
    """
    params = config.hydra.sweeper.get("params") or {}
    arguments = [f"{key}={value}" for key, value in params.items()]
    arguments += list(config.hydra.overrides.task)
    by_key: dict[str, list[str]] = {}
    for override in parse(arguments):
        key = override.get_key_element()
        if override.is_discrete_sweep():
            values = [f"{key}={value}" for value in override.sweep_string_iterator()]
        elif override.is_sweep_override():
            raise ConfigError(
                f"{key}: a grid sweep takes lists of values (a,b,c), not "
                f"'{override.input_line}' (search ranges with hparams_search)"
            )
        else:
            values = [f"{key}={override.get_value_element_as_str()}"]
        by_key[key] = values
    return [list(job) for job in itertools.product(*by_key.values())]


def search_path_overrides(config: DictConfig) -> list[str]:
    """The override that gives a composition the launch's extra config folders
    (`hydra.searchpath`, e.g. a user's own folder), which job overrides never carry."""
    folders = list(config.hydra.get("searchpath") or [])
    return [f"hydra.searchpath=[{','.join(folders)}]"] if folders else []


def check_jobs(config_name: str, jobs: list[list[str]], extra: list[str] | None = None) -> None:
    """Validates every job's config before any job starts; raises on the first bad one.

    Also refuses, for every grid point, an optimizer argument its class does not take.
    """
    optimizers = {_optimizer(config) for config in job_configs(config_name, jobs, extra)}
    for target, arguments in optimizers:
        # Only arguments beyond the learning rate need the class's signature; reading it
        # imports Keras, which a launch of the default optimizers never pays for.
        if set(arguments) - {"learning_rate"}:
            target_class(target, arguments, "optimizer")


def job_configs(
    config_name: str, jobs: list[list[str]], extra: list[str] | None = None
) -> Iterator[Config]:
    """Each job's validated config, in order; raises on the first bad one.

    The first job is composed in full. A job whose overrides differ from the first one's
    only in plain values (`lr=0.01`, `model.bn=false`: no config group, no `+` or `~`)
    has the same defaults list, so its config is the first one's with those values set,
    as Hydra itself applies a value override (`OmegaConf.update` after composition):
    typed, checked against the schema, and validated in full. Others are composed.
    `extra` overrides (the launch's config search path) shape every composition.
    """
    extra = extra or []
    if not jobs:
        return
    base_overrides = jobs[0]
    base = compose(config_name=config_name, overrides=[*base_overrides, *extra])
    yield validate(base, base_overrides)
    base_values = {o.get_key_element(): o for o in parse(base_overrides)}
    for overrides in jobs[1:]:
        parsed = parse(overrides)
        changed = [o for o in parsed if _differs(o, base_values)]
        if len(parsed) != len(base_values) or not all(plain_value(o, base) for o in changed):
            composed = compose(config_name=config_name, overrides=[*overrides, *extra])
            yield validate(composed, overrides)
            continue
        job_cfg = copy.deepcopy(base)
        with read_write(job_cfg):
            for override in changed:
                OmegaConf.update(job_cfg, override.get_key_element(), override.value(), merge=True)
        yield validate(job_cfg, overrides)


def _optimizer(config: Config) -> tuple[str, tuple[str, ...]]:
    """An optimizer's class and the arguments its config sets."""
    return config.optimizer._target_, tuple(sorted(config.optimizer.arguments()))


def _differs(override: Any, base_values: dict[str, Any]) -> bool:
    known = base_values.get(override.get_key_element())
    return known is None or known.input_line != override.input_line


def plain_value(override: Any, base: DictConfig) -> bool:
    """An override that sets one value the composed config holds, not a group or a node."""
    key = override.get_key_element()
    if (
        override.input_line.startswith(("+", "~"))
        or key.startswith("hydra")
        or "/" in key
        or override.package is not None
    ):
        return False
    node = OmegaConf.select(base, key, default=_ABSENT, throw_on_missing=False)
    return node is not _ABSENT and not OmegaConf.is_config(node)


# Marks a key that the composed config does not hold.
_ABSENT = object()
