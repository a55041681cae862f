"""Who may do what on the shared tracking stack: accounts from MLflow's basic-auth app,
TLS through nginx, and a database that only the named cluster nodes reach. Real
PostgreSQL, MLflow server and nginx processes, started with `tracking_stack.py`."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import requests
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from bnlab.tracking import spool
from conftest import ROOT, TINY, experiment_runs, run_train, stack_command, start_train

pytestmark = pytest.mark.slow


def shell_of(folder: Path, *account: str) -> dict[str, str]:
    """What `eval "$(tracking_stack.py env ...)"` sets, read from the command's output."""
    done = stack_command("env", folder, *account)
    assert done.returncode == 0, done.stderr
    variables = {}
    for line in done.stdout.splitlines():
        key, value = line.removeprefix("export ").split("=", 1)
        variables[key] = shlex.split(value)[0]
    return variables


def add_user(folder: Path, name: str, *flags: str) -> tuple[str, Path]:
    """Adds an account with a generated password; returns it and the printed file's path."""
    done = stack_command("user", folder, "add", name, *flags)
    assert done.returncode == 0, done.stderr
    [path] = [Path(word) for word in done.stdout.split() if word.endswith(".password")]
    assert path.stat().st_mode & 0o777 == 0o600
    return path.read_text().strip(), path


@pytest.fixture(scope="module")
def accounts(tracking_stack) -> dict[str, tuple[str, Path]]:
    return {
        "alice": add_user(tracking_stack.root, "alice"),
        "bruno": add_user(tracking_stack.root, "bruno"),
        "reader": add_user(tracking_stack.root, "reader", "--read-only"),
    }


def client_as(monkeypatch, uri: str, user: str | None, password: str | None) -> MlflowClient:
    for key, value in (("USERNAME", user), ("PASSWORD", password)):
        if value is None:
            monkeypatch.delenv(f"MLFLOW_TRACKING_{key}", raising=False)
        else:
            monkeypatch.setenv(f"MLFLOW_TRACKING_{key}", value)
    return MlflowClient(tracking_uri=uri)


def status_of(error: MlflowException) -> int:
    return error.get_http_status_code()


def test_no_account_or_a_wrong_password_gets_401_from_the_api_and_the_artifact_proxy(
    tracking_stack, accounts
) -> None:
    uri = tracking_stack.tracking_uri
    artifact = f"{uri}/api/2.0/mlflow-artifacts/artifacts/0/probe.txt"
    for auth in (None, ("alice", "not-her-password-at-all")):
        api = requests.get(f"{uri}/api/2.0/mlflow/experiments/search?max_results=5", auth=auth)
        download = requests.get(artifact, auth=auth)
        upload = requests.put(artifact, data=b"x", auth=auth)
        assert [api.status_code, download.status_code, upload.status_code] == [401] * 3
    password, _ = accounts["alice"]
    api = requests.get(
        f"{uri}/api/2.0/mlflow/experiments/search?max_results=5", auth=("alice", password)
    )
    assert api.status_code == 200
    # --allowed-hosts: a Host header the stack was not given is refused (DNS rebinding).
    rebound = requests.get(
        f"{uri}/api/2.0/mlflow/experiments/search?max_results=5",
        auth=("alice", password),
        headers={"Host": "attacker.example"},
    )
    assert rebound.status_code == 403


def test_a_read_only_account_reads_but_cannot_write_and_no_one_deletes_anothers_experiment(
    tracking_stack, accounts, monkeypatch, tmp_path: Path
) -> None:
    uri = tracking_stack.tracking_uri
    alice = client_as(monkeypatch, uri, "alice", accounts["alice"][0])
    owned = alice.create_experiment(f"alice-{tmp_path.name}")
    run = alice.create_run(owned).info.run_id
    alice.log_metric(run, "val/accuracy", 0.5, step=1)
    alice.log_text(run, "alice's notes", "notes.txt")

    reader = client_as(monkeypatch, uri, "reader", accounts["reader"][0])
    assert reader.get_run(run).data.metrics["val/accuracy"] == 0.5
    note = reader.download_artifacts(run, "notes.txt", str(tmp_path))
    assert Path(note).read_text() == "alice's notes"
    refused = [
        lambda: reader.create_run(owned),
        lambda: reader.log_metric(run, "val/accuracy", 0.9, step=2),
        lambda: reader.delete_experiment(owned),
    ]
    for attempt in refused:
        with pytest.raises(MlflowException) as denied:
            attempt()
        assert status_of(denied.value) == 403
    upload = requests.put(
        f"{uri}/api/2.0/mlflow-artifacts/artifacts/{owned}/{run}/artifacts/x.txt",
        data=b"x",
        auth=("reader", accounts["reader"][0]),
    )
    assert upload.status_code == 403

    # Another writer adds runs to alice's experiment, but cannot delete it.
    bruno = client_as(monkeypatch, uri, "bruno", accounts["bruno"][0])
    bruno.set_terminated(bruno.create_run(owned).info.run_id)
    with pytest.raises(MlflowException) as denied:
        bruno.delete_experiment(owned)
    assert status_of(denied.value) == 403
    alice = client_as(monkeypatch, uri, "alice", accounts["alice"][0])
    assert alice.get_experiment(owned).lifecycle_stage == "active"

    listed = stack_command("user", tracking_stack.root, "list")
    assert listed.returncode == 0, listed.stderr
    roles = dict(line.split("\t") for line in listed.stdout.splitlines())
    assert roles["admin"] == "admin" and roles["alice"] == "writer"
    assert roles["reader"] == "read-only"


