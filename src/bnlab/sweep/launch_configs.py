"""Each launched job's config, derived from the first job's where only plain values differ.

A Hydra launcher composes every job's config again before it runs it
(`load_sweep_config`: the whole defaults list, every YAML file, the schemas), which
costs 0.1 to 0.15 s per job here, 0.01 to 0.02 s derived. A grid's jobs mostly differ
from the first only in plain values (`lr=0.01`, `seed=1`), which cannot change the
defaults list; Hydra itself applies such a value after composing
(`OmegaConf.update(..., merge=True)`). So a job whose overrides have the first job's
keys, in its order, and differ only in plain values gets the first job's composed config
with those values set, its `hydra.overrides.task` and `hydra.job.override_dirname`
rewritten as Hydra writes them. Any other job is composed in full, as before. The grid
sweeper hands this loader to its launcher (`hydra_plugins.bnlab_grid_sweeper`), and the
Optuna sweeper too (its trials differ in the sampled values); the launchers that compose
in the launching process (basic, Ray, Slurm's submitit) gain from it, joblib's workers
compose as before. `hydra.job.override_dirname` is written by the rule of Hydra's
internal `get_overrides_dirname` (overrides not excluded, sorted, joined, `=` replaced by
the key-value separator), restated here so no private API is imported; the tests compare
every derived config with Hydra's full composition, so a Hydra that changes the rule
fails them.
"""

from __future__ import annotations

import copy
import os
from dataclasses import dataclass
from typing import Any

from omegaconf import DictConfig, OmegaConf, open_dict, read_write

from bnlab.config.overrides import Override, parse
from bnlab.sweep.grid import plain_value


@dataclass
class _First:
    master: DictConfig  # the launch's config the first job was composed from
    overrides: list[Override]
    config: DictConfig  # its config, as composed, before the launcher changed it


class DerivingConfigLoader:
    """Hydra's config loader, whose `load_sweep_config` derives a job's config from the
    first job's where only plain values differ; everything else is the wrapped loader's."""

    def __init__(self, loader: Any) -> None:
        self._loader = loader
        self._first: _First | None = None

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):  # not yet set (unpickling): no recursion through here
            raise AttributeError(name)
        return getattr(self._loader, name)

    def __getstate__(self) -> dict[str, Any]:
        # A worker that unpickles it composes its own first job.
        return {"_loader": self._loader, "_first": None}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)

    def load_sweep_config(self, master_config: DictConfig, sweep_overrides: list[str]) -> Any:
        first = self._first
        if first is not None and first.master is master_config:
            derived = _derived(first, parse(sweep_overrides))
            if derived is not None:
                # As Hydra's loader does: resolved values (timestamps) match the launch's.
                OmegaConf.copy_cache(from_config=master_config, to_config=derived)
                return derived
        config = self._loader.load_sweep_config(master_config, sweep_overrides)
        if first is None:
            self._first = _First(master_config, parse(sweep_overrides), copy.deepcopy(config))
        return config


def _derived(first: _First, overrides: list[Override]) -> DictConfig | None:
    """The job's config from the first job's, or None when it must be composed."""
    keys = [override.get_key_element() for override in overrides]
    if keys != [override.get_key_element() for override in first.overrides]:
        return None
    changed = [
        override
        for override, before in zip(overrides, first.overrides, strict=True)
        if override.input_line != before.input_line
    ]
    if not all(plain_value(override, first.config) for override in changed):
        return None
    config = copy.deepcopy(first.config)
    with read_write(config):
        for override in changed:
            OmegaConf.update(config, override.get_key_element(), override.value(), merge=True)
        task = [override for override in overrides if not override.is_hydra_override()]
        dirname = config.hydra.job.config.override_dirname
        with open_dict(config.hydra):
            config.hydra.overrides.task = [override.input_line for override in task]
            config.hydra.job.override_dirname = _overrides_dirname(
                task, dirname.exclude_keys, dirname.item_sep, dirname.kv_sep
            )
            config.hydra.runtime.cwd = os.getcwd()
    return config


def _overrides_dirname(
    overrides: list[Override], exclude_keys: list[str], item_sep: str, kv_sep: str
) -> str:
    """`hydra.job.override_dirname` as Hydra writes it."""
    lines = sorted(
        override.input_line
        for override in overrides
        if override.key_or_group not in exclude_keys and override.input_line is not None
    )
    return item_sep.join(lines).replace("=", kv_sep)
