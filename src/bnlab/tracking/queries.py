"""Reading runs back from the MLflow store: the queries jobs and the report share.

The report reads runs and curves as DataFrames here (and nowhere else); a launch's jobs
find their parent with the same `sweep_parent`. This module only reads.
"""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pandas as pd
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from bnlab import metrics
from bnlab.config.keys import SHORTHANDS
from bnlab.tracking.provenance import GIT_COMMIT_TAG
from bnlab.tracking.retries import DEFAULT_DEADLINE_SECONDS, retry


class StoreQueryError(RuntimeError):
    """The requested experiment or run is not in the store; one line says which."""


def search_all(
    client: MlflowClient,
    experiment_ids: list[str],
    filter_string: str,
    order_by: list[str] | None = None,
    deadline_seconds: float = DEFAULT_DEADLINE_SECONDS,
) -> list[Any]:
    """Every run matching `filter_string`, fetched page by page (MLflow returns 1,000 at most)."""
    runs: list[Any] = []
    token = None
    while True:
        page = retry(
            lambda token=token: client.search_runs(
                experiment_ids,
                filter_string=filter_string,
                max_results=1000,
                order_by=order_by,
                page_token=token,
            ),
            deadline=deadline_seconds,
        )
        runs.extend(page)
        token = page.token
        if not token:
            return runs


def experiment_id(uri: str, experiment: str) -> str:
    """The id of an experiment, for links into the UI; StoreQueryError when unknown."""
    return _experiment_id(MlflowClient(tracking_uri=uri), experiment)


def _experiment_id(client: MlflowClient, experiment: str) -> str:
    found = retry(lambda: client.get_experiment_by_name(experiment))
    if found is None:
        known = sorted(e.name for e in client.search_experiments())
        raise StoreQueryError(
            f"unknown experiment '{experiment}' (in this store: {', '.join(known) or 'none'})"
        )
    return found.experiment_id


# The roles of a launch's parent run: a grid sweep's or an Optuna search's.
PARENT_ROLES = ("sweep", "search")


def sweep_parent(client: MlflowClient, experiment_id: str, sweep_id: str) -> Any | None:
    """The parent run of the launch `sweep_id` (a sweep's or a search's), or None.

    One search, shared by the jobs of a launch (which find their parent with it) and by
    the study command (which reports on it). Jobs carry the sweep id too, so they are
    filtered out by the store; the parent carries its `sweep.varying` keys.
    """
    runs = search_all(
        client,
        [experiment_id],
        f"tags.{metrics.SWEEP_ID_TAG} = '{sweep_id}' and tags.{metrics.ROLE_TAG} != 'job'",
        order_by=["attributes.start_time DESC"],
    )
    parents = [run for run in runs if run.data.tags.get(metrics.ROLE_TAG) in PARENT_ROLES]
    return parents[0] if parents else None


def recorded_varying_keys(parent: Any) -> set[str]:
    """The keys that differ between the jobs of a sweep, from its parent's tag."""
    try:
        return set(json.loads(parent.data.tags.get(metrics.VARYING_TAG, "[]")))
    except ValueError:
        return set()


def find_sweep_parent(uri: str, experiment: str, sweep_id: str) -> str | None:
    """The parent run of the launch `sweep_id`, or None when it was not recorded."""
    client = MlflowClient(tracking_uri=uri)
    try:
        experiment_id = _experiment_id(client, experiment)
    except StoreQueryError:
        return None
    parent = sweep_parent(client, experiment_id, sweep_id)
    return parent.info.run_id if parent is not None else None


def _sweep_member_ids(client: MlflowClient, experiment_id: str, parent_run_id: str) -> list[str]:
    """Runs of a sweep: its children plus the complete runs its jobs reused."""
    try:
        parent = retry(lambda: client.get_run(parent_run_id))
    except MlflowException as error:
        raise StoreQueryError(f"unknown run '{parent_run_id}'") from error
    if parent.info.experiment_id != experiment_id:
        raise StoreQueryError(f"run '{parent_run_id}' is not in this experiment")
    children = search_all(
        client, [experiment_id], f"tags.`{metrics.PARENT_TAG}` = '{parent_run_id}'"
    )
    members = [run.info.run_id for run in children]
    members += [
        value
        for key, value in parent.data.tags.items()
        if key.startswith(metrics.SKIPPED_TAG_PREFIX)
    ]
    return members