def test_passwd_changes_a_password_read_from_a_file_and_refuses_a_short_one(
    tracking_stack, accounts, tmp_path: Path
) -> None:
    search = f"{tracking_stack.tracking_uri}/api/2.0/mlflow/experiments/search?max_results=1"
    old = ("bruno", accounts["bruno"][0])
    # Each request on a new connection: every worker trusts the old password (60 s cache).
    assert tracking_stack.workers > 1 and tracking_stack.auth_cache_seconds > 0
    assert {requests.get(search, auth=old).status_code for _ in range(12)} == {200}
    new = tmp_path / "bruno.password"
    new.write_text("a-new-password-for-bruno\n")
    changed = stack_command(
        "user", tracking_stack.root, "passwd", "bruno", "--password-file", str(new)
    )
    assert changed.returncode == 0, changed.stderr
    assert requests.get(search, auth=("bruno", "a-new-password-for-bruno")).status_code == 200
    # No worker trusts the old one any longer: `passwd` emptied their caches.
    assert {requests.get(search, auth=old).status_code for _ in range(12)} == {401}
    short = tmp_path / "short.password"
    short.write_text("short\n")
    refused = stack_command(
        "user", tracking_stack.root, "passwd", "bruno", "--password-file", str(short)
    )
    assert refused.returncode == 2
    assert refused.stderr.startswith("error: --password-file") and "12" in refused.stderr


