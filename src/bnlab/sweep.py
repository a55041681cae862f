"""Sweeps: check every job before any runs, and record each launch as a parent run.

The tracking store is the only state a sweep shares with its jobs, wherever they
run. Each launch draws a sweep id that Hydra hands every job in its config
(`tracking.sweep_id`); a job finds its parent run in the store by that id, and
the sweep counts its jobs' outcomes from the store when it ends. A grid sweep
and an Optuna search record their parent runs through the same `SweepRecorder`.
"""

from __future__ import annotations

import _thread
import copy
import itertools
import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

from hydra import compose
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from hydra.utils import get_class
from omegaconf import DictConfig, OmegaConf, open_dict, read_write

from bnlab import cluster, interrupts, job, links, metrics, provenance, threads, tracking
from bnlab.config import ConfigError, validate
from bnlab.errors import USER_ERRORS, exit_on_user_error
from bnlab.keys import spell_override
from bnlab.progress import Progress
from bnlab.redaction import redact_hydra_folder, redact_text
from bnlab.retries import StoreUnavailable

log = logging.getLogger(__name__)

# How long the launching process of a sweep on local workers waits, after a stop, for its
# workers to close their runs before it stops too (and its launcher kills them).
STOP_GRACE_SECONDS = 10.0
# A sweeper class that sets this attribute to True checks its own jobs and records its own
# parent run (the Optuna sweeper); with any other, this callback does both for a grid.
RECORDS_OWN_PARENT = "records_own_parent"


def grid_jobs(config: DictConfig) -> list[list[str]]:
    """Expands a multirun's overrides into one override list per job, as Hydra's grid does.

    The sweeper's `params` come first and the command line's overrides after them,
    so a command-line value of the same key wins, as in Hydra's basic sweeper.
    """
    params = config.hydra.sweeper.get("params") or {}
    arguments = [f"{key}={value}" for key, value in params.items()]
    arguments += list(config.hydra.overrides.task)
    by_key: dict[str, list[str]] = {}
    for override in OverridesParser.create().parse_overrides(arguments):
        key = override.get_key_element()
        if override.is_discrete_sweep():
            values = [f"{key}={value}" for value in override.sweep_string_iterator()]
        elif override.is_sweep_override():
            raise ConfigError(
                f"{key}: a grid sweep takes lists of values (a,b,c), not "
                f"'{override.input_line}' (search ranges with hparams_search)"
            )
        else:
            values = [f"{key}={override.get_value_element_as_str()}"]
        by_key[key] = values
    return [list(job) for job in itertools.product(*by_key.values())]


def check_jobs(config_name: str, jobs: list[list[str]]) -> None:
    """Validates every job's config before any job starts; raises on the first bad one.

    The first job is composed in full. A job whose overrides differ from the first one's
    only in plain values (`lr=0.01`, `model.bn=false`: no config group, no `+` or `~`)
    has the same defaults list, so its config is the first one's with those values set,
    as Hydra itself applies a value override (`OmegaConf.update` after composition):
    typed, checked against the schema, and validated in full. Others are composed.
    """
    if not jobs:
        return
    parser = OverridesParser.create()
    base_overrides = jobs[0]
    base = compose(config_name=config_name, overrides=base_overrides)
    validate(base, base_overrides)
    base_values = {o.get_key_element(): o for o in parser.parse_overrides(base_overrides)}
    for overrides in jobs[1:]:
        parsed = parser.parse_overrides(overrides)
        changed = [o for o in parsed if _differs(o, base_values)]
        if len(parsed) != len(base_values) or not all(_plain_value(o, base) for o in changed):
            validate(compose(config_name=config_name, overrides=overrides), overrides)
            continue
        job_cfg = copy.deepcopy(base)
        with read_write(job_cfg):
            for override in changed:
                OmegaConf.update(job_cfg, override.get_key_element(), override.value(), merge=True)
        validate(job_cfg, overrides)


def _differs(override: Any, base_values: dict[str, Any]) -> bool:
    known = base_values.get(override.get_key_element())
    return known is None or known.input_line != override.input_line


def _plain_value(override: Any, base: DictConfig) -> bool:
    """An override that sets one value the composed config holds, not a group or a node."""
    key = override.get_key_element()
    if override.input_line.startswith(("+", "~")) or key.startswith("hydra") or "/" in key:
        return False
    node = OmegaConf.select(base, key, default=_ABSENT, throw_on_missing=False)
    return node is not _ABSENT and not OmegaConf.is_config(node)


# Marks a key that the composed config does not hold.
_ABSENT = object()


