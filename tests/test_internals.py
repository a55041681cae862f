"""What BN does inside the network, logged by a job and read back through MlflowClient."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import pytest
from mlflow import MlflowClient

from bnlab import metrics
from bnlab.job import runner as job
from conftest import TINY, run_train

INTERNALS = ["train.internals=true", "train.steps=40", "train.eval_every=20", "data.limit=640"]
# Each weighted layer's key: its place and kind, whatever Keras named the layer (a process
# that built models before names this one's layers conv2d_5, dense_3, ...).
KERNELS = ["1_conv2d", "2_conv2d", "3_conv2d", "4_dense", "5_dense"]


def assert_internals(client: MlflowClient, run_id: str, bn: bool) -> None:
    data = client.get_run(run_id).data
    percentiles = [
        client.get_metric_history(run_id, key)
        for key in (metrics.PREACT_P15, metrics.PREACT_P50, metrics.PREACT_P85)
    ]
    # Every evaluation, ordered 15th <= 50th <= 85th.
    assert [[p.step for p in history] for history in percentiles] == [[20, 40]] * 3
    for low, middle, high in zip(*percentiles, strict=True):
        assert low.value <= middle.value <= high.value
    norms = sorted(key for key in data.metrics if key.startswith(metrics.GRAD_NORM_PREFIX))
    assert norms == [f"{metrics.GRAD_NORM_PREFIX}{name}" for name in KERNELS]
    for key in norms:
        history = client.get_metric_history(run_id, key)
        assert [p.step for p in history] == [20, 40] and all(p.value > 0 for p in history)
    # Batch statistics against moving ones: BN models only, once, at the end.
    assert (metrics.VAL_ACCURACY_BATCH_STATS in data.metrics) is bn
    assert (metrics.VAL_ACCURACY_MOVING_STATS in data.metrics) is bn
    if bn:
        assert 0 <= data.metrics[metrics.VAL_ACCURACY_BATCH_STATS] <= 1
        assert 0 <= data.metrics[metrics.VAL_ACCURACY_MOVING_STATS] <= 1
    assert data.metrics[metrics.INTERNALS_SECONDS] > 0


@pytest.mark.parametrize("bn", [True, False])
def test_a_job_logs_its_internals_and_they_change_nothing_it_trains(
    tiny_cfg, client: MlflowClient, bn: bool
) -> None:
    flag = f"bn={str(bn).lower()}"
    plain = job.run(tiny_cfg(flag, "train.steps=40", "train.eval_every=20", "data.limit=640"))
    measured = job.run(tiny_cfg(flag, *INTERNALS, "train.rerun=true"))
    # Measuring restores BN's moving statistics: the run trains exactly the same.
    assert measured[metrics.OBJECTIVE] == plain[metrics.OBJECTIVE]
    assert measured[metrics.TEST_ACCURACY] == plain[metrics.TEST_ACCURACY]
    experiment = client.get_experiment_by_name("bn-trick").experiment_id
    [run] = client.search_runs(
        [experiment], f"metrics.`{metrics.INTERNALS_SECONDS}` > 0", max_results=1
    )
    assert_internals(client, run.info.run_id, bn)
    # One identity with and without it: internals are not part of what is trained.
    identities = {r.data.tags["identity"] for r in client.search_runs([experiment])}
    assert len(identities) == 1


def assert_mechanism(client: MlflowClient, run_id: str) -> None:
    """Santurkar et al.'s measures at every evaluation, and their means over the run."""
    data = client.get_run(run_id).data
    for key in metrics.MECHANISM_KEYS:
        history = client.get_metric_history(run_id, key)
        # The input shift is a change since the previous evaluation: from the second on.
        steps = [40] if key == metrics.MECHANISM_INPUT_SHIFT else [20, 40]
        assert [p.step for p in history] == steps, key
        assert all(math.isfinite(p.value) and p.value >= -1 for p in history), key
        assert data.metrics[f"{key}{metrics.MEAN_SUFFIX}"] == pytest.approx(
            sum(p.value for p in history) / len(steps), rel=1e-3
        )
    for p in client.get_metric_history(run_id, metrics.MECHANISM_ICS_COSINE):
        assert -1 <= p.value <= 1
    for key in (metrics.MECHANISM_LOSS_VARIATION, metrics.MECHANISM_BETA_SMOOTHNESS):
        assert all(p.value >= 0 for p in client.get_metric_history(run_id, key))
    assert data.metrics[metrics.MECHANISM_SECONDS] > 0


@pytest.mark.parametrize("bn", [True, False])
def test_the_mechanism_measures_are_logged_and_change_nothing_it_trains(
    tiny_cfg, client: MlflowClient, bn: bool
) -> None:
    flag = f"bn={str(bn).lower()}"
    schedule = ["train.steps=40", "train.eval_every=20", "data.limit=640"]
    plain = job.run(tiny_cfg(flag, *schedule))
    # The run of this identity did not measure the mechanism: the job trains again.
    measured = job.run(tiny_cfg(flag, *schedule, "train.mechanism=true"))
    # Every probe restores the weights and BN's moving statistics: the same training.
    assert measured[metrics.OBJECTIVE] == plain[metrics.OBJECTIVE]
    assert measured[metrics.TEST_ACCURACY] == plain[metrics.TEST_ACCURACY]
    experiment = client.get_experiment_by_name("bn-trick").experiment_id
    assert len(client.search_runs([experiment])) == 2
    # A run that measured it is reused, by jobs that measure it and by those that do not.
    job.run(tiny_cfg(flag, *schedule, "train.mechanism=true"))
    job.run(tiny_cfg(flag, *schedule))
    assert len(client.search_runs([experiment])) == 2
    [run] = client.search_runs(
        [experiment], f"metrics.`{metrics.MECHANISM_SECONDS}` > 0", max_results=1
    )
    assert_mechanism(client, run.info.run_id)
    identities = {r.data.tags["identity"] for r in client.search_runs([experiment])}
    assert len(identities) == 1


@pytest.mark.usefixtures("store_uri")  # a copy of the empty template store
@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("jax") is None, reason="jax is not installed")
def test_internals_are_logged_under_jax_too(tmp_path: Path) -> None:
    done = run_train(
        [*TINY, *INTERNALS, "train.mechanism=true"], cwd=tmp_path, env={"KERAS_BACKEND": "jax"}
    )
    assert done.returncode == 0, done.stderr[-3000:]
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path}/mlflow.db")
    [run] = client.search_runs([client.get_experiment_by_name("bn-trick").experiment_id])
    assert run.data.tags["keras_backend"] == "jax"
    assert_internals(client, run.info.run_id, bn=True)
    assert_mechanism(client, run.info.run_id)
