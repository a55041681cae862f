"""One training job: validate, reuse or wait for an identical run, train, record."""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import logging
import math
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from bnlab import interrupts, metrics, tracking
from bnlab.config import Config, effective_learning_rate, group_values, validate
from bnlab.config.errors import USER_ERRORS, exit_on_user_error
from bnlab.config.keys import (
    SHORTHANDS,
    is_trained,
    logged_params,
    override_key,
    spell_override,
)
from bnlab.config.validation import check_optimizer
from bnlab.experiment import threads
from bnlab.experiment.data import dataset_info, load_data
from bnlab.job import console
from bnlab.job.identity import SCHEME, describe, identity_hash, required_metrics
from bnlab.tracking import links, provenance
from bnlab.tracking.retries import StoreUnavailable

if TYPE_CHECKING:
    # Imported inside `run`: the backend must start after its threads are pinned.
    from bnlab.experiment.training import EvalHook

log = logging.getLogger(__name__)


# Set in the launching process of a sweep on local workers (`sweep.ExperimentCallback`),
# which its workers inherit: a job whose process is another one runs in a worker.
LAUNCHER_PID_VARIABLE = "BNLAB_LAUNCHER_PID"


# The param that records the learning rate a job trained with when train.lr_scaling
# scales `lr` to its batch size.
EFFECTIVE_LR_PARAM = "optimizer.effective_learning_rate"


@dataclass
class JobContext:
    """What Hydra knows about this job: its overrides, log file and mode."""

    overrides: list[str] = field(default_factory=list)
    log_file: Path | None = None
    cwd: str = "."
    multirun: bool = False
    launcher: Any = None

    @classmethod
    def from_hydra(cls) -> JobContext:
        if not HydraConfig.initialized():
            return cls()
        hydra_cfg = HydraConfig.get()
        output_dir = Path(hydra_cfg.runtime.output_dir)
        return cls(
            overrides=list(hydra_cfg.overrides.task),
            log_file=output_dir / f"{hydra_cfg.job.name}.log",
            cwd=hydra_cfg.runtime.cwd,
            multirun=hydra_cfg.mode == RunMode.MULTIRUN,
            launcher=hydra_cfg.launcher,
        )


def run_name(config: Config, overrides: list[str], varying: set[str] | None = None) -> str:
    """A short name with what tells runs apart first: `BN relu lr=0.01 s0`.

    Other overrides follow: in a sweep only those whose key varies across its
    jobs (`varying`), so constants such as `train.steps=200` stay in the
    sweep's params; in a single run all of them.
    """
    parts = [
        _spell_shorthand(shorthand, value) for shorthand, value in group_values(config).items()
    ]
    if config.search.trial is not None:
        parts.append(f"trial {config.search.trial}")
    named = {*SHORTHANDS, *SHORTHANDS.values()}
    for override in overrides:
        key = override_key(override)
        if key in named or not is_trained(key):
            continue
        if varying is None or key in varying:
            parts.append(spell_override(override))
    return " ".join(parts)


def _spell_shorthand(shorthand: str, value: Any) -> str:
    """A shorthand's value as run names show it: a true/false one as its name in capitals
    or `no` and that, then e.g. `relu`, `lr=0.01`, `s0`."""
    if isinstance(value, bool):
        return shorthand.upper() if value else f"no {shorthand.upper()}"
    if shorthand == "seed":
        return f"s{value}"
    if isinstance(value, float):
        return f"{shorthand}={value:g}"
    return str(value)


def _job_tags(config: Config, context: JobContext, identity: str) -> dict[str, str]:
    tags = {
        metrics.ROLE_TAG: "job",
        metrics.IDENTITY_TAG: identity,
        metrics.IDENTITY_SCHEME_TAG: str(SCHEME),
        metrics.THREADS_TAG: str(
            threads.per_job(context.launcher, config.train.threads) or "default"
        ),
        metrics.OUTCOME_TAG: "running",
        metrics.OVERRIDES_TAG: json.dumps([spell_override(o) for o in context.overrides]),
        **provenance.git_tags(),
        **provenance.library_tags(),
        **provenance.host_tags(),
        **tracking.versions(),
    }
    if context.multirun:
        tags[metrics.SWEEP_ID_TAG] = config.tracking.sweep_id
    if config.search.trial is not None:
        tags[metrics.STUDY_TAG] = str(config.search.study)
        tags[metrics.TRIAL_TAG] = str(config.search.trial)
    return tags


