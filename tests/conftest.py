"""Fixtures: compose the real config from conf/, shrink it, and point tracking at tmp_path."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from mlflow import MlflowClient
from omegaconf import DictConfig

from bnlab.config import register_configs
from bnlab.stack import free_port  # noqa: F401  (the one free-port helper, for the tests)

ROOT = Path(__file__).resolve().parents[1]
CONF_DIR = ROOT / "conf"
TRAIN_SCRIPT = ROOT / "src" / "train.py"
TESTS_DIR = Path(__file__).resolve().parent
# The development tools (synthetic store, benchmarks) live beside the pipelines, outside
# the installed package.
sys.path.insert(0, str(ROOT / "pipelines"))

# A schedule small enough for seconds per run: 320 images, 20 steps, evaluations at 10 and 20.
TINY = ["data.limit=320", "train.steps=20", "train.eval_every=10"]
# The same schedule on the digits MLP (the second example's plug-ins), for tests of the
# store or of processes that train many jobs or long schedules where the model does not
# matter: a job costs about half the CPU of a tiny CNN job (1.9 vs 3.4 CPU-seconds in one
# process, most of it tracing the functions).
LIGHT = [*TINY, "model=mlp", "data=digits"]

register_configs()

# Tests choose their own stores; a developer's or `mlflow run`'s settings must not leak in.
for _name in (
    "MLFLOW_TRACKING_URI",
    "MLFLOW_RUN_ID",
    "MLFLOW_EXPERIMENT_ID",
    "MLFLOW_EXPERIMENT_NAME",
):
    os.environ.pop(_name, None)


def compose_config(overrides: list[str]) -> DictConfig:
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(config_name="config", overrides=overrides)


@pytest.fixture(scope="session")
def template_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An empty MLflow store, its schema created once per test process (about 2 s)."""
    folder = tmp_path_factory.mktemp("template-store")
    MlflowClient(tracking_uri=f"sqlite:///{folder}/mlflow.db").search_experiments()
    return folder / "mlflow.db"


def copy_store(template: Path, folder: Path) -> Path:
    """`folder/mlflow.db`, a copy of the empty template store, as a store created in
    `folder` would be (the Default experiment's artifacts under `folder/mlruns`)."""
    target = folder / "mlflow.db"
    shutil.copyfile(template, target)
    with contextlib.closing(sqlite3.connect(target)) as db, db:
        db.execute(
            "UPDATE experiments SET artifact_location = ? WHERE experiment_id = 0",
            (str(folder / "mlruns" / "0"),),
        )
    return target


@pytest.fixture
def store_uri(tmp_path: Path, template_store: Path) -> str:
    """A store in tmp_path, the one `python src/train.py` run there uses by default. It
    starts as a copy of the empty template: these tests are not about creating a store."""
    copy_store(template_store, tmp_path)
    return f"sqlite:///{tmp_path}/mlflow.db"


@pytest.fixture
def tiny_cfg(store_uri: str) -> Callable[..., DictConfig]:
    """Composes the real config with a tiny schedule and a temporary SQLite store."""

    def make(*overrides: str) -> DictConfig:
        return compose_config([*TINY, f"tracking.uri={store_uri}", *overrides])

    return make


@pytest.fixture
def client(store_uri: str) -> MlflowClient:
    return MlflowClient(tracking_uri=store_uri)


def experiment_runs(client: MlflowClient, name: str = "bn-trick") -> list:
    experiment = client.get_experiment_by_name(name)
    assert experiment is not None, f"experiment {name} was not created"
    return client.search_runs([experiment.experiment_id], max_results=1000)


def _train_env(env: dict | None) -> dict[str, str]:
    """The environment of a user's shell, with the tests' own Hydra callbacks importable."""
    # A None value in `env` unsets that variable.
    full_env = {**os.environ, "HYDRA_FULL_ERROR": "", **(env or {})}
    full_env = {key: value for key, value in full_env.items() if value is not None}
    full_env.pop("HYDRA_FULL_ERROR")
    # MLflow runs extra checks of its own when it sees it is under pytest.
    full_env.pop("PYTEST_CURRENT_TEST", None)
    # fault_injection must be importable in every job process.
    full_env["PYTHONPATH"] = os.pathsep.join(
        [str(TESTS_DIR), *filter(None, [full_env.get("PYTHONPATH")])]
    )
    return full_env


