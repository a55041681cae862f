"""A preloaded interpreter that runs a command-line tool once per request, each in a fork.

Bad-input cases exit before any work, so a fresh interpreter spends most of its time
importing Hydra, OmegaConf and MLflow. This process imports them once; each request
forks a child that runs the tool as `python ARGV` would: its own argv, working folder,
environment, stdout and stderr (files the caller reads) and exit status. The child
never inherits this process's stdin or protocol pipe.

Protocol (one JSON object per line on stdin, one reply per line on the reply fd):
    {"argv": [...], "cwd": ..., "env": {...}, "stdout": PATH, "stderr": PATH, "timeout": S}
    -> {"returncode": N, "cpu": S}  (N is -9 when the child ran past its timeout and was
    killed; S is the child's CPU-seconds, which the CI budget counts to the test)

Nothing here imports a backend: KERAS_BACKEND is read when Keras is first imported, in
the child, with the request's environment.
"""

from __future__ import annotations

import atexit
import contextlib
import importlib
import json
import os
import runpy
import signal
import sys
import time
import traceback

PRELOAD = ["hydra", "omegaconf", "mlflow", "bnlab.cli.main", "bnlab.cli.hydra_app"]


def _exit_code(error: SystemExit) -> int:
    """The status `python` exits with for `SystemExit(code)`."""
    if error.code is None:
        return 0
    if isinstance(error.code, int):
        return error.code
    print(error.code, file=sys.stderr)
    return 1


def _child(request: dict, reply_fd: int) -> None:
    """Runs one request in this forked child and never returns."""
    code = 1
    try:
        os.close(reply_fd)
        os.setsid()
        # Python's own start: SIGINT raises KeyboardInterrupt, SIGPIPE is ignored.
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGPIPE, signal.SIG_IGN)
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        sys.stdin = open(0, closefd=False)  # noqa: SIM115  (the child's stdin, until its exit)
        for fd, path in ((1, request["stdout"]), (2, request["stderr"])):
            target = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            os.dup2(target, fd)
            os.close(target)
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(request["env"])
        argv = request["argv"]
        try:
            if argv[0] == "-m":
                sys.argv = [argv[1], *argv[2:]]
                sys.path[0] = os.getcwd()
                runpy.run_module(argv[1], run_name="__main__", alter_sys=True)
            else:
                sys.argv = list(argv)
                sys.path[0] = os.path.dirname(os.path.abspath(argv[0]))
                runpy.run_path(argv[0], run_name="__main__")
            code = 0
        except SystemExit as error:
            code = _exit_code(error)
        except KeyboardInterrupt:
            traceback.print_exc()
            code = 130
        except BaseException:
            traceback.print_exc()
            code = 1
        atexit._run_exitfuncs()
    finally:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        os._exit(code)


def _wait(pid: int, timeout: float) -> tuple[int, float]:
    """The child's exit status and CPU-seconds; kills its session past `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        done, status, usage = os.wait4(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status), usage.ru_utime + usage.ru_stime
        if time.monotonic() > deadline:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)
            _, _, usage = os.wait4(pid, 0)
            return -signal.SIGKILL, usage.ru_utime + usage.ru_stime
        time.sleep(0.01)


def main() -> None:
    # Replies go to a private copy of stdout; fd 1 itself points nowhere useful.
    reply_fd = os.dup(1)
    null = os.open(os.devnull, os.O_WRONLY)
    os.dup2(null, 1)
    for name in PRELOAD:
        importlib.import_module(name)
    os.write(reply_fd, b'{"ready": true}\n')
    for line in sys.stdin:
        request = json.loads(line)
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            _child(request, reply_fd)
        code, cpu = _wait(pid, request.get("timeout", 120))
        reply = {"returncode": code, "cpu": round(cpu, 3)}
        os.write(reply_fd, (json.dumps(reply) + "\n").encode())


if __name__ == "__main__":
    main()