def _claim(
    store: tracking.Store,
    config: Config,
    context: JobContext,
    identity: str,
    parent: str | None,
    varying: set[str] | None = None,
    before_run: Callable[[], Any] = lambda: None,
) -> tracking.CompletedRun | tracking.RunLogger:
    """Reuses a complete run with this identity, or opens the one run that trains it.

    A job first opens its run, then looks for live runs with its identity: the
    oldest one trains, the others delete their fresh run and wait for it; a job that finds
    no live rival looks once more for a complete run (one may have finished while its own
    run opened). Two identical sweeps launched at once therefore train each cell once. A search
    trial always trains: its study needs its curve and its pruning. `before_run` is
    called before a run is opened (the data is loaded and checked there), so a job whose
    input is bad records nothing.
    """
    searching = config.search.trial is not None
    name = run_name(config, context.overrides, varying)
    tags = _job_tags(config, context, identity)
    while True:
        interrupts.check()
        if not (config.train.rerun or searching):
            done = store.find_complete_run(identity, required_metrics(config))
            if done is not None:
                return done
        before_run()
        adopted = None if context.multirun else tracking.active_run_id_from_env()
        if adopted:
            run = store.adopt_run(adopted, tags, name=name)
        else:
            run = store.start_run(name, tags, parent)
        run.keep_offline(Path(context.cwd) / config.tracking.spool_dir)
        run.start_heartbeat(config.tracking.heartbeat_seconds)
        if config.tracking.system_metrics:
            run.start_system_metrics(config.tracking.system_metrics_seconds)
        if config.train.rerun or searching or adopted:
            return run
        rivals = [
            live
            for live in store.live.live_runs(identity)
            if (live.start_time, live.run_id) < (run.start_time, run.run_id)
        ]
        if not rivals:
            # A rival that finished while this run opened was neither complete at the first
            # look nor live now: reuse it rather than train its cell a second time.
            done = store.find_complete_run(identity, required_metrics(config))
            if done is None:
                return run
            run.discard()
            return done
        run.discard()
        log.info("Waiting for run %s, which is training this same experiment", rivals[0].run_id)
        store.live.wait_while_live(rivals[0].run_id)


def run(
    cfg: DictConfig,
    on_eval: EvalHook | None = None,
    trial_reporter: Callable[[Any], Any] | None = None,
) -> dict[str, float]:
    """Runs one job of the experiment and returns its final metrics.

    The returned dict holds `objective` (best validation accuracy, or chance
    accuracy when the loss diverged), the test metrics and throughput. A job
    whose identity already has a complete run is not retrained: the recorded
    metrics are returned instead, unless `train.rerun=true`.

    Args:
        cfg: The job config composed by Hydra.
        on_eval: Extra hook after every evaluation (e.g. a pruner); True stops.
        trial_reporter: Makes the reporter of the search trial a job belongs to, from
            its `search` config (None when it belongs to none): the command hands it in.
    """
    console.quiet_handler_errors()
    in_worker = _in_local_worker()
    if in_worker:
        # A stop (SIGINT, SIGTERM) becomes KeyboardInterrupt in a local worker too, so the
        # job writes what it buffered and closes its run as KILLED. (Jobs on a cluster
        # keep their scheduler's own handling: submitit's on Slurm, Ray's.)
        interrupts.ensure_installed()
        if interrupts.requested():
            log.info("Not started: the sweep is stopping")
            return {metrics.OBJECTIVE: math.nan}
    try:
        return _run(cfg, on_eval, trial_reporter)
    except KeyboardInterrupt:
        if not in_worker:
            raise
        # The job closed its run. The stop reaches the launching process by its own
        # signal: a stop returned as this worker's result would make the launcher kill
        # the other workers before they close theirs.
        return {metrics.OBJECTIVE: math.nan}


def _in_local_worker() -> bool:
    """Whether this job runs in a local worker process of its sweep (joblib's)."""
    launcher_pid = os.environ.get(LAUNCHER_PID_VARIABLE)
    return launcher_pid is not None and launcher_pid != str(os.getpid())