class SweepRecorder:
    """A launch's parent run: opened with a heartbeat, counted and closed from the store."""

    def __init__(
        self,
        store: tracking.Store,
        run: tracking.RunLogger,
        sweep_id: str,
        progress: Progress | None = None,
    ) -> None:
        self.store = store
        self.run = run
        self.sweep_id = sweep_id
        self.progress = progress
        # Set by the watchdog when the launcher waits for a job that the store shows dead.
        self.launcher_stuck = False
        self._stuck_since: float | None = None

    def watch(self, jobs: list[dict[str, Any]]) -> None:
        """Ends a launch whose launcher waits forever for a job whose process died.

        Without Slurm accounting, submitit cannot see that a cancelled job ended and
        waits for its result for ever. The store knows: every job of the launch is
        recorded, none is live, and one is still RUNNING with a stopped heartbeat. When
        that lasts `stale_after_seconds`, the main thread is interrupted and the sweep
        closes from the store (`launcher_failed`). It reads the jobs the progress line's
        poll read (`Progress`), so each poll is one search of the store.
        """
        dead = [job for job in jobs if job.get("status") == "RUNNING" and not job.get("live")]
        live = [job for job in jobs if job.get("live")]
        ended = len(jobs) >= self.progress.total and not live
        if not (ended and dead):
            self._stuck_since = None
            return
        if self._stuck_since is None:
            self._stuck_since = time.monotonic()
        elif time.monotonic() - self._stuck_since > self.store.stale_after_seconds:
            log.warning(
                "Every job has ended in the store, but the launcher still waits for %d whose "
                "process died; closing the sweep from the store",
                len(dead),
            )
            self.launcher_stuck = True
            self.progress.stop()
            _thread.interrupt_main()

    @property
    def run_id(self) -> str:
        return self.run.run_id

    @classmethod
    def open(
        cls,
        config: DictConfig,
        role: str,
        name: str,
        params: dict[str, Any],
        tags: dict[str, str] | None = None,
        reuse: dict[str, str] | None = None,
        total: int | None = None,
    ) -> SweepRecorder:
        """Opens the parent run of this launch (or reopens the newest run matching `reuse`).

        Runs left RUNNING by dead processes are closed first, so their cells are
        trained again and their parents carry counts. With `total` (the jobs this
        launch will run), a `k/N done, ETA` line is logged as jobs end.
        """
        store = tracking.open_store(OmegaConf.to_object(config.tracking))
        store.reap_stale()
        # Results jobs kept offline are recorded first, so their cells are not trained again.
        store.record_pending(Path(config.hydra.runtime.cwd) / config.tracking.spool_dir)
        # Drawn here, in the launching process, before any job starts; Hydra hands
        # every job this cached value.
        sweep_id = config.tracking.sweep_id
        if store.find_run({metrics.SWEEP_ID_TAG: sweep_id}):
            raise ConfigError(
                f"tracking.sweep_id: '{sweep_id}' already names another launch "
                "(leave it unset: each launch draws its own)"
            )
        all_tags = {
            metrics.ROLE_TAG: role,
            metrics.SWEEP_ID_TAG: sweep_id,
            metrics.OVERRIDES_TAG: json.dumps(
                [spell_override(o) for o in config.hydra.overrides.task]
            ),
            **provenance.git_tags(),
            **(tags or {}),
        }
        adopted = tracking.active_run_id_from_env()
        existing = store.find_run(reuse) if reuse and not adopted else None
        if adopted:
            run = store.adopt_run(adopted, all_tags, name=name)
        elif existing:
            run = store.reopen_run(existing)
            run.set_tags(all_tags)
        else:
            run = store.start_run(name, all_tags)
        run.log_params(params)
        run.start_heartbeat(config.tracking.heartbeat_seconds)
        log.info(
            "Sweep %s: parent run %s in experiment '%s'", sweep_id, run.run_id, store.experiment
        )
        recorder = cls(store, run, sweep_id)
        if total:
            recorder.progress = Progress(
                lambda: store.sweep_jobs(run.run_id),
                total,
                f"Sweep {sweep_id}",
                # One search of the store per poll, for the line and the watchdog both:
                # a quarter of the staleness limit, or the heartbeat if that is longer.
                max(config.tracking.heartbeat_seconds, config.tracking.stale_after_seconds / 4),
                watch=recorder.watch,
            )
        return recorder

    def wait_for_jobs(self, poll_seconds: float = 2.0) -> None:
        """Returns once no job of this sweep is training and no new one has appeared.

        After a launcher gave up on one job (its process was killed on the cluster), the
        others still run there; the store shows when they are done. A job that never
        reached the store stops the wait after `stale_after_seconds` of quiet.
        """
        total = self.progress.total if self.progress is not None else 0
        quiet_limit = self.store.stale_after_seconds
        seen, changed = -1, time.monotonic()
        while True:
            interrupts.check()
            jobs = self.store.sweep_jobs(self.run_id)
            count = len(jobs)
            if count != seen:
                seen, changed = count, time.monotonic()
            if not any(job.get("live") for job in jobs) and (
                count >= total or time.monotonic() - changed > quiet_limit
            ):
                return
            time.sleep(poll_seconds)

    def close(self, interrupted: bool) -> list[dict[str, Any]]:
        """Counts the jobs' outcomes from the store, records them and closes the parent.

        The parent ends KILLED when the launch was interrupted, FAILED when a job
        failed or was killed, FINISHED otherwise.

        Returns:
            The jobs that failed or were killed.
        """
        self.run.stop_heartbeat()
        if self.progress is not None:
            self.progress.stop()
        self.store.close_stale_children(self.run_id)
        counts, jobs = self.store.write_counts(self.run_id)
        if self.progress is not None:
            self.progress.finish(jobs)
        failed = [job for job in jobs if job["outcome"] in (metrics.FAILED, metrics.KILLED)]
        status = "KILLED" if interrupted else ("FAILED" if failed else "FINISHED")
        self.store.describe(
            self.run_id,
            sweep_note(self.sweep_id, self.run_id, status, counts, self.store.with_results(jobs)),
        )
        if self.run.owned:
            self.run.end_status(status)
        log.info("Sweep %s: %s", status.lower(), ", ".join(f"{k} {v}" for k, v in counts.items()))
        for line in links.browse_lines(self.store.uri, self.store.experiment_id, self.store.ui_url):
            log.info(line)
        return failed


