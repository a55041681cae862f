"""Outages are bounded: a store that does not answer costs seconds, not minutes."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import requests

from bnlab import interrupts
from bnlab.redaction import redact_text
from bnlab.tracking import retries
from conftest import TINY, run_train_forked

# Nothing listens on the discard port of the loopback interface: connections are refused.
DEAD_SERVER = "http://alice:s3cret@127.0.0.1:9"


def refused() -> None:
    raise requests.exceptions.ConnectionError("connection refused")


def test_retry_gives_up_at_its_deadline_with_the_cause() -> None:
    started = time.monotonic()
    with pytest.raises(retries.StoreUnavailable, match="ConnectionError: connection refused"):
        retries.retry(refused, deadline=1.0)
    assert time.monotonic() - started < 2.5


def test_a_server_error_answer_is_retried_but_a_bad_request_is_not() -> None:
    from mlflow.exceptions import RestException

    from bnlab import tracking  # noqa: F401  (registers MLflow's server error type)

    answers = [{"error_code": "INTERNAL_ERROR", "message": "database restarting"}] * 2
    calls = []

    def restarting() -> str:
        calls.append(1)
        if answers:
            raise RestException(answers.pop())
        return "written"

    assert retries.retry(restarting, deadline=10.0) == "written" and len(calls) == 3

    def refused_write() -> None:
        calls.append(1)
        raise RestException({"error_code": "BAD_REQUEST", "message": "no such run"})

    calls.clear()
    with pytest.raises(RestException):
        retries.retry(refused_write, deadline=10.0)
    assert calls == [1]


def test_retry_does_not_retry_what_is_not_transient() -> None:
    calls = []

    def broken() -> None:
        calls.append(1)
        raise ValueError("a bug, not an outage")

    with pytest.raises(ValueError):
        retries.retry(broken, deadline=30.0)
    assert calls == [1]


def test_after_ctrl_c_a_failing_store_call_is_tried_once(monkeypatch) -> None:
    calls = []

    def failing() -> None:
        calls.append(1)
        refused()

    monkeypatch.setattr(interrupts, "requested", lambda: True)
    started = time.monotonic()
    with pytest.raises(retries.StoreUnavailable):
        retries.retry(failing, deadline=60.0)
    assert calls == [1] and time.monotonic() - started < 1.0
    # A store that answers still takes the writes that close runs.
    assert retries.retry(lambda: "written", deadline=60.0) == "written"


def test_passwords_are_redacted_from_shown_uris() -> None:
    assert redact_text(DEAD_SERVER) == "http://alice:***@127.0.0.1:9"
    assert redact_text("postgresql://bob:pw@db/mlflow") == "postgresql://bob:***@db/mlflow"
    assert redact_text("sqlite:///mlflow.db") == "sqlite:///mlflow.db"
    # An unescaped '@' in the password, an IPv6 host, and URIs inside other text.
    assert redact_text("http://u:p@ss@db:5000/x@y") == "http://u:***@db:5000/x@y"
    assert redact_text("http://u:pw@[::1]:5000") == "http://u:***@[::1]:5000"
    assert (
        redact_text("tracking.uri=http://u:pw@h:5000,storage='postgresql://x:y@z/db'")
        == "tracking.uri=http://u:***@h:5000,storage='postgresql://x:***@z/db'"
    )
    # Hydra's escaped form (launch lines, the overrides tag, .hydra/overrides.yaml), the
    # same inside a Python list (each backslash doubled), quoted, and with escaped
    # characters in the password itself.
    escaped = r"#0 : lr=0.001 tracking.uri=http\://bob\:S3cretPW@127.0.0.1\:55000"
    assert redact_text(escaped) == r"#0 : lr=0.001 tracking.uri=http\://bob\:***@127.0.0.1\:55000"
    listed = repr(["lr=0.001", r"tracking.uri=http\://bob\:S3cretPW@127.0.0.1\:55000"])
    assert "S3cretPW" not in redact_text(listed) and "bob" in redact_text(listed)
    quoted = """tracking.uri="http://bob:S3cretPW@h:1" 'tracking.uri="http://bob:S3c@h:1"'"""
    assert "S3c" not in redact_text(quoted)
    assert "S3cr" not in redact_text(r"tracking.uri=http\://bob\:S3cr\=et\,PW@h\:1")


@pytest.mark.slow
@pytest.mark.parametrize("mode", [[], ["-m", "bn=true,false"]], ids=["run", "sweep"])
def test_an_unreachable_store_fails_at_start_in_seconds_with_one_line(
    tmp_path: Path, mode: list[str]
) -> None:
    started = time.monotonic()
    done = run_train_forked([*mode, *TINY, f"tracking.uri={DEAD_SERVER}"], cwd=tmp_path)
    elapsed = time.monotonic() - started
    assert done.returncode == 2, done.stderr[-2000:]
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr[-2000:]
    assert lines[0].startswith("error: tracking.uri: no tracking store answers at ")
    assert "alice:***@127.0.0.1:9" in lines[0] and "s3cret" not in done.stdout + done.stderr
    # About 10 s: the interpreter and MLflow start, then tracking.connect_seconds (5 s).
    assert elapsed < 20, elapsed
    assert "Retrying" not in done.stdout + done.stderr  # no page of urllib3 warnings
    assert not (tmp_path / "mlflow.db").exists()


def test_the_console_shows_an_errors_last_line_and_the_log_file_its_traceback(
    tmp_path: Path,
) -> None:
    import io
    import logging

    from bnlab.job.console import DEBUG_LOGGER, ConsoleFormatter

    console, log_file = io.StringIO(), tmp_path / "train.log"
    logger = logging.getLogger("bnlab.test_console")
    shown = logging.StreamHandler(console)
    shown.setFormatter(ConsoleFormatter("%(levelname)s - %(message)s"))
    kept = logging.FileHandler(log_file)
    kept.setFormatter(logging.Formatter("%(message)s"))
    logger.handlers, logger.propagate = [shown, kept], False
    try:
        try:
            raise OSError(28, "No space left on device")
        except OSError:
            logger.exception("Job failed")
        assert console.getvalue().splitlines() == [
            "ERROR - Job failed: OSError: [Errno 28] No space left on device "
            "(traceback in the job's log file)"
        ]
        assert "Traceback (most recent call last)" in log_file.read_text()
        # hydra.verbose=bnlab (DEBUG) brings the traceback back to the console.
        logging.getLogger(DEBUG_LOGGER).setLevel(logging.DEBUG)
        try:
            raise ValueError("again")
        except ValueError:
            logger.exception("Job failed")
        assert "Traceback (most recent call last)" in console.getvalue()
    finally:
        logging.getLogger(DEBUG_LOGGER).setLevel(logging.NOTSET)
        kept.close()
        logger.handlers = []
