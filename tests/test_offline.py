"""Offline means offline: MLflow's usage telemetry is off in every process of the project."""

from __future__ import annotations

import os
import subprocess
import sys

from bnlab.config import validate
from bnlab.config.keys import spell_override
from bnlab.job import runner as job
from conftest import compose_config

TELEMETRY_STATE = "from mlflow.telemetry.utils import is_telemetry_disabled; " + (
    "print(is_telemetry_disabled())"
)


def _without_ci_markers() -> dict[str, str]:
    # MLflow also stays quiet under CI or pytest; take those markers away so the check
    # sees what a user's shell would.
    markers = ("CI", "PYTEST_CURRENT_TEST", "GITHUB_ACTIONS", "MLFLOW_DISABLE_TELEMETRY")
    return {key: value for key, value in os.environ.items() if key not in markers}


def test_importing_the_project_switches_mlflow_telemetry_off() -> None:
    def state(prelude: str) -> str:
        done = subprocess.run(
            [sys.executable, "-c", prelude + TELEMETRY_STATE],
            env=_without_ci_markers(),
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, done.stderr
        return done.stdout.strip()

    assert state("") == "False"  # plain MLflow would report usage
    assert state("import bnlab; ") == "True"
    assert state("import bnlab.tracking; ") == "True"


def test_run_names_put_what_varies_first_and_spell_booleans_one_way() -> None:
    config = validate(compose_config(["bn=false", "activation=sigmoid", "lr=0.05", "seed=2"]))
    overrides = ["bn=False", "optimizer=sgd", "train.steps=20", "tracking.uri=x", "data.limit=9"]
    # In a sweep, only the overrides whose key varies across its jobs follow.
    assert job.run_name(config, overrides, {"bn", "optimizer"}) == (
        "no BN sigmoid lr=0.05 s2 optimizer=sgd"
    )
    # A single run names every override but the tracking ones.
    assert job.run_name(config, overrides) == (
        "no BN sigmoid lr=0.05 s2 optimizer=sgd train.steps=20 data.limit=9"
    )
    assert spell_override("model.bn=True") == "model.bn=true"
    assert spell_override("activation=relu") == "activation=relu"