def run_train(
    args: list[str], cwd: Path, env: dict | None = None, timeout: int = 600, **kwargs
) -> subprocess.CompletedProcess:
    """Runs `python src/train.py ARGS` in `cwd`, the way a user does."""
    return subprocess.run(
        [sys.executable, str(TRAIN_SCRIPT), *args],
        cwd=cwd,
        env=_train_env(env),
        capture_output=True,
        text=True,
        timeout=timeout,
        **kwargs,
    )


class ForkRunner:
    """A preloaded interpreter (tests/forkrun.py), one per test process, that runs each
    command in a fresh fork: for bad-input cases, which exit before any work and would
    otherwise spend most of their time importing Hydra and MLflow."""

    def __init__(self) -> None:
        self.process: subprocess.Popen | None = None
        # CPU-seconds of the forks so far (not this process's children: the CI budget adds it).
        self.cpu = 0.0

    def _start(self) -> subprocess.Popen:
        if self.process is None or self.process.poll() is not None:
            self.process = subprocess.Popen(
                [sys.executable, str(TESTS_DIR / "forkrun.py")],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                env=_train_env(None),
                text=True,
            )
            assert json.loads(self.process.stdout.readline()) == {"ready": True}
        return self.process

    def run(
        self, argv: list[str], cwd: Path, env: dict[str, str], timeout: float
    ) -> subprocess.CompletedProcess:
        """`python ARGV` in `cwd` with exactly `env`, as a completed process."""
        server = self._start()
        with tempfile.TemporaryDirectory(prefix="bnlab-fork-") as folder:
            out, err = Path(folder) / "stdout", Path(folder) / "stderr"
            request = {
                "argv": [str(arg) for arg in argv],
                "cwd": str(cwd),
                "env": env,
                "stdout": str(out),
                "stderr": str(err),
                "timeout": timeout,
            }
            server.stdin.write(json.dumps(request) + "\n")
            server.stdin.flush()
            reply = json.loads(server.stdout.readline())
            self.cpu += reply["cpu"]
            command = [sys.executable, *argv]
            if reply["returncode"] == -signal.SIGKILL:
                raise subprocess.TimeoutExpired(command, timeout)
            return subprocess.CompletedProcess(
                command, reply["returncode"], out.read_text(), err.read_text()
            )

    def stop(self) -> None:
        if self.process is not None:
            self.process.stdin.close()
            self.process.wait(timeout=30)


FORKS = ForkRunner()


def run_train_forked(
    args: list[str], cwd: Path, env: dict | None = None, timeout: int = 120
) -> subprocess.CompletedProcess:
    """`python src/train.py ARGS` in `cwd` for a case that exits before any work: run in a
    fork of a preloaded interpreter, with the same argv, folder, environment, output and
    exit status as `run_train`."""
    return FORKS.run([str(TRAIN_SCRIPT), *args], cwd, _train_env(env), timeout)


def run_forked(
    argv: list[str], cwd: Path, env: dict | None = None, timeout: int = 120
) -> subprocess.CompletedProcess:
    """`python ARGV` (a script, or `-m MODULE`) in a fork of the preloaded interpreter."""
    return FORKS.run(argv, cwd, _train_env(env), timeout)


def start_train(args: list[str], cwd: Path, env: dict | None = None, **kwargs) -> subprocess.Popen:
    """Starts `python src/train.py ARGS` in `cwd` in the background (output as text)."""
    return subprocess.Popen(
        [sys.executable, str(TRAIN_SCRIPT), *args],
        cwd=cwd,
        env=_train_env(env),
        text=True,
        **kwargs,
    )


