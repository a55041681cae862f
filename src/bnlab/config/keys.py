"""Which config keys decide what is trained, and how keys are spelled and flattened.

One list (`NOT_TRAINED`) says which keys do not change training. The identity, the
run names and the report's selection of comparable runs all read it.
"""

from __future__ import annotations

from dataclasses import asdict, is_dataclass
from typing import Any

from omegaconf import DictConfig, OmegaConf

from bnlab.config.overrides import parse

# The top-level shorthands users sweep, and the group key each one sets. What is
# trained is the group value; a shorthand is only a way to write it. Run names show
# them in this order: `BN relu lr=0.01 s0`.
SHORTHANDS = {
    "bn": "model.bn",
    "activation": "model.activation",
    "lr": "optimizer.learning_rate",
    "seed": "train.seed",
}
# Keys that do not change what is trained: where a run is recorded, whether to train
# again, how many threads compute it, a search's bookkeeping and what the report
# compares. They stay out of a job's identity, its run name and the report's check that
# compared runs share their settings. (Output folders are Hydra's, under `hydra`, which a
# job's config never holds.)
NOT_TRAINED = (
    "tracking",
    "search",
    "compare",
    "claim",
    "train.rerun",
    "train.threads",
    "train.internals",
    "train.mechanism",
    *SHORTHANDS,
)


# Keys not logged as a run's params: prose that describes the experiment, not the run.
NOT_LOGGED = ("tracking.note",)


def logged_params(config: Any) -> dict[str, Any]:
    """The params a run records: every flattened key but those in NOT_LOGGED."""
    return {key: value for key, value in flatten(config).items() if key not in NOT_LOGGED}


def is_trained(key: str) -> bool:
    """Whether the dotted `key` changes what is trained (it is not in NOT_TRAINED)."""
    return not any(key == skip or key.startswith(f"{skip}.") for skip in NOT_TRAINED)


def flatten(config: Any) -> dict[str, Any]:
    """Flattens a config (dataclass or DictConfig) into dotted keys, e.g. `optimizer.lr`."""
    if isinstance(config, DictConfig):
        container = OmegaConf.to_container(config, resolve=True)
    elif is_dataclass(config):
        container = asdict(config)
    else:
        container = config
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


def trained_values(config: Any) -> dict[str, Any]:
    """The values that decide what is trained: every key but those in NOT_TRAINED."""
    return {key: value for key, value in flatten(config).items() if is_trained(key)}


def spell_override(override: str) -> str:
    """`key=value` with booleans spelled as on the command line: Hydra's sweeper hands
    jobs `bn=True`; runs, tags and names say `bn=true` everywhere."""
    key, sep, value = override.partition("=")
    if value in ("True", "False"):
        value = value.lower()
    return f"{key}{sep}{value}"


def override_key(override: str) -> str:
    """The key an override sets, without Hydra's `+`, `++` or `~` prefixes."""
    return override.split("=", 1)[0].lstrip("+~")


def shorthand_disagreement(overrides: list[str]) -> str | None:
    """A one-line message when a shorthand and its group key are set to different values.

    `bn=true model.bn=false` would train one thing and name another. Setting only one of
    the two is fine: the other follows (see `Config.__post_init__`).
    """
    parsed = parse(overrides)
    given = {
        override.get_key_element().lstrip("+~"): override
        for override in parsed
        if not override.is_sweep_override() and not override.is_delete()
    }
    for shorthand, key in SHORTHANDS.items():
        if shorthand in given and key in given:
            short, full = given[shorthand], given[key]
            if not _same(short.value(), full.value()):
                return (
                    f"{shorthand}: {shorthand}={short.get_value_element_as_str()} and "
                    f"{key}={full.get_value_element_as_str()} disagree (set only one of them)"
                )
    return None


def _same(left: Any, right: Any) -> bool:
    if isinstance(left, bool) or isinstance(right, bool):
        return left is right
    try:
        return float(left) == float(right)
    except (TypeError, ValueError):
        return str(left) == str(right)
