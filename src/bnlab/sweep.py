"""Sweep bookkeeping: check every job before any runs, and record the sweep as a parent run.

Jobs may run in other processes (e.g. Hydra's joblib launcher), so they talk to
the sweep through files in the sweep directory: `sweep.json`, written here
before any job starts, names the parent run; each job leaves a `job.json` with
its outcome, which `on_multirun_end` counts.
"""

from __future__ import annotations

import copy
import json
import logging
import sys
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

from hydra import compose
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf, open_dict, read_write

from bnlab import metrics, provenance, tracking
from bnlab.config import validate
from bnlab.data import check_source
from bnlab.errors import USER_ERRORS, exit_on_user_error

log = logging.getLogger(__name__)

SWEEP_FILE = "sweep.json"
JOB_FILE = "job.json"
BASIC_SWEEPER = "hydra._internal.core_plugins.basic_sweeper.BasicSweeper"


def grid_jobs(config: DictConfig) -> list[list[str]]:
    """Expands a multirun's overrides into one override list per job, as Hydra will."""
    params = config.hydra.sweeper.get("params") or {}
    arguments = [f"{key}={value}" for key, value in params.items()]
    arguments += list(config.hydra.overrides.task)
    overrides = OverridesParser.create().parse_overrides(arguments)
    return [job for batch in BasicSweeper.split_arguments(overrides, None) for job in batch]


def check_jobs(config_name: str, jobs: list[list[str]]) -> None:
    """Composes and validates every job's config; raises on the first bad one."""
    for overrides in jobs:
        job_cfg = compose(config_name=config_name, overrides=overrides)
        checked = validate(job_cfg)
        check_source(checked.data)


def read_sweep_file(job_output_dir: Path) -> dict[str, Any] | None:
    """The sweep record a job's directory belongs to, if it is part of a sweep."""
    for folder in list(job_output_dir.parents)[:3]:
        path = folder / SWEEP_FILE
        if path.is_file():
            return json.loads(path.read_text())
    return None


def write_sweep_file(sweep_dir: Path, record: dict[str, Any]) -> None:
    """Writes the sweep record its jobs read (see `read_sweep_file`), creating the folder."""
    sweep_dir.mkdir(parents=True, exist_ok=True)
    (sweep_dir / SWEEP_FILE).write_text(json.dumps(record, indent=2))


def write_job_file(job_output_dir: Path, record: dict[str, Any]) -> None:
    (job_output_dir / JOB_FILE).write_text(json.dumps(record, indent=2))


class _ActiveSweep:
    """The sweep this process opened, so an interrupt can still close it."""

    def __init__(
        self,
        sweep_dir: Path,
        sweep_id: str,
        store: tracking.Store | None,
        parent_run_id: str | None,
        owned: bool,
    ) -> None:
        self.sweep_dir = sweep_dir
        self.sweep_id = sweep_id
        self.store = store
        self.parent_run_id = parent_run_id
        self.owned = owned

    def jobs(self) -> list[dict[str, Any]]:
        """The job records of this sweep (a reused sweep folder may hold older ones)."""
        records = [json.loads(path.read_text()) for path in self.sweep_dir.glob(f"**/{JOB_FILE}")]
        return [record for record in records if record.get("sweep_id") == self.sweep_id]

    def close(self, interrupted: bool = False) -> list[dict[str, Any]]:
        """Counts the jobs' outcomes, records them on the parent and closes it."""
        jobs = self.jobs()
        counts = Counter(job["outcome"] for job in jobs)
        failed = [job for job in jobs if job["outcome"] == metrics.FAILED]
        summary = {"launched": len(jobs)}
        for outcome in (
            metrics.FINISHED,
            metrics.DIVERGED,
            metrics.PRUNED,
            metrics.FAILED,
            metrics.KILLED,
            metrics.SKIPPED,
        ):
            summary[outcome] = counts.get(outcome, 0)
        status = "KILLED" if interrupted else ("FAILED" if failed else "FINISHED")
        if self.store is not None and self.parent_run_id is not None:
            self.store.end_sweep(self.parent_run_id, summary, jobs, status, terminate=self.owned)
        log.info("Sweep %s: %s", status.lower(), ", ".join(f"{k} {v}" for k, v in summary.items()))
        return failed


