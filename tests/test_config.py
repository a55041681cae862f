"""Every config group composes; bad overrides fail at once with one line naming the key."""

from __future__ import annotations

from pathlib import Path

import pytest
from omegaconf import OmegaConf
from omegaconf.errors import ConfigAttributeError, ValidationError

from bnlab.config import ConfigError, validate
from bnlab.config.keys import flatten
from conftest import CONF_DIR, TINY, compose_config, run_train, run_train_forked

GROUPS = {
    group: sorted(path.stem for path in (CONF_DIR / group).glob("*.yaml"))
    for group in ("model", "optimizer", "data", "train", "tracking")
}


@pytest.mark.parametrize(
    ("group", "option"),
    [(group, option) for group, options in GROUPS.items() for option in options],
)
def test_every_group_option_composes_and_validates(group: str, option: str) -> None:
    cfg = compose_config([f"{group}={option}"])
    config = validate(cfg)
    chosen = getattr(config, group)
    # The option's file, not the default, filled the group.
    expected = {
        ("tracking", "sqlite"): ("uri", "sqlite:///mlflow.db"),
        ("tracking", "server"): ("uri", "http://127.0.0.1:5000"),
        ("train", "default"): ("steps", 1000),
    }.get((group, option))
    if expected is None:
        expected = ("_target_", OmegaConf.load(CONF_DIR / group / f"{option}.yaml")._target_)
    assert getattr(chosen, expected[0]) == expected[1]
    assert config.model.bn is True and config.optimizer.learning_rate == 0.001


def test_defaults_are_the_blog_setting() -> None:
    config = validate(compose_config([]))
    assert config.optimizer._target_ == "keras.optimizers.Adam"
    assert config.train.batch_size == 32
    assert type(config.data).__name__ == "MnistSmallConfig"
    assert config.tracking.uri == "sqlite:///mlflow.db"


def test_shorthands_reach_the_groups() -> None:
    config = validate(compose_config(["bn=false", "lr=0.05", "activation=sigmoid", "seed=7"]))
    assert config.model.bn is False
    assert config.optimizer.learning_rate == 0.05
    assert config.model.activation == "sigmoid"
    assert config.train.seed == 7


def test_blog_experiment_declares_the_twelve_job_grid() -> None:
    cfg = compose_config(["+experiment=blog"])
    params = OmegaConf.load(CONF_DIR / "experiment" / "blog.yaml").hydra.sweeper.params
    assert params == {"bn": "true,false", "lr": "0.001,0.01,0.05", "activation": "relu,sigmoid"}
    assert validate(cfg).model.bn is True


@pytest.mark.parametrize(
    ("override", "error"),
    [("lr=abc", ValidationError), ("bn=maybe", ValidationError), ("nope=1", ConfigAttributeError)],
)
def test_type_errors_fail_at_composition(override: str, error: type) -> None:
    with pytest.raises(Exception) as raised:
        compose_config([override])
    assert isinstance(raised.value.__cause__ or raised.value, error)


@pytest.mark.parametrize(
    ("overrides", "key"),
    [
        (["lr=-1"], "lr"),
        (["activation=foo"], "activation"),
        (["train.steps=0"], "train.steps"),
        (["optimizer.momentum=1.5"], "optimizer.momentum"),
        (["data=mnist", "data.path=/no/such.npz"], "data.path"),
        # The plug-ins' own checks name their group's key.
        (["+experiment=digits", "model.hidden_units=[]"], "model.hidden_units"),
        (["optimizer=adamw", "optimizer.weight_decay=-1"], "optimizer.weight_decay"),
        (["+experiment=digits", "train.batch_size=1500"], "train.batch_size"),
    ],
)
def test_range_errors_name_the_key(overrides: list[str], key: str) -> None:
    with pytest.raises(ConfigError, match=rf"^{key}: "):
        validate(compose_config(overrides))


def test_bn_impl_defaults_to_the_fused_kernel_on_tensorflow_and_is_in_the_identity() -> None:
    from bnlab.job.identity import identity_hash

    fused = validate(compose_config([]))
    keras_layer = validate(compose_config(["model.bn_impl=keras"]))
    assert fused.model.bn_impl == "fused" and keras_layer.model.bn_impl == "keras"
    assert identity_hash(fused) != identity_hash(keras_layer)


