"""A job's identity: the trained values, the training code and the backend, nothing else."""

from __future__ import annotations

import ast
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from bnlab.config import ConfigError, validate
from bnlab.config.keys import NOT_TRAINED, SHORTHANDS, trained_values
from bnlab.job import identity
from bnlab.job import runner as job
from bnlab.sweep.grid import grid_jobs
from bnlab.tracking import queries, retries
from conftest import ROOT, TINY, compose_config, experiment_runs


def identity_of(*overrides: str) -> str:
    return identity.identity_hash(validate(compose_config([*TINY, *overrides]), list(overrides)))


def test_a_group_key_alone_is_the_same_experiment_as_its_shorthand() -> None:
    assert identity_of("lr=0.05") == identity_of("optimizer.learning_rate=0.05")
    assert identity_of("bn=false") == identity_of("model.bn=false")
    assert identity_of("seed=3") == identity_of("train.seed=3")
    assert identity_of("activation=sigmoid") == identity_of("model.activation=sigmoid")
    assert identity_of("lr=0.05") != identity_of("lr=0.01")
    assert identity_of("seed=1") != identity_of("seed=2")
    # The shorthands follow the group keys, so params and names say what was trained.
    config = validate(compose_config(["optimizer.learning_rate=0.05", "model.bn=false"]))
    assert (config.lr, config.bn) == (0.05, False)


@pytest.mark.parametrize(
    "overrides",
    [
        ["bn=true", "model.bn=false"],
        ["lr=0.01", "optimizer.learning_rate=0.05"],
        ["seed=0", "train.seed=1"],
    ],
)
def test_a_shorthand_and_its_group_key_that_disagree_are_refused(overrides: list[str]) -> None:
    cfg = compose_config(overrides)
    key = overrides[0].split("=")[0]
    with pytest.raises(ConfigError, match=rf"^{key}: .* disagree"):
        validate(cfg, overrides)
    # Agreeing values are fine.
    validate(
        compose_config(["lr=0.05", "optimizer.learning_rate=5e-2"]),
        ["lr=0.05", "optimizer.learning_rate=5e-2"],
    )


@pytest.mark.parametrize(
    "override",
    [
        "tracking.uri=http://127.0.0.1:5000",
        "tracking.experiment=other",
        "tracking.sweep_id=abc",
        "tracking.heartbeat_seconds=1",
        "train.rerun=true",
        "search.study=s",
        "search.trial=3",
        "search.storage=sqlite:///elsewhere.db",
    ],
)
def test_keys_that_do_not_change_training_leave_the_identity(override: str) -> None:
    key = override.split("=")[0]
    assert any(key == skip or key.startswith(f"{skip}.") for skip in NOT_TRAINED)
    assert identity_of(override) == identity_of()


def test_not_trained_keys_are_exactly_the_bookkeeping() -> None:
    trained = trained_values(validate(compose_config([])))
    assert (
        "optimizer.learning_rate" in trained and "model.bn" in trained and "train.seed" in trained
    )
    assert not any(key in trained for key in SHORTHANDS)
    assert not any(key.startswith(("tracking.", "search.")) for key in trained)
    assert "train.rerun" not in trained and "train.steps" in trained


def test_the_code_of_every_target_and_the_training_loop_is_covered_but_not_the_report() -> None:
    config = validate(compose_config(["optimizer=sgd"]))
    modules = identity.code_modules(config)
    assert {"bnlab.experiment.training", "bnlab.plugins.cnn", "bnlab.plugins.mnist"} <= set(modules)
    # Keras's optimizers are covered by Keras's version, which the identity records.
    assert not any(module.startswith("keras") for module in modules)
    assert "bnlab.report.figures" not in modules and "bnlab.report.statistics" not in modules
    # The BN block the models import is covered, as is every first-party module they
    # import in turn; tests and the report are not.
    assert {"bnlab.plugins.bn_switch", "bnlab.experiment.batchnorm"} <= set(modules)
    assert not any(module.startswith(("tests", "conftest", "bnlab.report")) for module in modules)
    digits = validate(compose_config(["+experiment=digits"]))
    assert {"bnlab.plugins.mlp", "bnlab.plugins.digits"} <= set(identity.code_modules(digits))
    assert identity.describe(config)["scheme"] == identity.SCHEME


