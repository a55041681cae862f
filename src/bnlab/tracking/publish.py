"""Publishing a report folder as artifacts of a sweep's parent run, `mlflow run`'s run,
or a report run of its own.
"""

from __future__ import annotations

import logging
from pathlib import Path

from mlflow import MlflowClient

from bnlab import metrics
from bnlab.tracking import provenance
from bnlab.tracking.retries import (
    retry,
)
from bnlab.tracking.store import active_run_id_from_env

log = logging.getLogger(__name__)


def log_report(uri: str, experiment: str, folder: Path, parent_run_id: str | None) -> str:
    """Logs a report folder to the sweep's parent, `mlflow run`'s run, or a new report run.

    Returns:
        The id of the run that holds the report.
    """
    client = MlflowClient(tracking_uri=uri)
    parent_run_id = parent_run_id or active_run_id_from_env()
    if parent_run_id is None:
        found = retry(lambda: client.get_experiment_by_name(experiment))
        run = retry(
            lambda: client.create_run(
                found.experiment_id,
                tags={metrics.ROLE_TAG: "report", provenance.USER_TAG: provenance.user()},
                run_name=f"report {folder.name}",
            )
        )
        run_id = run.info.run_id
    else:
        run_id = parent_run_id
        tags = retry(lambda: client.get_run(run_id)).data.tags
        if run_id == active_run_id_from_env() and metrics.ROLE_TAG not in tags:
            # `mlflow run . -e report`: the project's own run becomes the report run.
            retry(lambda: client.set_tag(run_id, metrics.ROLE_TAG, "report"))
            retry(lambda: client.update_run(run_id, name=f"report {folder.name}"))
    retry(lambda: client.log_artifacts(run_id, str(folder), "report"))
    if parent_run_id is None:
        retry(lambda: client.set_terminated(run_id, status="FINISHED"))
    return run_id