def test_a_batch_that_just_fits_the_training_split_is_accepted() -> None:
    from bnlab.experiment.data import load_data

    config = validate(compose_config(["train.batch_size=3900"]))
    # The bound is never above the real split, so whatever passes validation fits it.
    assert config.data.train_images() <= len(load_data(config.data).y_train)
    assert config.data.train_images() >= 3900


def test_an_evaluation_interval_longer_than_the_run_evaluates_once_at_its_end() -> None:
    from bnlab.experiment.training import _intervals

    config = validate(compose_config(["train.steps=30", "train.eval_every=50"]))
    assert _intervals(config) == [(30, 1)]


def test_flatten_uses_dotted_keys() -> None:
    flat = flatten(compose_config([]))
    assert flat["optimizer.learning_rate"] == 0.001
    assert flat["model.filters"] == [32, 64, 64]
    assert flat["bn"] is True


BAD_INPUT = [
    (["tracking.uri=sqlite:///TMP"], "tracking.uri: TMP is a folder"),
    (["-m", "bn=true,false", "tracking.uri=sqlite:///TMP"], "tracking.uri: TMP is a folder"),
    (["model._target_=bnlab.plugins.cnn.nothing"], "model._target_"),
    (["data._target_=os.path"], "data._target_"),
    (["train.threads=-1"], "train.threads"),
    (["tracking.system_metrics_seconds=0"], "tracking.system_metrics_seconds"),
    (["lr=-1"], "lr"),
    (["lr=abc"], "lr"),
    (["bn=maybe"], "bn"),
    (["activation=foo"], "activation"),
    (["data=nope"], "data/nope"),
    (["train.steps=0"], "train.steps"),
    (["nope=1"], "nope"),
    (["data=mnist", "data.path=/no/such/mnist.npz"], "data.path"),
    (["data=mnist", "data.path=NOT_NPZ"], "data.path"),
    (["-m", "lr=0.01,-1"], "lr"),
    (["-m", "activation=relu,foo"], "activation"),
    # A shorthand and its group key that disagree would train one thing and file another.
    (["bn=true", "model.bn=false"], "bn"),
    (["lr=0.01", "optimizer.learning_rate=0.05"], "lr"),
    (["-m", "bn=true,false", "model.bn=false"], "bn"),
    # The test hook left the product: train.fail is no longer a key.
    (["train.fail=true"], "train.fail"),
    (["seed=-1"], "seed"),
    (["seed=4294967296"], "seed"),
    (["tracking.experiment="], "tracking.experiment"),
    (["tracking.experiment=" + "x" * 600], "tracking.experiment"),
    (["tracking.experiment=../../../escape_exp"], "tracking.experiment"),
    (["tracking.experiment=a/b"], "tracking.experiment"),
    (["tracking.experiment=.."], "tracking.experiment"),
    (["tracking.experiment=bell\x07name"], "tracking.experiment"),
    (["tracking.uri=sqlite:////nonexistent_dir/x.db"], "tracking.uri"),
    (["tracking.uri=sqlite:////proc/x.db"], "tracking.uri"),
    (["tracking.stale_after_seconds=1", "tracking.heartbeat_seconds=5"], "tracking.stale"),
    (["-m", "lr=interval(0.001,0.1)"], "lr"),
    (["model.bn_impl=cudnn"], "model.bn_impl"),
    # Infinity and literals that overflow to it, in every kind of float field.
    (["lr=inf"], "lr"),
    (["lr=1e400"], "lr"),
    (["optimizer.learning_rate=-inf"], "lr"),
    (["optimizer.momentum=nan"], "optimizer.momentum"),
    (["model.bn_momentum=inf"], "model.bn_momentum"),
    (["data.val_fraction=inf"], "data.val_fraction"),
    (["tracking.heartbeat_seconds=inf"], "tracking.heartbeat_seconds"),
    (["tracking.deadline_seconds=1e400"], "tracking.deadline_seconds"),
    # A batch larger than the training split, with or without data.limit.
    (["train.batch_size=100000"], "train.batch_size"),
    (["train.batch_size=4000"], "train.batch_size"),
    (["data=mnist", "train.batch_size=60000"], "train.batch_size"),
    (["train.lr_scaling=cubic"], "train.lr_scaling"),
    (["model.bn_noise=2"], "model.bn_noise"),
    (["model.norm=instance"], "model.norm"),
    (["bn=false", "model.norm=layer"], "model.norm"),
    (["bn=false", "model.bn_noise=0.1"], "model.bn_noise"),
    (["train.lr_scaling=sqrt", "train.lr_reference_batch=0"], "train.lr_reference_batch"),
    # Hydra's grammar rejects these: the line names the key and shows the value quoted.
    (["tracking.experiment=実験 BN"], "tracking.experiment: Hydra could not parse"),
    (["tracking.uri=http://[::1"], "tracking.uri: Hydra could not parse"),
    # Quoted, it parses, and the URI itself is refused.
    (['tracking.uri="http://[::1"'], "tracking.uri: not a valid URI"),
    (["tracking.uri=http://127.0.0.1:port"], "tracking.uri: not a valid URI"),
    # What the claims vary, out of range.
    (["model.bn_position=middle"], "model.bn_position"),
    (["model.init_scale=0"], "model.init_scale"),
    (["model.init_scale=inf"], "model.init_scale"),
    # A claim's side-by-side timing names a key of the config and times at least a step.
    (["claim.timing.key=model.nope"], "claim.timing.key"),
    (["claim.timing.key=model.bn_bias", "claim.timing.rounds=1"], "claim.timing.rounds"),
    (["claim.timing.key=model.bn_bias", "claim.timing.steps=0"], "claim.timing.steps"),
    # An argument the optimizer's class does not take, refused by the launcher.
    (["-m", "lr=0.01,0.02", "optimizer.momentum=0.9"], "optimizer.momentum"),
    # What the report compares must name keys of the config; the variant a true/false one.
    (["compare.variant=activation"], "compare.variant"),
    (["compare.variant=nope"], "compare.variant"),
    (["compare.cell=[activation,nope]"], "compare.cell"),
    (["compare.cell=[lr]"], "compare.cell"),
    # A variant with several sides names each one VALUE: LABEL (here: the two BN labels).
    (["compare.variant=model.norm"], "compare.labels"),
    (["compare.variant=bn+model.nope"], "compare.variant"),
    # Launcher settings, before the sweep's parent run is recorded.
    (["-m", "bn=true,false", "hydra/launcher=joblib", "hydra.launcher.n_jobs=0"], "n_jobs"),
    (["-m", "bn=true,false", "hydra/launcher=joblib", "hydra.launcher.n_jobs=-99"], "n_jobs"),
    (
        [
            "-m",
            "bn=true,false",
            "hydra/launcher=ray_cluster",
            "hydra.launcher.ray.remote.num_cpus=0",
        ],
        "hydra.launcher.ray.remote.num_cpus",
    ),
    (
        [
            "-m",
            "bn=true,false",
            "hydra/launcher=ray_cluster",
            "hydra.launcher.ray.remote.num_gpus=-1",
        ],
        "hydra.launcher.ray.remote.num_gpus",
    ),
    (
        ["-m", "bn=true,false", "hydra/launcher=slurm", "hydra.launcher.cpus_per_task=0"],
        "cpus_per_task",
    ),
    (["-m", "bn=true,false", "hydra/launcher=slurm", "hydra.launcher.mem_gb=0"], "mem_gb"),
    (
        ["-m", "bn=true,false", "hydra/launcher=slurm", "hydra.launcher.timeout_min=0"],
        "timeout_min",
    ),
]


