"""Credentials never leave the process that uses them.

A password in `tracking.uri`, `$MLFLOW_TRACKING_URI` or an Optuna storage URL
(`http://user:pw@host`, `postgresql://user:pw@host/db`) is replaced by `***`
wherever the project writes: every log record (the console, `train.log`, Hydra's
own launch lines), MLflow params, tags and text artifacts, Hydra's saved configs
in the output folders, the report and the messages of errors.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

# scheme://user:password@ -- the password is what is hidden; the user stays readable.
# A password may hold an unescaped '@': it runs to the last '@' before the host. Hydra
# writes overrides escaped (`http\://bob\:pw@host\:5000` in its launch lines, the
# `overrides` tag and its saved files), and a Python list shows each backslash doubled,
# so any backslashes may stand before a ':' and any escaped character in the password.
_CREDENTIALS = re.compile(
    r"(\b[a-zA-Z][a-zA-Z0-9+.\-]*\\*://[^\s/:@'\"\[\],]*:)"
    r"(?:\\.|[^\s@'\"\[\],\\])+(?:@[^\s@/'\"\[\],]+)*@"
)
HIDDEN = "***"


def redact_text(text: str) -> str:
    """`text` (a URI, or any text holding URIs) with every URI's password replaced by ***."""
    if "://" not in text:
        return text
    return _CREDENTIALS.sub(rf"\g<1>{HIDDEN}@", text)


def redact_file(path: Path) -> None:
    """Rewrites a text file in place when it holds a credential."""
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError):
        return
    clean = redact_text(text)
    if clean != text:
        path.write_text(clean)


def redact_hydra_folder(output_dir: Path) -> None:
    """Hydra saves each job's config and overrides (`.hydra/*.yaml`) before the job starts."""
    for path in [*Path(output_dir).glob(".hydra/*.yaml"), Path(output_dir) / "multirun.yaml"]:
        if path.is_file():
            redact_file(path)


_installed = False


def install_log_redaction() -> None:
    """Makes every log record of this process carry redacted text, whatever its handler.

    A record factory, not a handler filter: Hydra reconfigures the handlers of each
    job (and of each joblib worker), and records are built before any handler sees them.
    """
    global _installed
    if _installed:
        return
    _installed = True
    build = logging.getLogRecordFactory()

    def redacted_record(*args, **kwargs) -> logging.LogRecord:
        record = build(*args, **kwargs)
        try:
            message = record.getMessage()
        except Exception:  # a malformed call; logging reports it itself
            return record
        clean = redact_text(message)
        if clean != message:
            record.msg, record.args = clean, None
        return record

    logging.setLogRecordFactory(redacted_record)