THROWAWAY = """
from dataclasses import dataclass

from bnlab.config import ModelConfig


@dataclass
class ThrowawayConfig(ModelConfig):
    _target_: str = "throwaway_model.build"
    units: int = 8


def build(input_shape, num_classes, units):
    import keras

    from throwaway_helpers import hidden_activation
    from keras import layers

    inputs = keras.Input(shape=input_shape)
    x = layers.Dense(units, activation=hidden_activation())(layers.Flatten()(inputs))
    return keras.Model(inputs, layers.Dense(num_classes, activation="softmax")(x))
"""


def test_a_model_in_a_new_file_is_one_function_and_one_yaml_and_its_code_is_the_identity(
    tmp_path: Path, monkeypatch
) -> None:
    from hydra import compose, initialize_config_dir

    from bnlab.experiment.data import load_data
    from bnlab.experiment.model import build_model

    code = tmp_path / "code"
    code.mkdir()
    (code / "throwaway_model.py").write_text(THROWAWAY)
    (code / "throwaway_helpers.py").write_text("def hidden_activation():\n    return 'relu'\n")
    monkeypatch.syspath_prepend(str(code))
    conf = tmp_path / "conf"
    shutil.copytree(ROOT / "conf", conf)
    (conf / "model" / "throwaway.yaml").write_text("_target_: throwaway_model.build\nunits: 16\n")

    def throwaway(*overrides: str):
        with initialize_config_dir(config_dir=str(conf), version_base="1.3"):
            return validate(
                compose(config_name="config", overrides=["model=throwaway", *TINY, *overrides])
            )

    config = throwaway()
    assert type(config.model).__name__ == "ThrowawayConfig" and config.model.units == 16
    assert build_model(config.model, load_data(config.data)).output_shape == (None, 10)
    # The schema checks the new option's keys and types at composition.
    with pytest.raises(Exception, match="units"):
        throwaway("model.units=many")
    before = identity.identity_hash(config)
    assert "throwaway_model" in identity.describe(config)["code_modules"]
    with open(code / "throwaway_model.py", "a") as source:
        source.write("\n# a fix to the new model\n")
    assert identity.identity_hash(config) != before
    # A helper module the model imports is part of its code too.
    assert "throwaway_helpers" in identity.describe(config)["code_modules"]
    after_model = identity.identity_hash(config)
    with open(code / "throwaway_helpers.py", "a") as source:
        source.write("\n# a fix to the helper\n")
    assert identity.identity_hash(config) != after_model


def test_another_backend_or_code_is_another_experiment(monkeypatch) -> None:
    base = identity_of()
    monkeypatch.setattr(
        identity.backend,
        "versions",
        lambda: {"keras_backend": "jax", "keras_version": "3", "backend_version": "0.4"},
    )
    assert identity_of() != base
    monkeypatch.undo()
    monkeypatch.setattr(identity, "fingerprint", lambda modules: "0" * 16)
    assert identity_of() != base


def test_identity_can_be_shown_without_training(tmp_path: Path) -> None:
    command = [sys.executable, str(ROOT / "pipelines" / "identity.py")]
    shown = subprocess.run([*command, "lr=0.05"], capture_output=True, text=True, cwd=tmp_path)
    again = subprocess.run(
        [*command, "optimizer.learning_rate=0.05"], capture_output=True, text=True, cwd=tmp_path
    )
    assert shown.returncode == 0, shown.stderr
    first_line = shown.stdout.splitlines()[0]
    assert first_line == again.stdout.splitlines()[0]
    assert first_line == f"identity {identity.identity_hash(validate(compose_config(['lr=0.05'])))}"
    assert '"optimizer.learning_rate": 0.05' in shown.stdout and '"code":' in shown.stdout
    assert not (tmp_path / "mlflow.db").exists()
    refused = subprocess.run(
        [*command, "bn=true", "model.bn=false"], capture_output=True, text=True, cwd=tmp_path
    )
    assert refused.returncode == 2 and refused.stderr.startswith("error: bn: ")


