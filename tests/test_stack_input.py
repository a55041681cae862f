"""`tracking_stack.py` refuses bad input in one line before anything starts or is saved,
and a failed `up` leaves nothing running."""

from __future__ import annotations

import os
import socket
import tempfile
from pathlib import Path

import pytest

from bnlab import stack
from bnlab.stack import postgres, server
from conftest import STACK_SCRIPT, run_forked, stack_command


def refused_command(action: str, folder: Path, *extra: str):
    """`tracking_stack.py ACTION --dir FOLDER ...`, for a case refused before anything
    starts: run in a fork of a preloaded interpreter (tests/forkrun.py)."""
    argv = [str(STACK_SCRIPT), action, "--dir", str(folder), *extra]
    return run_forked(argv, cwd=Path(tempfile.gettempdir()))


def _refused(done) -> str:
    assert done.returncode == 2, done.stdout + done.stderr
    [line] = done.stderr.strip().splitlines()
    assert line.startswith("error: ") and "Traceback" not in done.stderr
    return line


@pytest.mark.parametrize("name", ["../../x", "/abs/olute", "a:b", "", "tab\there"])
def test_an_account_name_that_is_a_path_or_has_a_colon_is_refused(
    tmp_path: Path, name: str
) -> None:
    for action in ("add", "passwd"):
        line = _refused(refused_command("user", tmp_path / "stack", action, name))
        assert f"user {action} NAME" in line
    line = _refused(
        refused_command("env", tmp_path / "stack", "--user", name, "--password-file", "x")
    )
    assert "--user" in line
    assert not (tmp_path / "stack").exists() and not (tmp_path / "x.password").exists()


def test_a_dir_that_is_a_file_is_one_line(tmp_path: Path) -> None:
    file = tmp_path / "a-file"
    file.write_text("")
    for action in ("up", "status", "down", "env"):
        assert "--dir" in _refused(refused_command(action, file))


@pytest.mark.parametrize("flag", ["--port", "--pg-port", "--tls-port"])
def test_a_port_out_of_range_or_in_use_is_refused_naming_it_and_not_saved(
    tmp_path: Path, flag: str
) -> None:
    folder = tmp_path / "stack"
    for port in ("0", "70000", "-1"):
        assert f"{flag} {port}" in _refused(refused_command("up", folder, flag, port))
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        line = _refused(refused_command("up", folder, flag, port))
    assert f"{flag} {port}" in line and "listens" in line
    assert not (folder / stack.STATE_FILE).exists()


def test_a_failed_up_leaves_nothing_running() -> None:
    try:
        stack._pg_binary("initdb")
    except stack.StackError as error:
        if os.environ.get("CI"):
            raise
        pytest.skip(str(error))
    # Outside pytest's private temp folder: as root, PostgreSQL runs as `postgres`.
    root = Path(tempfile.mkdtemp(prefix="bnlab-stack-"))
    root.chmod(0o711)
    folder = root / "stack"
    # An address of no interface here (TEST-NET-1): accepted as a setting, fails to bind.
    done = stack_command("up", folder, "--host", "192.0.2.1", "--workers", "1")
    assert done.returncode != 0
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    found = stack.Stack.load(folder)
    if found is not None:
        assert not postgres.running(found)
        assert not server.alive(found.server_pid)
