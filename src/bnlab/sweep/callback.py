"""A launch's lifecycle in the launching process: Hydra's callback, and the sweep it must close.

The tracking store is the only state a sweep shares with its jobs, wherever they
run. Each launch draws a sweep id that Hydra hands every job in its config
(`tracking.sweep_id`); a job finds its parent run in the store by that id, and
the sweep counts its jobs' outcomes from the store when it ends. The grid's jobs
are expanded and checked by `grid`, the parent run is kept by `recorder`.
"""

from __future__ import annotations

import copy
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from hydra.types import RunMode
from hydra.utils import get_class
from omegaconf import DictConfig, open_dict, read_write

from bnlab import interrupts, metrics
from bnlab.config import launchers as cluster
from bnlab.config.errors import USER_ERRORS, exit_on_user_error
from bnlab.experiment import threads
from bnlab.job import runner as job
from bnlab.redaction import redact_hydra_folder, redact_text
from bnlab.sweep.grid import check_jobs, grid_jobs, search_path_overrides
from bnlab.sweep.recorder import SweepRecorder, sweep_name, swept_keys
from bnlab.tracking.retries import StoreUnavailable

log = logging.getLogger(__name__)

# How long the launching process of a sweep on local workers waits, after a stop, for its
# workers to close their runs before it stops too (and its launcher kills them).
STOP_GRACE_SECONDS = 10.0
# A sweeper class that sets this attribute to True checks its own jobs and records its own
# parent run (the Optuna sweeper); with any other, this callback does both for a grid.
RECORDS_OWN_PARENT = "records_own_parent"


class OpenSweep:
    """The sweep this process opened and must close, even when it is interrupted.

    Hydra builds the launch callback and the sweeper itself, from config, so neither can
    be handed an object by the command that runs them; the command (`cli.hydra_app.run`)
    reaches the sweep to close after a Ctrl-C through this one holder, `OPEN`.
    """

    def __init__(self) -> None:
        self._recorder: SweepRecorder | None = None

    def hold(self, recorder: SweepRecorder | None) -> None:
        """Names the parent run this process must close (None: nothing to close)."""
        self._recorder = recorder

    def release(self) -> SweepRecorder | None:
        """The sweep held, if any, which this process now closes itself."""
        recorder, self._recorder = self._recorder, None
        return recorder

    def held(self) -> SweepRecorder | None:
        """The sweep held, if any, left held (see `ExperimentCallback.on_multirun_end`)."""
        return self._recorder

    def abort(self) -> None:
        """Closes the sweep held as KILLED (after Ctrl-C or a crash), unless its close had
        already given its parent run a final status."""
        recorder = self.release()
        if recorder is None or recorder.ended:
            return
        try:
            recorder.close(interrupted=True)
        except BaseException as error:  # a second Ctrl-C, or a store that is gone
            print(f"warning: could not close sweep {recorder.sweep_id}: {error}", file=sys.stderr)

    def launcher_stuck(self) -> bool:
        """Whether the sweep held was interrupted by its own watchdog (see `recorder.watch`)."""
        return self._recorder is not None and self._recorder.launcher_stuck

    def launcher_failed(self, error: BaseException) -> None:
        """The launcher gave up (a job's process died on the cluster): finish from the store.

        Hydra's Ray and Slurm launchers raise on the first job whose process died, while
        the sweep's other jobs go on running on the cluster. The sweep waits for them
        through the store, closes with the counts it reads there, and exits 1 listing the
        jobs that failed or were killed.
        """
        recorder = self._recorder  # still held: a Ctrl-C while it waits closes it (abort)
        if recorder is None:
            return
        # Logging goes to stdout under Hydra: the reason of the exit goes to stderr.
        reason = f"{type(error).__name__}: {error}".splitlines()[0]
        print(f"error: the launcher stopped: {reason}", file=sys.stderr, flush=True)
        log.debug("Launcher error", exc_info=error)
        log.info("Waiting for the sweep's other jobs, through the store")
        recorder.wait_for_jobs()
        finish(recorder)
        self.release()
        raise SystemExit(1)


OPEN = OpenSweep()


