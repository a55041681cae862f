"""Bad input becomes one line on stderr and exit status 2, before any work starts."""

from __future__ import annotations

import sys
from typing import NoReturn

from hydra.errors import (
    ConfigCompositionException,
    HydraException,
    MissingConfigException,
    OverrideParseException,
)
from omegaconf.errors import (
    ConfigAttributeError,
    ConfigKeyError,
    OmegaConfBaseException,
    ValidationError,
)

from bnlab.redaction import redact_text


class ConfigError(ValueError):
    """A config value is out of range; its message is one line that names the key."""


class DataError(RuntimeError):
    """The data cannot be read; the message is one line that says how to fix it."""


def fail(key: str, message: str) -> NoReturn:
    """Refuses a value: one line that names its key, then what is wrong and what to do."""
    raise ConfigError(f"{key}: {message}")


USER_ERRORS = (ConfigError, DataError, HydraException, OmegaConfBaseException)
EXIT_BAD_INPUT = 2
# The exit status of a command stopped by Ctrl-C or SIGTERM.
EXIT_INTERRUPTED = 130


def one_line(error: BaseException) -> str:
    """Condenses Hydra's and OmegaConf's multi-line messages to one line naming the key."""
    if isinstance(error, ConfigCompositionException) and error.__cause__ is not None:
        error = error.__cause__
    if isinstance(error, OverrideParseException):
        return _unparsed(error.override)
    if isinstance(error, MissingConfigException) and error.options is not None:
        missing = str(error).splitlines()[0]
        options = [option for option in error.options if not option.startswith("base_")]
        return f"{missing.split(': ', 1)[-1]} (accepted: {', '.join(options)})"
    if isinstance(error, OmegaConfBaseException):
        key = getattr(error, "full_key", None)
        message = str(error).splitlines()[0]
        if isinstance(error, (ConfigAttributeError, ConfigKeyError)):
            return f"{key}: unknown key (list the valid ones with: bnlab train --cfg job)"
        if isinstance(error, ValidationError) and "bool" in str(getattr(error, "msg", "")):
            message += " (accepted: true, false)"
        return f"{key}: {message}" if key else message
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return "; ".join(line for line in lines if not line.startswith("object_type"))


def _unparsed(override: str) -> str:
    """Names the key of an override Hydra's grammar rejected, and shows it quoted."""
    key, _, value = override.partition("=")
    quote = "'" if '"' in value else '"'
    outer = '"' if quote == "'" else "'"
    return (
        f"{key.lstrip('+~')}: Hydra could not parse {value}; quote it: "
        f"{outer}{key}={quote}{value}{quote}{outer}"
    )


def exit_on_user_error(error: BaseException) -> NoReturn:
    """Prints `error: <one line>` to stderr and exits with status 2."""
    print(f"error: {redact_text(one_line(error))}", file=sys.stderr)
    raise SystemExit(EXIT_BAD_INPUT)