@pytest.mark.parametrize(("args", "key"), BAD_INPUT, ids=[" ".join(a) for a, _ in BAD_INPUT])
def test_bad_input_exits_with_one_line_before_any_work(
    args: list[str], key: str, tmp_path: Path
) -> None:
    not_npz = tmp_path / "junk.npz"
    not_npz.write_text("not an archive")
    args = [arg.replace("NOT_NPZ", str(not_npz)).replace("TMP", str(tmp_path)) for arg in args]
    done = run_train_forked(args, cwd=tmp_path)
    assert done.returncode == 2, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, done.stderr
    assert key.replace("TMP", str(tmp_path)) in lines[0]
    assert "Traceback" not in done.stderr
    # Nothing was recorded: no tracking store, no job ran.
    assert not (tmp_path / "mlflow.db").exists()
    assert not Path("/nonexistent_dir").exists()


@pytest.mark.parametrize("sweep", [[], ["-m", "bn=true,false"]], ids=["run", "sweep"])
@pytest.mark.parametrize("backend", ["torch", "nonsense"])
def test_a_backend_that_is_not_installed_is_one_line_before_a_store_exists(
    tmp_path: Path, backend: str, sweep: list[str]
) -> None:
    done = run_train_forked([*sweep, "train.steps=5"], tmp_path, env={"KERAS_BACKEND": backend})
    assert done.returncode == 2, done.stderr
    [line] = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert line.startswith("error: KERAS_BACKEND") and "Traceback" not in done.stderr
    if backend == "torch":
        assert "not installed (pip install torch)" in line
    assert not (tmp_path / "mlflow.db").exists()