def wait_for(condition: Callable[[], bool], timeout: float = 300, interval: float = 0.3) -> None:
    """Polls `condition` until it holds; raises TimeoutError after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(interval)
    raise TimeoutError("condition not reached")


STACK_SCRIPT = ROOT / "pipelines" / "tracking_stack.py"


def stack_command(action: str, folder: Path, *extra: str) -> subprocess.CompletedProcess:
    """`python pipelines/tracking_stack.py ACTION --dir FOLDER`: the command users type."""
    # The server starts as from a user's shell: MLflow adds checks of its own under pytest.
    env = {key: value for key, value in os.environ.items() if key != "PYTEST_CURRENT_TEST"}
    return subprocess.run(
        [sys.executable, str(STACK_SCRIPT), action, "--dir", str(folder), *extra],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )


@pytest.fixture
def stack_env(tracking_stack, monkeypatch) -> dict[str, str]:
    """The admin's shell, set up with `tracking_stack.py env`: for this process's
    MlflowClient, and to pass to the commands a test runs."""
    from bnlab.stack import environment

    variables = environment(tracking_stack)
    for key, value in variables.items():
        monkeypatch.setenv(key, value)
    return variables


@pytest.fixture(scope="session")
def tracking_stack():
    """A real PostgreSQL + MLflow server stack on loopback ports, for the whole session.

    Started and stopped with the project's own command. PostgreSQL is required in
    CI (`.ci/run` installs it); elsewhere the tests that need it are skipped without it.
    """
    import shutil
    import tempfile

    from bnlab import stack

    try:
        stack._pg_binary("initdb")
        import psycopg  # noqa: F401  (the cluster extra's driver)
    except (stack.StackError, ImportError) as error:
        if os.environ.get("CI"):
            raise
        pytest.skip(str(error))
    # Outside pytest's private temp folder: as root, PostgreSQL runs as `postgres`.
    folder = Path(tempfile.mkdtemp(prefix="bnlab-stack-")) / "stack"
    folder.parent.chmod(0o711)
    started = stack_command("up", folder, "--workers", "2")
    assert started.returncode == 0, started.stderr
    found = stack.Stack.load(folder)
    previous = os.environ.get("PGPASSFILE")
    os.environ["PGPASSFILE"] = str(found.pgpass)
    yield found
    stack_command("down", folder)
    if previous is None:
        os.environ.pop("PGPASSFILE", None)
    shutil.rmtree(folder.parent, ignore_errors=True)


def runs_by_role(client: MlflowClient, experiment: str = "bn-trick") -> dict[str, list]:
    """An experiment's runs grouped by their `role` tag: sweep, search, job, report."""
    grouped: dict[str, list] = {}
    for run in experiment_runs(client, experiment):
        grouped.setdefault(run.data.tags.get("role"), []).append(run)
    return grouped


def sweep_runs(client: MlflowClient) -> tuple[list, list]:
    """A store's parent runs (sweeps and searches) and job runs."""
    roles = runs_by_role(client)
    return roles.get("sweep", []) + roles.get("search", []), roles.get("job", [])


@contextmanager
def serve(command: list[str], port: int, log: Path | None = None, env: dict | None = None):
    """Starts a server process, yields once it listens on `port`, and stops it."""
    out = open(log, "w") if log else subprocess.DEVNULL  # noqa: SIM115  (closed below)
    server = subprocess.Popen(
        command, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True
    )

    def listening() -> bool:
        assert server.poll() is None, log.read_text() if log else "the server exited"
        with socket.socket() as probe:
            return probe.connect_ex(("127.0.0.1", port)) == 0

    try:
        wait_for(listening, timeout=120)
        yield server
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)
        if log:
            out.close()