def _run(
    cfg: DictConfig,
    on_eval: EvalHook | None,
    trial_reporter: Callable[[Any], Any] | None,
) -> dict[str, float]:
    context = JobContext.from_hydra()
    try:
        # The one validation of this job's config, and its store reached before any work:
        # an unreachable store fails in seconds, before the backend starts.
        config, store = _prepare(cfg, context)
    except USER_ERRORS as error:
        if context.multirun and isinstance(error, tracking.StoreUnreachable):
            return _not_started(context, error)
        if context.multirun:
            raise
        # A single run's bad input is one line and exit 2, before Hydra reports a failed job.
        exit_on_user_error(error)
    job_threads = threads.per_job(context.launcher, config.train.threads)
    if not threads.pin(job_threads):
        log.debug("Backend already started; thread counts stay as they are")
    interrupts.check()
    run_logger = None
    identity = identity_hash(config)
    # An optimizer argument its class does not take fails here, before any run is opened
    # (reading the class's signature starts the backend, only when it must be read).
    check_optimizer(config.optimizer)
    # Loaded once, when first needed: before this job's run is opened (so a data plug-in's
    # bad output is refused with nothing recorded), never for a job that is skipped.
    load = functools.cache(lambda: load_data(config.data))

    if store is not None:
        try:
            parent, varying, claimed = _open_run(store, config, context, identity, load)
        except StoreUnavailable as error:
            if not context.multirun:
                raise
            return _not_started(context, error)
        if isinstance(claimed, tracking.CompletedRun):
            log.info(
                "Skipping: run %s already trained this experiment (%s)",
                claimed.run_id,
                claimed.outcome,
            )
            if parent is not None:
                store.sweeps.mark_skipped(parent, identity, claimed.run_id)
            return claimed.metrics
        run_logger = claimed
        log.info(
            "MLflow run %s, identity %s: %s",
            run_logger.run_id,
            identity,
            links.run_page(store.uri, store.experiment_id, run_logger.run_id, store.ui_url),
        )

    data = load()
    # Hooks that may stop training; every one sees every evaluation.
    stoppers = [on_eval] if on_eval else []
    reporter = None

    def hook(step: int, point: dict[str, float]) -> bool:
        log.info(
            "step %d: %s",
            step,
            " ".join(f"{key}={value:.4f}" for key, value in point.items() if key != "step"),
        )
        if run_logger is not None:
            run_logger.log_metrics({k: v for k, v in point.items() if k != "step"}, step)
        return any([stopper(step, point) for stopper in stoppers])

    try:
        if run_logger is not None:
            params = logged_params(config)
            if config.train.lr_scaling != "none":
                # The rate it trained with, scaled to its batch size, beside `lr`'s.
                params[EFFECTIVE_LR_PARAM] = effective_learning_rate(config)
            run_logger.log_params(params)
        if trial_reporter is not None and config.search.trial is not None:
            reporter = trial_reporter(config.search)
            stoppers.append(reporter.report)
        from bnlab.experiment import graph_options
        from bnlab.experiment.training import train_model

        graph_options.apply(config.model)

        if run_logger is not None:
            info = dataset_info(data, config.data.split_seed)
            run_logger.log_dataset(info.name, info.digest, info.source, info.profile)
            run_logger.set_tags({metrics.CLASSES_TAG: data.num_classes})
        result = train_model(config, data, on_eval=hook)
        final = {**result.final, metrics.OBJECTIVE: result.objective}
        log.info(
            "%s: objective %.4f, test accuracy %.4f",
            result.outcome,
            result.objective,
            final.get(metrics.TEST_ACCURACY, math.nan),
        )
        if run_logger is not None:
            # Summary values at step 0, as MLflow logs a plain value: the UI shows them as
            # one value per run, not as a lone point at the last step of a curve.
            run_logger.log_metrics(final, 0)
            _log_artifacts(run_logger, cfg, config, context, result, data.x_val[:2])
            run_logger.end(result.outcome)
        if reporter is not None:
            reporter.record(result.outcome, run_logger and run_logger.run_id)
        return final
    except tracking.ResultsLost as error:
        # Nothing is left to close: the store refused the run and the spool the journal.
        log.error("%s", error)
        if context.multirun:
            return {metrics.OBJECTIVE: math.nan}
        raise
    except BaseException as error:
        outcome = metrics.KILLED if interrupts.stopped_by(error) else metrics.FAILED
        if run_logger is not None:
            run_logger.log_error(error)
            _log_log_file(run_logger, context)
            try:
                run_logger.end(outcome)
            except tracking.ResultsLost as lost:
                # The failure's own record is what was lost; the sweep lists the job.
                log.error("%s", lost)
        if reporter is not None:
            reporter.record(outcome, run_logger and run_logger.run_id)
        if context.multirun and isinstance(error, Exception):
            # The sweep goes on; the failure is listed when the sweep ends.
            log.exception("Job failed")
            return {metrics.OBJECTIVE: math.nan}
        raise