def load_runs(
    uri: str,
    experiment: str,
    parent_run_id: str | None = None,
    curve: str = metrics.VAL_ACCURACY,
    workers: int = 8,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Reads the job runs of an experiment (or of one sweep) and one metric's histories.

    Returns:
        runs: one row per job run with run_id, name, status, outcome, start_time,
            every param by its dotted key and every final metric by its name. The
            columns bn, lr, activation and seed hold the trained values (the group
            keys model.bn, optimizer.lr, ...), never the shorthands as typed.
        curves: one row per logged point of `curve`: run_id, step, value.

    Histories are fetched concurrently: one request per run, which dominates the
    time on a store of hundreds of runs.
    """
    client = MlflowClient(tracking_uri=uri)
    experiment_id = _experiment_id(client, experiment)
    runs = search_all(client, [experiment_id], f"tags.{metrics.ROLE_TAG} = 'job'")
    if parent_run_id is not None:
        members = set(_sweep_member_ids(client, experiment_id, parent_run_id))
        runs = [run for run in runs if run.info.run_id in members]
    rows = []
    for run in runs:
        params = dict(run.data.params)
        for shorthand, key in SHORTHANDS.items():
            if key in params:
                params[shorthand] = params[key]
        rows.append(
            {
                "run_id": run.info.run_id,
                "name": run.info.run_name,
                "status": run.info.status,
                "outcome": run.data.tags.get(metrics.OUTCOME_TAG, "unknown"),
                "start_time": run.info.start_time,
                "parent_run_id": run.data.tags.get(metrics.PARENT_TAG),
                "study": run.data.tags.get(metrics.STUDY_TAG),
                "trial": run.data.tags.get(metrics.TRIAL_TAG),
                "identity": run.data.tags.get(metrics.IDENTITY_TAG),
                # Runs recorded before the identity had a scheme are scheme 1.
                "identity_scheme": run.data.tags.get(metrics.IDENTITY_SCHEME_TAG, "1"),
                "sweep_id": run.data.tags.get(metrics.SWEEP_ID_TAG),
                "classes": _count(run.data.tags.get(metrics.CLASSES_TAG)),
                "commit": run.data.tags.get(GIT_COMMIT_TAG, run.data.tags.get("git_commit")),
                "experiment_id": run.info.experiment_id,
                **params,
                **run.data.metrics,
            }
        )

    def history(run_id: str) -> list[tuple[str, int, float]]:
        points = retry(lambda: client.get_metric_history(run_id, curve))
        return [(run_id, point.step, point.value) for point in points]

    with ThreadPoolExecutor(max_workers=workers) as pool:
        points = [
            point for batch in pool.map(history, [r["run_id"] for r in rows]) for point in batch
        ]
    curves = pd.DataFrame(points, columns=["run_id", "step", "value"])
    curves = curves.sort_values(["run_id", "step"]).drop_duplicates(["run_id", "step"], keep="last")
    return pd.DataFrame(rows), curves


def recorded_identities(
    uri: str, experiment: str, requires: tuple[str, ...] = ()
) -> tuple[set[str], set[str]]:
    """What a launch would reuse: the identities of the experiment's complete job runs that
    hold the metrics in `requires` (as `Store.find_complete_run` finds them), and of its
    finished timings (empty sets while the experiment does not exist)."""
    client = MlflowClient(tracking_uri=uri)
    try:
        experiment_id = _experiment_id(client, experiment)
    except StoreQueryError:
        return set(), set()

    def finished(role: str) -> list[Any]:
        return search_all(
            client,
            [experiment_id],
            f"tags.{metrics.ROLE_TAG} = '{role}' and attributes.status = 'FINISHED'",
        )

    complete = {
        run.data.tags.get(metrics.IDENTITY_TAG)
        for run in finished("job")
        if run.data.tags.get(metrics.OUTCOME_TAG) in metrics.COMPLETE_OUTCOMES
        and all(key in run.data.metrics for key in requires)
    }
    return complete, {run.data.tags.get(metrics.TIMING_TAG) for run in finished("timing")}


def load_timings(uri: str, experiment: str) -> pd.DataFrame:
    """The experiment's finished side-by-side step timings (`bnlab.experiment.step_timing`): one row
    per variant and round (run_id, timing, start_time, label, round, seconds per step)."""
    client = MlflowClient(tracking_uri=uri)
    runs = search_all(
        client,
        [_experiment_id(client, experiment)],
        f"tags.{metrics.ROLE_TAG} = 'timing' and attributes.status = 'FINISHED'",
    )
    keys = {
        key for run in runs for key in run.data.metrics if key.startswith(metrics.TIMING_PREFIX)
    }
    points = histories(uri, [run.info.run_id for run in runs], sorted(keys))
    timed = pd.DataFrame(
        [
            (run.info.run_id, run.data.tags.get(metrics.TIMING_TAG), run.info.start_time)
            for run in runs
        ],
        columns=["run_id", "timing", "start_time"],
    )
    found = timed.merge(points, on="run_id")
    return pd.DataFrame(
        {
            "run_id": found["run_id"],
            "timing": found["timing"],
            "start_time": found["start_time"],
            "label": found["key"].str.removeprefix(metrics.TIMING_PREFIX),
            "round": found["step"],
            "seconds": found["value"],
        }
    )


def histories(uri: str, run_ids: list[str], keys: list[str], workers: int = 8) -> pd.DataFrame:
    """The logged points of `keys` for each run: one row per point (run_id, key, step, value)."""
    client = MlflowClient(tracking_uri=uri)
    requests = [(run_id, key) for run_id in run_ids for key in keys]

    def history(request: tuple[str, str]) -> list[tuple[str, str, int, float]]:
        run_id, key = request
        points = retry(lambda: client.get_metric_history(run_id, key))
        return [(run_id, key, point.step, point.value) for point in points]

    with ThreadPoolExecutor(max_workers=workers) as pool:
        points = [point for batch in pool.map(history, requests) for point in batch]
    return pd.DataFrame(points, columns=["run_id", "key", "step", "value"])


def grad_norm_keys(uri: str, run_ids: list[str]) -> list[str]:
    """The gradient-norm metrics (one per layer) the runs logged, by name."""
    client = MlflowClient(tracking_uri=uri)
    keys: set[str] = set()
    for run_id in run_ids:
        found = retry(lambda run_id=run_id: client.get_run(run_id)).data.metrics
        keys |= {key for key in found if key.startswith(metrics.GRAD_NORM_PREFIX)}
    return sorted(keys)


def _count(text: str | None) -> int | None:
    """A tag's whole number, or None when the run has no such tag (recorded before it)."""
    try:
        return int(text) if text is not None else None
    except ValueError:
        return None