def test_the_report_groups_runs_by_the_trained_values(tiny_cfg, store_uri: str) -> None:
    job.run(tiny_cfg("optimizer.learning_rate=0.05", "model.bn=false"))
    runs, _ = queries.load_runs(store_uri, "bn-trick")
    [row] = runs.to_dict("records")
    assert float(row["lr"]) == 0.05 and row["bn"] == "false"
    assert row["identity"] == identity.identity_hash(validate(tiny_cfg("lr=0.05", "bn=false")))


def test_a_pruned_run_never_satisfies_a_grid_job(tiny_cfg, client) -> None:
    pruned = job.run(tiny_cfg(), on_eval=lambda step, point: True)
    assert pruned["steps"] < 20
    full = job.run(tiny_cfg())
    assert full["steps"] == 20
    outcomes = sorted(run.data.tags["outcome"] for run in experiment_runs(client))
    assert outcomes == ["finished", "pruned"]
    # Now the finished run is reused.
    job.run(tiny_cfg())
    assert len(experiment_runs(client)) == 2


def test_grid_expansion_follows_hydra_precedence() -> None:
    with_seeds = grid_jobs(_with_task(["seed=0,3"]))
    assert len(with_seeds) == 2 * 3 * 2 * 2
    assert {job[-1] for job in with_seeds} == {"seed=0", "seed=3"}
    # Values are written as Hydra's own grid writes them (str of the parsed value).
    assert with_seeds[0] == ["bn=True", "lr=0.001", "activation=relu", "seed=0"]
    assert len(grid_jobs(_with_task([]))) == 36


def _with_task(task: list[str]):
    """The parts of a multirun config that grid_jobs reads: the study's params and a task."""
    from omegaconf import OmegaConf

    from conftest import CONF_DIR

    params = OmegaConf.load(CONF_DIR / "experiment" / "study.yaml").hydra.sweeper.params
    return OmegaConf.create({"hydra": {"sweeper": {"params": params}, "overrides": {"task": task}}})


def test_transient_errors_are_told_by_type_not_by_text() -> None:
    import sqlalchemy.exc

    locked = sqlalchemy.exc.OperationalError("UPDATE", {}, Exception("database is locked"))
    try:
        try:
            raise locked
        except sqlalchemy.exc.OperationalError as error:
            raise RuntimeError("wrapped by the tracking client") from error
    except RuntimeError as wrapped:
        assert retries.is_transient(wrapped)
    assert not retries.is_transient(ValueError("database is locked"))
    attempts = []

    def flaky() -> str:
        attempts.append(1)
        if len(attempts) < 3:
            raise locked
        return "done"

    assert retries.retry(flaky) == "done" and len(attempts) == 3


def test_retry_jitter_is_not_reseeded_by_keras() -> None:
    import keras

    keras.utils.set_random_seed(0)
    first = retries._jitter.random()
    keras.utils.set_random_seed(0)
    assert retries._jitter.random() != first


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def test_no_private_apis_are_used_and_only_the_benchmark_command_reaches_the_benchmarks() -> None:
    # Which layer imports which library is tests/test_layers.py's.
    sources = [*(ROOT / "src").rglob("*.py")]
    for path in sources:
        text = path.read_text()
        names = _imports(path)
        assert not any(name.startswith("hydra._internal") for name in names), path
        if "bench" not in path.parts and path.name != "benchmark.py":
            assert not any(name.startswith("bnlab.bench") for name in names), path
            assert "synthetic" not in text, path
        assert not re.search(r"\.(_trial_id|_return_value)\b", text), path
        assert "train.fail" not in text, path