_active: _ActiveSweep | None = None


def abort() -> None:
    """Closes the sweep this process opened as KILLED (after Ctrl-C or a crash)."""
    global _active
    if _active is not None:
        sweep, _active = _active, None
        sweep.close(interrupted=True)


def _sweep_name(config: DictConfig) -> str:
    params = config.hydra.sweeper.get("params") or {}
    parts = [f"{key}={value}" for key, value in params.items()]
    parts += list(config.hydra.overrides.task)
    return "sweep " + " ".join(parts) if parts else "sweep"


def _job_config(config: DictConfig) -> DictConfig:
    """The config a job sees: the full config without its `hydra` node."""
    job_cfg = copy.deepcopy(config)
    with read_write(job_cfg), open_dict(job_cfg):
        del job_cfg["hydra"]
    return job_cfg


class ExperimentCallback(Callback):
    """Checks every job's config before any work starts; records sweeps as parent runs."""

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        try:
            check_source(validate(_job_config(config)).data)
        except USER_ERRORS as error:
            exit_on_user_error(error)

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        # Hydra turns exceptions raised in callbacks into warnings and carries on;
        # a sweep that cannot be checked or recorded must not start, so they leave
        # through SystemExit here.
        try:
            self._start_sweep(config)
        except SystemExit:
            raise
        except Exception as error:
            log.exception("Could not start the sweep")
            raise SystemExit(f"error: could not start the sweep: {error}") from error

    def _start_sweep(self, config: DictConfig) -> None:
        global _active
        hydra_cfg = config.hydra
        grid = hydra_cfg.sweeper.get("_target_") == BASIC_SWEEPER
        if grid:
            try:
                check_jobs(hydra_cfg.job.config_name, grid_jobs(config))
            except USER_ERRORS as error:
                exit_on_user_error(error)
        sweep_dir = Path(config.hydra.sweep.dir)
        record: dict[str, Any] = {
            "sweep_id": uuid.uuid4().hex[:12],
            "parent_run_id": None,
            "tracking_uri": config.tracking.uri if config.tracking.enabled else None,
            "experiment": config.tracking.experiment,
        }
        store = None
        owned = True
        if config.tracking.enabled and grid:
            store = tracking.open_store(OmegaConf.to_object(config.tracking))
            tags = {
                tracking.ROLE_TAG: "sweep",
                tracking.SWEEP_ID_TAG: record["sweep_id"],
                tracking.OVERRIDES_TAG: json.dumps(list(config.hydra.overrides.task)),
                **provenance.git_tags(hydra_cfg.runtime.cwd),
            }
            adopted = tracking.active_run_id_from_env()
            if adopted:
                owned = False
                run = store.adopt_run(adopted, tags, name=_sweep_name(config))
            else:
                run = store.start_run(_sweep_name(config), tags)
            params = config.hydra.sweeper.get("params") or {}
            run.log_params(
                {f"sweep.{key}": value for key, value in params.items()}
                | {"sweep.overrides": " ".join(config.hydra.overrides.task)}
            )
            record["parent_run_id"] = run.run_id
            log.info("Sweep parent run %s in experiment '%s'", run.run_id, store.experiment)
        write_sweep_file(sweep_dir, record)
        _active = _ActiveSweep(sweep_dir, record["sweep_id"], store, record["parent_run_id"], owned)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        global _active
        if _active is None:
            return
        sweep, _active = _active, None
        failed = sweep.close()
        if failed:
            lines = [f"{len(failed)} job(s) failed:"]
            lines += [f"  {' '.join(job['overrides'])}: {job.get('error', '')}" for job in failed]
            print("\n".join(lines), file=sys.stderr)
            raise SystemExit(1)
