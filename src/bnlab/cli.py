"""Command-line behaviour shared by the entry points: one-line errors, clean interrupts."""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Callable
from typing import Any

from hydra.errors import ConfigCompositionException, HydraException, MissingConfigException
from omegaconf.errors import OmegaConfBaseException

from bnlab import sweep
from bnlab.config import ConfigError
from bnlab.data import DataError

USER_ERRORS = (ConfigError, DataError, HydraException, OmegaConfBaseException)


def one_line(error: BaseException) -> str:
    """Condenses Hydra's and OmegaConf's multi-line messages to one line naming the key."""
    if isinstance(error, ConfigCompositionException) and error.__cause__ is not None:
        error = error.__cause__
    if isinstance(error, MissingConfigException) and error.options is not None:
        missing = str(error).splitlines()[0]
        return f"{missing.split(': ', 1)[-1]} (accepted: {', '.join(error.options)})"
    if isinstance(error, OmegaConfBaseException):
        key = getattr(error, "full_key", None)
        message = str(error).splitlines()[0]
        if "is not in struct" in str(error) or "Could not override" in str(error):
            return f"{key}: unknown key (see python src/train.py --cfg job for the valid ones)"
        return f"{key}: {message}" if key else message
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return "; ".join(line for line in lines if not line.startswith("object_type"))


def _raise_interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def run(main: Callable[[], Any]) -> None:
    """Runs a `@hydra.main` function; bad input exits 2 with one line, Ctrl-C exits 130.

    Hydra's own error printing is bypassed (via HYDRA_FULL_ERROR) so that config
    errors reach this function, which prints them on one line. Any other error
    keeps its full traceback. A sweep opened by this process is closed as KILLED
    on Ctrl-C or SIGTERM, so no run is left RUNNING.
    """
    user_set_full_error = "HYDRA_FULL_ERROR" in os.environ
    os.environ.setdefault("HYDRA_FULL_ERROR", "1")
    signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        main()
    except USER_ERRORS as error:
        sweep.abort()
        if user_set_full_error:
            raise
        print(f"error: {one_line(error)}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        sweep.abort()
        print("interrupted", file=sys.stderr)
        sys.exit(130)
    except Exception:
        sweep.abort()
        raise