def disrupt_mid_sweep(
    args: list[str],
    cwd: Path,
    client: MlflowClient,
    act: Callable,
    env: dict | None = None,
    experiment: str = "bn-trick",
    hold: bool = False,
    hold_only: tuple[str, str] | None = None,
    keep_held: bool = False,
) -> tuple[int, str, str]:
    """Starts a sweep, calls `act(run)` once a job run is training (RUNNING, with an
    evaluation logged), and returns the sweep's exit status, stdout and stderr.

    With `hold`, every job waits after its first evaluation until `act` has run
    (`fault_injection.HoldAfterFirstEvaluation`), so the disruption lands mid-run
    however fast the jobs are; the jobs' processes must import the tests' folder.
    With `hold_only` (a config key that is also a run param, and a value), only the jobs
    with that value wait and `act` gets one of them: the disrupted job is mid-run however
    short its schedule, and the others run through. With `keep_held` too, they wait until
    the sweep ends (or the hold's limit), for a disruption that takes effect later.
    """
    search = "tags.role = 'job' and attributes.status = 'RUNNING'"
    if hold_only is not None:
        search += f" and params.`{hold_only[0]}` = '{hold_only[1]}'"

    def training():
        found = client.get_experiment_by_name(experiment)
        if found is None:
            return None
        for run in client.search_runs([found.experiment_id], search):
            if client.get_metric_history(run.info.run_id, "val/accuracy"):
                return run
        return None

    found = []

    def is_training() -> bool:
        found[:] = [training()]
        return found[0] is not None

    gate = Path(tempfile.mkdtemp(prefix="bnlab-gate-")) / "open"
    if hold or hold_only is not None:
        from fault_injection import hold_until

        args = [*args, *hold_until(str(gate), *(hold_only or ()))]
    sweep = start_train(args, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        wait_for(is_training, timeout=240)
        act(found[0])
        if not keep_held:
            gate.touch()
        out, err = sweep.communicate(timeout=400)
    finally:
        gate.touch()
        sweep.kill()
        shutil.rmtree(gate.parent, ignore_errors=True)
    return sweep.returncode, out, err


# --- The CI budget: per test, its wall time, its CPU-seconds (its own process and the
# processes it started and reaped), the Python processes it started and the processes
# that imported TensorFlow (tests/sitecustomize.py notes them in a file per test process);
# written to $BNLAB_DURATIONS (JSON) by the controlling process, read by .ci/budget.py.
_BUDGET_FILE = os.environ.get("BNLAB_DURATIONS")
_started: list[int] = []


def _tf_imports() -> int:
    """Processes other than this one that imported TensorFlow since this process began."""
    log = os.environ.get("BNLAB_TF_IMPORT_LOG")
    if not log or not os.path.exists(log):
        return 0
    own = str(os.getpid())
    return sum(line.strip() != own for line in Path(log).read_text().splitlines())


if _BUDGET_FILE:
    # Every process the tests start finds tests/sitecustomize.py and notes its import.
    os.environ["BNLAB_TF_IMPORT_LOG"] = str(
        Path(tempfile.gettempdir()) / f"bnlab-tf-imports-{os.getpid()}.log"
    )
    os.environ["PYTHONPATH"] = os.pathsep.join(
        [str(TESTS_DIR), *filter(None, [os.environ.get("PYTHONPATH")])]
    )


def _count_python_starts() -> None:
    """Counts, in `_started`, each Python (or bnlab) process this test process starts."""
    original = subprocess.Popen.__init__

    def counting(self, args, *rest, **kwargs):
        words = [args] if isinstance(args, str | bytes | os.PathLike) else list(args)
        first = os.path.basename(str(words[0])) if words else ""
        if "python" in first or first == "bnlab":
            _started.append(1)
        original(self, args, *rest, **kwargs)

    subprocess.Popen.__init__ = counting


if _BUDGET_FILE:
    _count_python_starts()


# --- CPU-heavy tests never overlap. The two CPU-bound giants (the claims suite, the eight
# writers) each fill both cores; beside each other both slow down by half and pass their
# caps. A test marked `cpu_heavy` holds a lock shared by the xdist workers for its whole
# protocol, so the other waits; the wait is recorded, and .ci/budget.py fails a run in
# which two heavy tests overlapped anyway.
_HEAVY_LOCK = Path(tempfile.gettempdir()) / (
    f"bnlab-cpu-heavy-{os.environ.get('PYTEST_XDIST_TESTRUNUID', os.getpid())}.lock"
)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    if item.get_closest_marker("cpu_heavy") is None:
        yield
        return
    import fcntl

    with open(_HEAVY_LOCK, "a") as lock:
        waited = time.monotonic()
        fcntl.flock(lock, fcntl.LOCK_EX)
        item._heavy_wait = round(time.monotonic() - waited, 1)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    if not _BUDGET_FILE:
        return
    import resource

    usage = [resource.getrusage(who) for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)]
    cpu = sum(part.ru_utime + part.ru_stime for part in usage) + FORKS.cpu
    if call.when == "setup":
        item._budget = (cpu, len(_started), _tf_imports())
    elif call.when == "teardown" and hasattr(item, "_budget"):
        report = outcome.get_result()
        report.user_properties.append(("budget_cpu", round(cpu - item._budget[0], 2)))
        report.user_properties.append(("budget_python", len(_started) - item._budget[1]))
        report.user_properties.append(("budget_tf", _tf_imports() - item._budget[2]))
        if hasattr(item, "_heavy_wait"):
            report.user_properties.append(("heavy_wait", item._heavy_wait))