def test_an_unparseable_value_is_shown_quoted_the_way_that_works(tmp_path: Path) -> None:
    done = run_train_forked(["tracking.experiment=実験 BN"], cwd=tmp_path)
    [line] = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert line == (
        "error: tracking.experiment: Hydra could not parse 実験 BN; quote it: "
        """'tracking.experiment="実験 BN"'"""
    )


@pytest.mark.parametrize("sweep", [[], ["-m", "bn=true,false"]], ids=["run", "sweep"])
@pytest.mark.parametrize("kind", ["random bytes", "another SQLite database"])
def test_a_store_that_is_not_an_mlflow_store_is_refused_and_left_untouched(
    tmp_path: Path, kind: str, sweep: list[str]
) -> None:
    import os
    import sqlite3

    store = tmp_path / "mlflow.db"
    if kind == "random bytes":
        store.write_bytes(os.urandom(4096))
    else:
        with sqlite3.connect(store) as connection:
            connection.execute("CREATE TABLE trials (number INTEGER)")
    before = store.read_bytes(), store.stat().st_mtime_ns
    done = run_train_forked([*sweep, *TINY], cwd=tmp_path)
    assert done.returncode == 2, done.stderr[-2000:]
    [line] = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert line.startswith("error: tracking.uri: ") and "mlflow.db" in line
    assert "Traceback" not in done.stderr
    assert (store.read_bytes(), store.stat().st_mtime_ns) == before


def test_a_deleted_experiment_says_how_to_restore_it(tmp_path: Path) -> None:
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path}/mlflow.db")
    client.delete_experiment(client.create_experiment("bn-trick"))
    done = run_train_forked(TINY, cwd=tmp_path)
    assert done.returncode == 2, done.stderr[-2000:]
    [line] = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert "tracking.experiment" in line and "mlflow experiments restore" in line
    assert "tracking.experiment=NAME" in line
    assert (
        client.search_runs([e.experiment_id for e in client.search_experiments(view_type=3)]) == []
    )


@pytest.mark.parametrize(
    "args", [["lr=-1"], ["-m", "activation=relu,foo"], ["tracking.uri=http://127.0.0.1:port"]]
)
def test_a_forked_case_exits_and_prints_exactly_as_a_fresh_interpreter(
    args: list[str], tmp_path: Path
) -> None:
    # The bad-input cases above run in forks of a preloaded interpreter: the same
    # argv, folder, environment, output and exit status as `python src/train.py ARGS`.
    fresh = run_train(args, cwd=tmp_path, timeout=120)
    forked = run_train_forked(args, cwd=tmp_path)
    assert (forked.returncode, forked.stdout, forked.stderr) == (
        fresh.returncode,
        fresh.stdout,
        fresh.stderr,
    )
    assert fresh.returncode == 2 and fresh.stderr.startswith("error:")
