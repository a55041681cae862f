"""The Optuna sweeper's work (Hydra imports it only when a launch selects the sweeper):
a Hydra sweeper that runs an Optuna (>= 4) study, trials launched by any Hydra launcher.

Select it with `hydra/sweeper=bnlab_optuna` (the saved searches in conf/hparams_search
do). The search space uses Hydra's sweep syntax: interval(...), tag(log, interval(...)),
choice(...) and range(...).
"""

import logging
import math
import threading
from typing import Any

import optuna
from hydra.core.plugins import Plugins
from hydra.core.utils import JobReturn, JobStatus
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig

from bnlab import metrics
from bnlab.config import ConfigError
from bnlab.config.overrides import parse as parse_overrides
from bnlab.heartbeat import Heartbeat
from bnlab.redaction import redact_text
from bnlab.sweep import callback as sweep
from bnlab.sweep import grid, search
from bnlab.sweep.launch_configs import DerivingConfigLoader
from bnlab.sweep.recorder import SweepRecorder
from bnlab.values import format_value

log = logging.getLogger(__name__)

FINISHED_STATES = (
    optuna.trial.TrialState.COMPLETE,
    optuna.trial.TrialState.PRUNED,
    optuna.trial.TrialState.FAIL,
)


class OptunaSweeper(Sweeper):
    """Asks Optuna for `n_jobs` trials at a time and launches them as Hydra jobs."""

    # It checks its space and records the search's parent run itself (bnlab.sweep.callback).
    records_own_parent = True

    def __init__(
        self,
        study_name: str,
        storage: str,
        direction: str,
        n_trials: int,
        n_jobs: int,
        sampler: Any,
        pruner: Any,
        params: Any,
        heartbeat_seconds: int = 10,
        stale_after_seconds: int = 60,
    ) -> None:
        self.study_name = study_name
        self.storage_url = storage
        self.direction = direction
        self.n_trials = n_trials
        self.n_jobs = n_jobs
        self.sampler_conf = sampler
        self.pruner_conf = pruner
        self.params = dict(params or {})
        self.heartbeat_seconds = heartbeat_seconds
        self.stale_after_seconds = stale_after_seconds
        self.config: DictConfig | None = None
        self.recorder: SweepRecorder | None = None

    def setup(
        self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig
    ) -> None:
        self.config = config
        # Trials differ from the first in plain values (the sampled ones): the launcher
        # derives their configs from the first's (`launch_configs`) instead of composing.
        self.hydra_context = HydraContext(
            config_loader=DerivingConfigLoader(hydra_context.config_loader),
            callbacks=hydra_context.callbacks,
        )
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=self.hydra_context, task_function=task_function, config=config
        )

    def _split_arguments(self, arguments: list[str]) -> tuple[dict[str, str], list[str]]:
        """Command-line sweep expressions join the space; plain overrides apply to every trial.

        A plain override of a searched parameter (e.g. `bn=true`) pins it: it leaves
        the space.
        """
        space = dict(self.params)
        fixed = []
        for argument, override in zip(arguments, parse_overrides(arguments), strict=True):
            key = override.get_key_element()
            if override.is_sweep_override():
                space[key] = argument.split("=", 1)[1]
            else:
                space.pop(key, None)
                fixed.append(argument)
        return space, fixed

    def _check(self, dimensions: list[search.Dimension], fixed: list[str]) -> None:
        """Every bound and choice of every dimension must make a valid job config."""
        if self.direction not in search.DIRECTIONS:
            raise ConfigError(
                f"hydra.sweeper.direction: '{self.direction}' "
                f"(accepted: {', '.join(search.DIRECTIONS)})"
            )
        if self.n_trials < 1 or self.n_jobs < 1:
            raise ConfigError("hydra.sweeper.n_trials and hydra.sweeper.n_jobs must be >= 1")
        if not 0 < self.heartbeat_seconds < self.stale_after_seconds:
            raise ConfigError(
                "hydra.sweeper.stale_after_seconds must be greater than "
                "hydra.sweeper.heartbeat_seconds, which must be > 0"
            )
        if not dimensions:
            raise ConfigError("hydra.sweeper.params: the search space is empty")
        jobs = []
        for dimension in dimensions:
            dist = dimension.distribution
            values = list(dist.choices) if hasattr(dist, "choices") else [dist.low, dist.high]
            base = [
                search.override_for(d.name, _first(d)) for d in dimensions if d is not dimension
            ]
            jobs += [[*fixed, *base, search.override_for(dimension.name, v)] for v in values]
        grid.check_jobs(
            self.config.hydra.job.config_name, jobs, grid.search_path_overrides(self.config)
        )

    def sweep(self, arguments: list[str]) -> None:
        assert self.config is not None
        space, fixed = self._split_arguments(arguments)
        dimensions = search.parse_space(space)
        self._check(dimensions, fixed)
        sampler_settings = search.settings(self.sampler_conf)
        pruner_settings = search.settings(self.pruner_conf)
        sampler = search.make_sampler(sampler_settings, dimensions)
        pruner = search.make_pruner(pruner_settings)
        storage = search.open_storage(
            self.storage_url, self.heartbeat_seconds, self.stale_after_seconds
        )
        try:
            study = optuna.create_study(
                study_name=self.study_name,
                storage=storage,
                sampler=sampler,
                pruner=pruner,
                direction=self.direction,
                load_if_exists=True,
            )
        except Exception as error:
            raise ConfigError(f"hydra.sweeper.storage: {str(error).splitlines()[0]}") from error
        if study.trials:
            # A resumed study must not replay the first launch's random draws.
            study.sampler = search.make_sampler(sampler_settings, dimensions, len(study.trials))
        # Trials rebuild the pruner from the study, wherever they run.
        study.set_user_attr(search.PRUNER_ATTR, pruner_settings)
        # Trials of a dead launch are failed; those of a live search keep running.
        optuna.storages.fail_stale_trials(study)
        self._open_parent(space)
        heartbeat = _TrialHeartbeat(storage, self.heartbeat_seconds)
        try:
            self._optimize(study, storage, dimensions, fixed, heartbeat)
        except BaseException:
            # This launch's own unfinished trials end with it.
            for trial_id in heartbeat.trial_ids():
                storage.set_trial_state_values(trial_id, state=optuna.trial.TrialState.FAIL)
            self._close_parent(interrupted=True)
            raise
        finally:
            heartbeat.stop()
        self._close_parent(interrupted=False)

    def _open_parent(self, space: dict[str, str]) -> None:
        config = self.config
        if not config.tracking.enabled:
            return
        # The study's parent run is found again by its storage as recorded: without a password.
        storage = redact_text(self.storage_url)
        reuse = {
            metrics.ROLE_TAG: "search",
            metrics.STUDY_TAG: self.study_name,
            "optuna_storage": storage,
        }
        self.recorder = SweepRecorder.open(
            config,
            role="search",
            name=f"search {self.study_name}",
            params={
                **{f"search.{name}": expression for name, expression in space.items()},
                **{f"sampler.{k}": v for k, v in search.settings(self.sampler_conf).items()},
                **{f"pruner.{k}": v for k, v in search.settings(self.pruner_conf).items()},
                "direction": self.direction,
                "study_name": self.study_name,
                "storage": self.storage_url,
            },
            tags={metrics.STUDY_TAG: self.study_name, "optuna_storage": storage},
            reuse=reuse,
        )
        sweep.OPEN.hold(self.recorder)
        log.info("Study '%s' in %s", self.study_name, self.storage_url)

    def _optimize(
        self,
        study: optuna.Study,
        storage: optuna.storages.RDBStorage,
        dimensions: list[search.Dimension],
        fixed: list[str],
        heartbeat: "_TrialHeartbeat",
    ) -> None:
        finished = _count_finished(study)
        if finished >= self.n_trials:
            log.info("Study '%s' already has %d finished trials", self.study_name, finished)
        job_index = len(study.trials)
        study_id = storage.get_study_id_from_name(self.study_name)
        while finished < self.n_trials:
            batch = min(self.n_jobs, self.n_trials - finished)
            trials = [study.ask() for _ in range(batch)]
            ids = [
                storage.get_trial_id_from_study_id_trial_number(study_id, trial.number)
                for trial in trials
            ]
            heartbeat.watch(ids)
            overrides = []
            for trial in trials:
                values = [search.override_for(d.name, search.suggest(trial, d)) for d in dimensions]
                overrides.append(
                    [
                        *fixed,
                        *values,
                        f"search.study={self.study_name}",
                        f"search.storage={self.storage_url}",
                        f"search.trial={trial.number}",
                    ]
                )
            results = self.launcher.launch(overrides, initial_job_idx=job_index)
            exhausted = False
            for trial, trial_id, result in zip(trials, ids, results, strict=True):
                exhausted |= _tell(study, storage, trial, trial_id, result)
            heartbeat.unwatch(ids)
            finished += batch
            job_index += batch
            if self.recorder is not None:
                _log_progress(study, self.recorder, finished)
            if exhausted:
                log.info("The grid of study '%s' is exhausted", self.study_name)
                break

    def _close_parent(self, interrupted: bool) -> None:
        if self.recorder is not None:
            recorder, self.recorder = self.recorder, None
            # Held while it closes: a Ctrl-C that lands in the close leaves it to the
            # command's abort, which closes it as KILLED, not RUNNING for ever.
            if interrupted:
                recorder.close(interrupted=True)
            else:
                sweep.finish(recorder)
            sweep.OPEN.release()