def _job_config(config: DictConfig) -> DictConfig:
    """The config a job sees: the full config without its `hydra` node."""
    job_cfg = copy.deepcopy(config)
    with read_write(job_cfg), open_dict(job_cfg):
        del job_cfg["hydra"]
    return job_cfg


class ExperimentCallback(Callback):
    """Checks every job's config before any work starts; records sweeps as parent runs."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        # Hydra turns exceptions raised in callbacks into warnings and carries on;
        # a sweep that cannot be checked or recorded must not start, so they leave
        # through SystemExit here.
        try:
            self._start_sweep(config)
        except SystemExit:
            raise
        except USER_ERRORS as error:
            exit_on_user_error(error)
        except Exception as error:
            log.exception("Could not start the sweep")
            raise SystemExit(f"error: could not start the sweep: {error}") from error

    def _start_sweep(self, config: DictConfig) -> None:
        hydra_cfg = config.hydra
        cluster.check_settings(hydra_cfg.launcher, threads.cpus())
        cluster.check_reachable(hydra_cfg.launcher)
        if cluster.kind(hydra_cfg.launcher) in cluster.LOCAL_WORKERS:
            # Its launcher kills the workers as soon as this process stops: give them a
            # moment to close their runs with every metric they logged.
            interrupts.grace(STOP_GRACE_SECONDS)
            os.environ[job.LAUNCHER_PID_VARIABLE] = str(os.getpid())
        if getattr(get_class(hydra_cfg.sweeper._target_), RECORDS_OWN_PARENT, False):
            return  # the Optuna sweeper checks its space and opens its own parent
        jobs = grid_jobs(config)
        check_jobs(hydra_cfg.job.config_name, jobs, search_path_overrides(config))
        if not config.tracking.enabled:
            return
        params = config.hydra.sweeper.get("params") or {}
        recorder = SweepRecorder.open(
            config,
            role="sweep",
            name=sweep_name(config.tracking.sweep_id, len(jobs)),
            params={f"sweep.{key}": value for key, value in params.items()}
            | {"sweep.overrides": " ".join(config.hydra.overrides.task)},
            total=len(jobs),
            tags={metrics.VARYING_TAG: json.dumps(swept_keys(jobs))},
        )
        OPEN.hold(recorder)

    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        # Hydra has just saved this job's config and overrides, and (in a sweep) the
        # sweep's multirun.yaml: credentials in them are hidden before the job runs.
        redact_hydra_folder(Path(config.hydra.runtime.output_dir))
        if config.hydra.mode == RunMode.MULTIRUN:
            redact_hydra_folder(Path(config.hydra.sweep.dir))

    def on_job_end(self, config: DictConfig, job_return: Any = None, **kwargs: Any) -> None:
        # Hydra names a failed job by its overrides ("Error executing job with overrides").
        if job_return is not None and job_return.overrides:
            job_return.overrides = [redact_text(o) for o in job_return.overrides]

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        redact_hydra_folder(Path(config.hydra.sweep.dir))
        # A Ctrl-C swallowed during the last job still ends the sweep as interrupted.
        interrupts.check()
        # Held while it closes: a Ctrl-C that lands in the close leaves it to the
        # command's `abort`, which closes it as KILLED, not RUNNING for ever.
        recorder = OPEN.held()
        if recorder is not None:
            finish(recorder)
        OPEN.release()


def finish(recorder: SweepRecorder) -> None:
    """Closes a launch that ran to its end; exits 1 listing the jobs that failed.

    The failures are read from the store, so jobs that ran anywhere are listed.
    """
    try:
        failed = recorder.close(interrupted=False)
    except StoreUnavailable as error:
        print(
            f"error: could not close sweep {recorder.sweep_id}: {error}; "
            "the next launch from this store closes it",
            file=sys.stderr,
        )
        raise SystemExit(1) from None
    lines = []
    if failed:
        lines = [f"{len(failed)} job(s) failed:"]
        lines += [f"  {job['name']}: {job.get('error') or job['outcome']}" for job in failed]
    if recorder.unrecorded:
        lines.append(
            f"{recorder.unrecorded} job(s) left no run in the store (each said why above); "
            "the next launch trains them"
        )
    if lines:
        print("\n".join(lines), file=sys.stderr)
        raise SystemExit(1)