_budget_rows: dict[str, dict] = {}
_SESSION_START = time.monotonic()


def pytest_runtest_logreport(report) -> None:
    if not _BUDGET_FILE:
        return
    nodeid, _, scheduled = report.nodeid.partition("@")  # loadgroup's suffix: its group
    row = _budget_rows.setdefault(
        report.nodeid,
        {
            "wall": 0.0,
            "cpu": 0.0,
            "python": 0,
            "tensorflow": 0,
            "group": _group(nodeid),
            "scheduled_group": scheduled or None,
        },
    )
    row["wall"] = round(row["wall"] + report.duration, 2)
    properties = dict(report.user_properties)
    node = getattr(report, "node", None)  # xdist's worker, on the controlling process
    if node is not None:
        row["worker"] = node.gateway.id
    if report.when == "teardown":
        # When it ended, from the session's start: the workers' timelines, and their idle ends.
        row["ended"] = round(time.monotonic() - _SESSION_START, 1)
        row["cpu"] = properties.get("budget_cpu", 0.0)
        row["python"] = properties.get("budget_python", 0)
        row["tensorflow"] = properties.get("budget_tf", 0)
        if "heavy_wait" in properties:
            row["heavy_wait"] = properties["heavy_wait"]
    if report.failed:
        row["failed"] = True


def pytest_sessionfinish(session, exitstatus) -> None:
    FORKS.stop()
    if not _BUDGET_FILE:
        return
    with contextlib.suppress(OSError):
        os.unlink(os.environ["BNLAB_TF_IMPORT_LOG"])
    if hasattr(session.config, "workerinput"):
        return
    import json

    start = getattr(session.config, "_budget_start", None)
    Path(_BUDGET_FILE).write_text(
        json.dumps(
            {
                "suite_wall": round(time.monotonic() - start, 1) if start else None,
                "dist": session.config.getoption("dist", None),
                "tests": _budget_rows,
            },
            indent=1,
        )
    )


def pytest_configure(config) -> None:
    config._budget_start = time.monotonic()


# --- Scheduling (pytest-xdist, --dist loadgroup, --no-loadscope-reorder). Tests that
# share a server or cluster (session- or module-scoped fixtures) form a group that one
# worker runs in order; the others are spread one test at a time, in the order below.
# test_stack.py shares one tracking stack (a module fixture). Ray's tests join the access
# group: `ray stop --force` in their fixture would stop the Ray node that
# test_stack_access.py starts in a network namespace. The CPU-heavy tests are not grouped:
# a group runs in order on one worker, and the claims suite, the eight writers and a full
# disk in one group made a chain longer than all the other worker's tests.
GROUPS = {
    "tests/test_stack.py": "stack",
    "tests/test_stack_access.py": "access",
    "tests/test_search.py": "access",
    "tests/test_ray.py": "access",
    "tests/test_slurm.py": "slurm",
}
# The longest test, sent first.
LONGEST = "tests/test_claims.py::test_a_tiny_claims_suite"


def _group(nodeid: str) -> str | None:
    return GROUPS.get(nodeid.split("::")[0])


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config, items) -> None:
    """Groups tests for loadgroup, and sends the longest work first: the claims suite, the
    groups (the longest first), then the slow tests, then the rest.

    First: xdist's worker reads the groups in its own hook, registered after this file, so
    without `tryfirst` it would run before the marks exist and ignore every group."""
    for item in items:
        group = _group(item.nodeid)
        if group:
            item.add_marker(pytest.mark.xdist_group(group))
    order = {"access": 1, "stack": 2, "slurm": 3}

    def rank(item) -> int:
        if item.nodeid.startswith(LONGEST):
            return 0
        return order.get(_group(item.nodeid) or "", 4 if item.get_closest_marker("slow") else 5)

    items.sort(key=rank)