class _TrialHeartbeat:
    """Stamps this launch's running trials in the Optuna storage from a background thread."""

    def __init__(self, storage: optuna.storages.RDBStorage, seconds: int) -> None:
        self.storage = storage
        self._ids: set[int] = set()
        self._lock = threading.Lock()
        self._heartbeat = Heartbeat(seconds, self._beat, "heartbeat of this search's trials")

    def _beat(self) -> None:
        for trial_id in self.trial_ids():
            self.storage.record_heartbeat(trial_id)

    def trial_ids(self) -> list[int]:
        with self._lock:
            return sorted(self._ids)

    def watch(self, ids: list[int]) -> None:
        for trial_id in ids:
            self.storage.record_heartbeat(trial_id)
        with self._lock:
            self._ids.update(ids)

    def unwatch(self, ids: list[int]) -> None:
        with self._lock:
            self._ids.difference_update(ids)

    def stop(self) -> None:
        self._heartbeat.stop()


def _first(dimension: search.Dimension) -> Any:
    dist = dimension.distribution
    return dist.choices[0] if hasattr(dist, "choices") else dist.low


def _counts(trial: optuna.trial.FrozenTrial) -> bool:
    """Whether a trial counts toward `n_trials`.

    A FAIL whose job never recorded an outcome on it failed around the job, not in it
    (its storage was unreachable, its process was lost): it does not use up a trial,
    so a relaunch asks for another in its place.
    """
    if trial.state == optuna.trial.TrialState.FAIL:
        return search.OUTCOME_ATTR in trial.user_attrs
    return trial.state in FINISHED_STATES