def sweep_note(
    sweep_id: str,
    run_id: str,
    status: str,
    counts: dict[str, int],
    jobs: list[dict[str, Any]],
) -> str:
    """The parent's description (Markdown): outcome counts, the best job, the report."""
    shown = ", ".join(f"{value} {key}" for key, value in counts.items() if value)
    lines = [f"**Sweep `{sweep_id}`**: {status.lower()}; jobs: {shown or 'none'}.", ""]
    scored = [r for r in jobs if r.get("objective") is not None]
    if scored:
        best = max(scored, key=lambda r: r["objective"])
        lines.append(
            f"Best job: **{best['name']}**, best validation accuracy {best['objective']:.3f} "
            f"(run `{best['run_id']}`)."
        )
        lines.append("")
    lines.append(
        "Report: `report/index.html` in this run's artifacts, written by `pipelines/study.py` "
        f"or `python pipelines/report.py --parent-run {run_id}`."
    )
    return "\n".join(lines)


_active: SweepRecorder | None = None


def set_active(recorder: SweepRecorder | None) -> None:
    """Names the parent run this process must close if it is interrupted."""
    global _active
    _active = recorder


def abort() -> None:
    """Closes the sweep this process opened as KILLED (after Ctrl-C or a crash)."""
    global _active
    if _active is not None:
        recorder, _active = _active, None
        try:
            recorder.close(interrupted=True)
        except BaseException as error:  # a second Ctrl-C, or a store that is gone
            print(f"warning: could not close sweep {recorder.sweep_id}: {error}", file=sys.stderr)


def launcher_stuck() -> bool:
    """Whether this process's sweep was interrupted by its own watchdog (see `_watch`)."""
    return _active is not None and _active.launcher_stuck


def launcher_failed(error: BaseException) -> None:
    """The launcher gave up (a job's process died on the cluster): finish from the store.

    Hydra's Ray and Slurm launchers raise on the first job whose process died, while
    the sweep's other jobs go on running on the cluster. The sweep waits for them
    through the store, closes with the counts it reads there, and exits 1 listing the
    jobs that failed or were killed.
    """
    global _active
    if _active is None:
        return
    recorder, _active = _active, None
    log.error("The launcher stopped: %s", f"{type(error).__name__}: {error}".splitlines()[0])
    log.debug("Launcher error", exc_info=error)
    log.info("Waiting for the sweep's other jobs, through the store")
    recorder.wait_for_jobs()
    finish(recorder)
    raise SystemExit(1)


def varying_keys(jobs: list[list[str]]) -> list[str]:
    """The override keys whose value differs between jobs, in command-line order."""
    values: dict[str, set[str]] = {}
    for overrides in jobs:
        for override in overrides:
            key, _, value = override.partition("=")
            values.setdefault(key.lstrip("+~"), set()).add(value)
    return [key for key, seen in values.items() if len(seen) > 1]


def sweep_name(sweep_id: str, jobs: int) -> str:
    """A parent's short name: `sweep 3f2a9c (12 jobs)`; the full command is in its params."""
    return f"sweep {sweep_id[:6]} ({jobs} jobs)"


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
            overrides = list(config.hydra.overrides.task)
            checked = validate(_job_config(config), overrides)
            store = None
            if checked.tracking.enabled:
                # Reach the store before the job starts: a dead one fails here, in one line.
                store = tracking.open_store(checked.tracking)
                store.record_pending(Path(config.hydra.runtime.cwd) / checked.tracking.spool_dir)
            job.hand_over(overrides, checked, store)
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
        check_jobs(hydra_cfg.job.config_name, jobs)
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
            tags={metrics.VARYING_TAG: json.dumps(varying_keys(jobs))},
        )
        set_active(recorder)

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
        global _active
        redact_hydra_folder(Path(config.hydra.sweep.dir))
        # A Ctrl-C swallowed during the last job still ends the sweep as interrupted.
        interrupts.check()
        if _active is None:
            return
        recorder, _active = _active, None
        finish(recorder)


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
    if failed:
        lines = [f"{len(failed)} job(s) failed:"]
        lines += [f"  {job['name']}: {job.get('error') or job['outcome']}" for job in failed]
        print("\n".join(lines), file=sys.stderr)
        raise SystemExit(1)