def test_a_sweep_a_search_on_postgresql_and_a_report_run_on_the_environment_alone(
    tracking_stack, accounts, monkeypatch, tmp_path: Path
) -> None:
    password, password_file = accounts["alice"]
    shell = shell_of(tracking_stack.root, "--user", "alice", "--password-file", str(password_file))
    assert shell["MLFLOW_TRACKING_USERNAME"] == "alice"
    assert shell["MLFLOW_TRACKING_PASSWORD"] == password
    env = {**{key: None for key in os.environ if key.startswith("MLFLOW_")}, **shell}
    experiment = f"env-only-{tmp_path.name}"
    sweep = start_train(
        ["-m", "bn=true,false", *TINY, "tracking=server", f"tracking.experiment={experiment}"],
        cwd=tmp_path,
        env=env,
        stdout=open(tmp_path / "sweep.log", "w"),  # noqa: SIM115  (the child writes it)
        stderr=subprocess.STDOUT,
    )
    # While it runs, no process's command line shows a password.
    secrets = [
        password,
        tracking_stack.admin_password_file.read_text().strip(),
        tracking_stack.pgpass.read_text().strip().rsplit(":", 1)[1],
    ]
    listings = []
    while sweep.poll() is None:
        listings.append(
            subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
        )
        time.sleep(1)
    out = (tmp_path / "sweep.log").read_text()
    assert sweep.returncode == 0, out[-3000:]
    assert len(listings) >= 3
    search = run_train(
        [
            "-m",
            "hparams_search=lr_bn",
            *TINY,
            "hydra.sweeper.n_trials=2",
            "tracking=server",
            f"tracking.experiment={experiment}",
            f"hydra.sweeper.storage={tracking_stack.database_uri('optuna')}",
            f"hydra.sweeper.study_name=env-only-{tmp_path.name}",
        ],
        cwd=tmp_path,
        env=env,
    )
    assert search.returncode == 0, search.stderr[-3000:]
    report = subprocess.run(
        [
            sys.executable,
            str(ROOT / "pipelines" / "report.py"),
            "--experiment",
            experiment,
            "--out",
            str(tmp_path / "report"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env={key: value for key, value in {**os.environ, **env}.items() if value is not None},
    )
    assert report.returncode == 0, report.stderr[-3000:]

    # A run kept offline is recorded by sync.py with the same environment.
    kept = spool.Journal(
        experiment=experiment,
        store=tracking_stack.tracking_uri,
        run_id="0" * 32,
        name="kept offline",
        start_time=1_700_000_000_000,
        end_time=1_700_000_060_000,
        status="FINISHED",
        params={"lr": "0.01"},
        tags={"role": "job", "outcome": "finished", "identity": "kept-offline"},
        metrics=[("val/accuracy", 0.5, 1, 10)],
        texts={"config.yaml": "lr: 0.01\n"},
        blobs={},
    )
    kept.save(tmp_path / "unsent")
    synced = subprocess.run(
        [sys.executable, str(ROOT / "pipelines" / "sync.py"), str(tmp_path / "unsent")],
        capture_output=True,
        text=True,
        timeout=300,
        env={key: value for key, value in {**os.environ, **env}.items() if value is not None},
    )
    assert synced.returncode == 0, synced.stderr[-3000:]

    client = client_as(monkeypatch, tracking_stack.tracking_uri, "alice", password)
    runs = experiment_runs(client, experiment)
    assert "kept offline" in {run.info.run_name for run in runs}
    jobs = [run for run in runs if run.data.tags.get("role") == "job"]
    assert len(jobs) >= 3 and {run.info.user_id for run in runs} == {"alice"}
    shown = [out, search.stdout, search.stderr, report.stdout, report.stderr, *listings]
    shown += [synced.stdout, synced.stderr]
    for run in jobs:
        for item in client.list_artifacts(run.info.run_id):
            if item.path.endswith((".yaml", ".json", ".log", ".txt")):
                path = client.download_artifacts(run.info.run_id, item.path, str(tmp_path))
                shown.append(Path(path).read_text())
    for secret in secrets:
        assert not [line for text in shown for line in text.splitlines() if secret in line]
        for run in runs:
            recorded = [run.info.run_name, *run.data.params.values(), *run.data.tags.values()]
            assert not [value for value in recorded if secret in str(value)]
    # Nothing the project wrote holds one: the run folder, and the stack's folder
    # outside its 0600 secret files (logs, configs, the database's own files).
    for folder in (tmp_path, tracking_stack.root):
        for path in folder.rglob("*"):
            if not path.is_file() or path.stat().st_mode & 0o077 == 0:
                continue
            data = path.read_bytes()
            assert not [s for s in secrets if s.encode() in data], path


def test_a_stack_off_loopback_without_accounts_is_refused_before_anything_starts(
    tmp_path: Path,
) -> None:
    folder = tmp_path / "open"
    done = stack_command("up", folder, "--host", "0.0.0.0", "--no-auth")
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [done.stderr.strip()]
    assert done.stderr.startswith("error: --no-auth with --host 0.0.0.0")
    assert not folder.exists()


NODE = ("bnlab-node", "10.231.7.1", "10.231.7.2")


@pytest.fixture
def node():
    """A second host on this machine (a network namespace on a veth pair), as a cluster node."""
    if os.geteuid() != 0:
        pytest.skip("a network namespace needs root (CI runs as root)")
    name, host_ip, node_ip = NODE
    commands = [
        ["ip", "netns", "add", name],
        ["ip", "link", "add", "bnlab-h", "type", "veth", "peer", "name", "bnlab-n"],
        ["ip", "link", "set", "bnlab-n", "netns", name],
        ["ip", "addr", "add", f"{host_ip}/24", "dev", "bnlab-h"],
        ["ip", "link", "set", "bnlab-h", "up"],
        ["ip", "netns", "exec", name, "ip", "addr", "add", f"{node_ip}/24", "dev", "bnlab-n"],
        ["ip", "netns", "exec", name, "ip", "link", "set", "bnlab-n", "up"],
    ]
    try:
        for command in commands:
            subprocess.run(command, check=True, capture_output=True)
        yield name, host_ip, node_ip
    finally:
        subprocess.run(["ip", "link", "del", "bnlab-h"], capture_output=True)
        subprocess.run(["ip", "netns", "del", name], capture_output=True)


def _psql(database: str, host: str, port: int, pgpass: Path, netns: str | None = None):
    command = [
        "psql",
        "-h",
        host,
        "-p",
        str(port),
        "-U",
        "bnlab",
        "-d",
        database,
        "-tAc",
        "SELECT 1",
    ]
    if netns:
        command = ["ip", "netns", "exec", netns, *command]
    return subprocess.run(
        command, capture_output=True, text=True, env={**os.environ, "PGPASSFILE": str(pgpass)}
    )


def test_an_old_stack_gains_accounts_tls_and_a_node_address_without_losing_a_run(
    node, monkeypatch
) -> None:
    netns, host_ip, node_ip = node
    folder = Path(tempfile.mkdtemp(prefix="bnlab-old-stack-")) / "stack"
    folder.parent.chmod(0o711)
    try:
        # A stack as this project made them before accounts: no auth, and a stack.json
        # without the fields that came later.
        old = stack_command("up", folder, "--no-auth", "--workers", "1")
        assert old.returncode == 0, old.stderr
        state = json.loads((folder / "stack.json").read_text())
        before_fields = ("folder", "host", "port", "pg_port", "workers", "server_pid")
        (folder / "stack.json").write_text(json.dumps({k: state[k] for k in before_fields}))
        plain_uri = f"http://127.0.0.1:{state['port']}"
        client = client_as(monkeypatch, plain_uri, None, None)
        kept = client.create_run(client.create_experiment("kept")).info.run_id
        client.log_metric(kept, "val/accuracy", 0.5, step=10)
        client.set_terminated(kept)

        upgraded = stack_command(
            "up", folder, "--tls", "--db-host", host_ip, "--db-allow", f"{node_ip}/32"
        )
        assert upgraded.returncode == 0, upgraded.stderr
        shell = shell_of(folder)
        uri, cert = shell["MLFLOW_TRACKING_URI"], shell["MLFLOW_TRACKING_SERVER_CERT_PATH"]
        assert uri.startswith("https://")
        # Accounts are on: the plain port now asks who is there.
        search = f"{plain_uri}/api/2.0/mlflow/experiments/search?max_results=5"
        assert requests.get(search).status_code == 401
        admin = (shell["MLFLOW_TRACKING_USERNAME"], shell["MLFLOW_TRACKING_PASSWORD"])

        # Through the proxy: a client with the certificate gets the old run back...
        monkeypatch.setenv("MLFLOW_TRACKING_SERVER_CERT_PATH", cert)
        client = client_as(monkeypatch, uri, *admin)
        assert client.get_run(kept).data.metrics["val/accuracy"] == 0.5
        assert [run.info.run_id for run in experiment_runs(client, "kept")] == [kept]
        # ...and one without it fails on verification.
        monkeypatch.delenv("MLFLOW_TRACKING_SERVER_CERT_PATH")
        with pytest.raises(requests.exceptions.SSLError):
            requests.get(f"{uri}/api/2.0/mlflow/experiments/search", auth=admin, timeout=10)
        assert requests.get(
            f"{uri}/api/2.0/mlflow/experiments/search?max_results=5",
            auth=admin,
            verify=cert,
            timeout=10,
        ).ok

        # The node reaches the optuna database with the file the README says to copy,
        # and nothing else; this machine's own address outside the CIDR is refused.
        port = json.loads((folder / "stack.json").read_text())["pg_port"]
        nodes_pgpass = folder / "nodes.pgpass"
        assert nodes_pgpass.stat().st_mode & 0o777 == 0o600
        assert _psql("optuna", host_ip, port, nodes_pgpass, netns).stdout.strip() == "1"
        for database in ("mlflow", "mlflow_auth", "postgres"):
            refused = _psql(database, host_ip, port, folder / "pgpass", netns)
            assert refused.returncode != 0 and "no pg_hba.conf entry" in refused.stderr
        outside = _psql("optuna", host_ip, port, folder / "pgpass")
        assert outside.returncode != 0 and "no pg_hba.conf entry" in outside.stderr
    finally:
        stack_command("down", folder)
        subprocess.run(["rm", "-rf", str(folder.parent)])


def test_a_stack_off_loopback_without_tls_warns_that_passwords_travel_in_clear_text() -> None:
    from bnlab import stack

    shared = stack.Stack("/srv/stack", "0.0.0.0", 5000, 5432, 4)
    [warning] = stack.warnings(shared)
    assert warning.startswith("warning:") and "clear text" in warning and "--tls" in warning
    assert stack.warnings(stack.Stack("/srv/stack", "0.0.0.0", 5000, 5432, 4, tls=True)) == []
    assert stack.warnings(stack.Stack("/srv/stack", "127.0.0.1", 5000, 5432, 4)) == []