def _count_finished(study: optuna.Study) -> int:
    return sum(_counts(trial) for trial in study.trials)


def _tell(
    study: optuna.Study,
    storage: optuna.storages.RDBStorage,
    trial: optuna.Trial,
    trial_id: int,
    result: JobReturn,
) -> bool:
    """Records a finished job in the study: value, PRUNED or FAIL.

    The job wrote its outcome on the trial in the storage (search.TrialReporter),
    wherever it ran; the value is what the job returned.

    Returns:
        True when the sampler has nothing left to ask (an exhausted grid).
    """
    outcome = storage.get_trial(trial_id).user_attrs.get(search.OUTCOME_ATTR)
    value = result.return_value if result.status == JobStatus.COMPLETED else math.nan
    try:
        if outcome == metrics.PRUNED:
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
        elif outcome not in metrics.COMPLETE_OUTCOMES or not _finite(value):
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
        else:
            study.tell(trial, value)
    except RuntimeError:
        # GridSampler calls study.stop() once every point is used; outside
        # study.optimize that raises a bare RuntimeError, after the trial's state
        # has been stored. Anything else is re-raised.
        sampler = study.sampler
        if isinstance(sampler, optuna.samplers.GridSampler) and sampler.is_exhausted(study):
            return True
        raise
    return False


def _finite(value: Any) -> bool:
    return isinstance(value, float) and math.isfinite(value)


def _log_progress(study: optuna.Study, recorder: SweepRecorder, finished: int) -> None:
    """Best value and params so far, on the study's parent run."""
    parent = recorder.run
    try:
        best = study.best_trial
    except ValueError:
        return  # no completed trial yet
    parent.log_metrics({"search/best_value": best.value, "search/trials": finished}, finished)
    parent.flush()
    parent.set_tags(
        {
            "best.trial": best.number,
            "best.value": best.value,
            **{f"best.{name}": format_value(value) for name, value in best.params.items()},
        }
    )
