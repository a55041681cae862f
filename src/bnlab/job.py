"""One training job: validate, skip if already done, train, record."""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from bnlab import metrics, provenance, tracking
from bnlab.config import Config, config_hash, flatten, validate
from bnlab.data import check_source, load_data
from bnlab.sweep import read_sweep_file, write_job_file
from bnlab.training import EvalHook, train_model

log = logging.getLogger(__name__)

SHORTHANDS = ("bn", "lr", "activation", "seed")
# Overrides that do not change the experiment and so stay out of run names.
QUIET_PREFIXES = ("tracking.", "train.rerun", "search.")


class InjectedFailure(RuntimeError):
    """Raised by a job configured with train.fail=true."""


@dataclass
class JobContext:
    """What Hydra knows about this job: its overrides, folder and sweep."""

    overrides: list[str] = field(default_factory=list)
    output_dir: Path | None = None
    log_file: Path | None = None
    cwd: str = "."
    multirun: bool = False
    sweep: dict[str, Any] | None = None

    @classmethod
    def from_hydra(cls) -> JobContext:
        if not HydraConfig.initialized():
            return cls()
        hydra_cfg = HydraConfig.get()
        output_dir = Path(hydra_cfg.runtime.output_dir)
        multirun = hydra_cfg.mode == RunMode.MULTIRUN
        return cls(
            overrides=list(hydra_cfg.overrides.task),
            output_dir=output_dir,
            log_file=output_dir / f"{hydra_cfg.job.name}.log",
            cwd=hydra_cfg.runtime.cwd,
            multirun=multirun,
            sweep=read_sweep_file(output_dir) if multirun else None,
        )


def run_name(config: Config, overrides: list[str]) -> str:
    """Names a run for what varies: the four shorthands, then any other override."""
    parts = [
        f"bn={str(config.model.bn).lower()}",
        f"lr={config.optimizer.lr:g}",
        f"activation={config.model.activation}",
        f"seed={config.train.seed}",
    ]
    if config.search.trial is not None:
        parts.append(f"trial={config.search.trial}")
    for override in overrides:
        key = override.split("=", 1)[0].lstrip("+~")
        if key not in SHORTHANDS and not key.startswith(QUIET_PREFIXES):
            parts.append(override)
    return " ".join(parts)


def _record(context: JobContext, outcome: str, run_id: str | None, **extra: Any) -> None:
    if context.output_dir is not None:
        write_job_file(
            context.output_dir,
            {
                "outcome": outcome,
                "run_id": run_id,
                "overrides": context.overrides,
                "sweep_id": (context.sweep or {}).get("sweep_id"),
                **extra,
            },
        )


def _open_run(
    store: tracking.Store, config: Config, cfg: DictConfig, context: JobContext, digest: str
) -> tracking.RunLogger:
    tags = {
        tracking.ROLE_TAG: "job",
        tracking.CONFIG_HASH_TAG: digest,
        tracking.OUTCOME_TAG: "running",
        tracking.OVERRIDES_TAG: json.dumps(context.overrides),
        **provenance.git_tags(context.cwd),
        **provenance.library_tags(),
        **tracking.versions(),
    }
    if config.search.trial is not None:
        tags.update({"study": config.search.study, "trial": str(config.search.trial)})
    parent = None
    if context.sweep is not None:
        parent = context.sweep.get("parent_run_id")
        tags[tracking.SWEEP_ID_TAG] = context.sweep["sweep_id"]
    adopted = None if context.multirun else tracking.active_run_id_from_env()
    if adopted:
        run = store.adopt_run(adopted, tags, name=run_name(config, context.overrides))
    else:
        run = store.start_run(run_name(config, context.overrides), tags, parent)
    run.log_params(flatten(cfg))
    return run


def run(cfg: DictConfig, on_eval: EvalHook | None = None) -> dict[str, float]:
    """Runs one job of the experiment and returns its final metrics.

    The returned dict holds `objective` (best validation accuracy, or chance
    accuracy when the loss diverged), the test metrics and throughput. A job
    whose config hash already has a complete run is not retrained: the recorded
    metrics are returned instead, unless `train.rerun=true`.

    Args:
        cfg: The job config composed by Hydra.
        on_eval: Extra hook after every evaluation (e.g. a pruner); True stops.
    """
    config = validate(cfg)
    check_source(config.data)
    context = JobContext.from_hydra()
    digest = config_hash(cfg)
    store = run_logger = None
    if config.tracking.enabled:
        store = tracking.open_store(config.tracking)
        # A search trial always trains: the study needs its curve and its pruning.
        searching = config.search.trial_id is not None
        done = None if config.train.rerun or searching else store.find_complete_run(digest)
        if done is not None:
            log.info("Skipping: run %s already has this config (%s)", done.run_id, done.outcome)
            _record(context, metrics.SKIPPED, done.run_id, previous_outcome=done.outcome)
            return done.metrics
        run_logger = _open_run(store, config, cfg, context, digest)
        log.info("MLflow run %s (%s)", run_logger.run_id, store.uri)

    # Hooks that may stop training; every one sees every evaluation.
    stoppers = [on_eval] if on_eval else []

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
        if config.search.trial_id is not None:
            from bnlab.search import trial_reporter

            stoppers.append(trial_reporter(config.search))
        if config.train.fail:
            raise InjectedFailure("train.fail=true: this job fails on purpose")
        data = load_data(config.data)
        result = train_model(config, data, on_eval=hook)
        final = {**result.final, metrics.OBJECTIVE: result.objective}
        log.info(
            "%s: objective %.4f, test accuracy %.4f",
            result.outcome,
            result.objective,
            final.get(metrics.TEST_ACCURACY, math.nan),
        )
        if run_logger is not None:
            run_logger.log_metrics(final, int(final["steps"]))
            _log_artifacts(run_logger, cfg, config, context, result)
            run_logger.end(result.outcome)
        _record(context, result.outcome, run_logger and run_logger.run_id)
        return final
    except BaseException as error:
        outcome = metrics.FAILED if isinstance(error, Exception) else metrics.KILLED
        if run_logger is not None:
            run_logger.log_error(error)
            _log_log_file(run_logger, context)
            run_logger.end(outcome)
        _record(
            context,
            outcome,
            run_logger and run_logger.run_id,
            error=f"{type(error).__name__}: {error}".splitlines()[0],
        )
        if context.multirun and isinstance(error, Exception):
            # The sweep goes on; the failure is listed when the sweep ends.
            log.exception("Job failed")
            return {metrics.OBJECTIVE: math.nan}
        raise


def _log_log_file(run_logger: tracking.RunLogger, context: JobContext) -> None:
    for handler in logging.getLogger().handlers:
        handler.flush()
    if context.log_file is not None:
        run_logger.log_file(context.log_file)


def _log_artifacts(
    run_logger, cfg: DictConfig, config: Config, context: JobContext, result
) -> None:
    from bnlab.report import history_frame, plot_learning_curve

    run_logger.log_text(OmegaConf.to_yaml(cfg, resolve=True), "config.yaml")
    if result.history:
        figure = plot_learning_curve(history_frame(result.history), title=run_name(config, []))
        run_logger.log_figure(figure, "learning_curve.png")
        import matplotlib.pyplot as plt

        plt.close(figure)
    if config.tracking.log_model and result.model is not None:
        run_logger.log_model(result.model)
    _log_log_file(run_logger, context)
