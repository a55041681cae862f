"""What a job's console shows of an error: its last line; the traceback goes to the log file."""

from __future__ import annotations

import logging

# `hydra.verbose=bnlab` (or `hydra.verbose=true`) sets this logger to DEBUG.
DEBUG_LOGGER = "bnlab"


def quiet_handler_errors() -> None:
    """A log file that cannot be written (a full disk) costs its lines, not a traceback each.

    Python's logging prints "--- Logging error ---" and a traceback for every record a
    handler fails to write; the console line of each record is still printed.
    """
    logging.raiseExceptions = False


class ConsoleFormatter(logging.Formatter):
    """Formats a record with its exception's type and message in place of the traceback.

    The record itself is left as it came, so the file handler that formats it next
    (the job's `train.log`) still writes the whole traceback.
    """

    def format(self, record: logging.LogRecord) -> str:
        if not record.exc_info or logging.getLogger(DEBUG_LOGGER).isEnabledFor(logging.DEBUG):
            return super().format(record)
        exc_info, exc_text = record.exc_info, record.exc_text
        record.exc_info, record.exc_text = None, None
        try:
            text = super().format(record)
        finally:
            record.exc_info, record.exc_text = exc_info, exc_text
        error = exc_info[1]
        said = str(error).strip().splitlines()
        cause = f"{type(error).__name__}: {said[0]}" if said else type(error).__name__
        return f"{text}: {cause} (traceback in the job's log file)"