def _open_run(
    store: tracking.Store,
    config: Config,
    context: JobContext,
    identity: str,
    load: Callable[[], Any],
) -> tuple[str | None, set[str] | None, tracking.CompletedRun | tracking.RunLogger]:
    """Finds the job's launch and claims its cell: (parent, varying keys, the claim)."""
    if not context.multirun:
        store.live.reap_stale()
    # Grid jobs and search trials alike find their launch's parent by its sweep id.
    parent, varying = (
        store.sweeps.sweep_parent(config.tracking.sweep_id) if context.multirun else (None, None)
    )
    if parent is None:
        varying = None
    claimed = _claim(store, config, context, identity, parent, varying, before_run=load)
    return parent, varying, claimed


def _not_started(context: JobContext, error: Exception) -> dict[str, float]:
    """A job of a sweep that could not reach the store before opening its run: one line
    naming the job and why; the sweep goes on, and its next launch trains the cell."""
    cell = " ".join(
        spell_override(override)
        for override in context.overrides
        if override_key(override) in SHORTHANDS or is_trained(override_key(override))
    )
    log.error("Job %s not started: %s", cell or "(defaults)", str(error).splitlines()[0])
    return {metrics.OBJECTIVE: math.nan}


def _prepare(cfg: DictConfig, context: JobContext) -> tuple[Config, tracking.Store | None]:
    """The job's checked config and its open store (None when tracking is off)."""
    config = validate(cfg, context.overrides)
    store = _open_store(config, context.multirun) if config.tracking.enabled else None
    if store is not None and not context.multirun:
        # A single run records what earlier jobs from this folder kept offline (a sweep's
        # launch does it once for all its jobs).
        store.spool.record_pending(Path(context.cwd) / config.tracking.spool_dir)
    return config, store


def _open_store(config: Config, multirun: bool) -> tracking.Store:
    """The job's store. A sweep's launch has already reached it, so a job of a sweep that
    finds it down meets an outage, not a bad URI: it waits as long as any store call
    (tracking.deadline_seconds), not just tracking.connect_seconds."""
    settings = config.tracking
    if multirun and settings.deadline_seconds > settings.connect_seconds:
        settings = dataclasses.replace(settings, connect_seconds=settings.deadline_seconds)
    return tracking.open_store(settings)


def _log_log_file(run_logger: tracking.RunLogger, context: JobContext) -> None:
    for handler in logging.getLogger().handlers:
        with contextlib.suppress(OSError):  # a full disk: the log keeps what it has
            handler.flush()
    if context.log_file is not None:
        run_logger.log_file(context.log_file)


def _log_artifacts(
    run_logger: tracking.RunLogger,
    cfg: DictConfig,
    config: Config,
    context: JobContext,
    result,
    example,
) -> None:
    from bnlab.job.curve import history_frame, plot_learning_curve

    run_logger.log_text(OmegaConf.to_yaml(cfg, resolve=True), "config.yaml")
    run_logger.log_text(json.dumps(describe(config), indent=2, default=str), "identity.json")
    if result.history:
        figure = plot_learning_curve(history_frame(result.history), title=run_name(config, []))
        run_logger.log_figure(figure, "learning_curve.png")
    if config.tracking.log_model and result.model is not None:
        versions = provenance.library_tags()
        backend = versions["keras_backend"]
        run_logger.log_model(
            result.model,
            example,
            [
                f"keras=={versions['keras_version']}",
                f"{backend}=={versions[f'{backend}_version']}",
            ],
        )
    _log_log_file(run_logger, context)
