"""Command-line behaviour shared by the entry points: one-line errors, clean interrupts."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from typing import Any

from bnlab import interrupts, tracking
from bnlab.config.errors import EXIT_INTERRUPTED, USER_ERRORS, exit_on_user_error
from bnlab.sweep import callback as sweep


def run(main: Callable[[], Any]) -> None:
    """Runs a `@hydra.main` function; bad input exits 2 with one line, Ctrl-C exits 130.

    Hydra's own error printing is bypassed (via HYDRA_FULL_ERROR) so that config
    errors reach this function, which prints them on one line. Any other error
    keeps its full traceback. A sweep opened by this process is closed as KILLED
    on Ctrl-C or SIGTERM, so no run is left RUNNING.
    """
    user_set_full_error = "HYDRA_FULL_ERROR" in os.environ
    os.environ.setdefault("HYDRA_FULL_ERROR", "1")
    # A shell starts background jobs with SIGINT ignored; a sweep must still stop cleanly,
    # even when the signal lands in a library callback that swallows it.
    interrupts.install()
    try:
        main()
        interrupts.check()
    except USER_ERRORS as error:
        sweep.OPEN.abort()
        if user_set_full_error:
            raise
        exit_on_user_error(error)
    except KeyboardInterrupt:
        if sweep.OPEN.launcher_stuck():
            # Not the user's Ctrl-C: the sweep's watchdog found every job ended.
            interrupts.clear()
            sweep.OPEN.launcher_failed(RuntimeError("it waited for a job whose process died"))
        sweep.OPEN.abort()
        print("interrupted", file=sys.stderr)
        sys.exit(EXIT_INTERRUPTED)
    except tracking.ResultsLost as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(1)
    except Exception as error:
        if interrupts.requested():
            # Stopped: the workers stopped with this process, and the launcher reports
            # their stop as an error of its own.
            sweep.OPEN.abort()
            print("interrupted", file=sys.stderr)
            sys.exit(EXIT_INTERRUPTED)
        # A launcher that gave up on one job: the other jobs finish, then the list.
        sweep.OPEN.launcher_failed(error)
        raise
