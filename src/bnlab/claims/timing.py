"""A claim's side-by-side step timing, recorded: one run (role "timing") per timed cell.

`python -m bnlab.claims.timing NAME [overrides]`, which the claims suite runs after the
claim's sweep. A cell whose timing is recorded already is not timed again. The process
pins its backend to the threads each of the study's jobs had, so the step times are
those of a job of the study, without the other jobs' load.
"""

from __future__ import annotations

import logging
import sys

from hydra import compose, initialize_config_dir

from bnlab import interrupts, metrics
from bnlab.config import CONF_DIR, ConfigError, register_configs
from bnlab.config.errors import EXIT_INTERRUPTED, USER_ERRORS, exit_on_user_error
from bnlab.config.overrides import split_swept
from bnlab.experiment import threads
from bnlab.tracking import provenance

log = logging.getLogger(__name__)


def _pin_threads(name: str, overrides: list[str]) -> int | None:
    """Pins the backend before anything imports it, as the study's launcher pins a job."""
    register_configs()
    # A swept override (`seed=3,4,5`) chooses cells, not threads; composition refuses it.
    fixed, _ = split_swept(overrides)
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        composed = compose(
            "config", [f"+experiment=claims/{name}", *fixed], return_hydra_config=True
        )
    count = threads.per_job(composed.hydra.launcher, int(composed.train.threads))
    threads.pin(count)
    return count


def time_claim(name: str, overrides: list[str], job_threads: int | None = None) -> int:
    """Times each cell of the claim's study not timed yet; returns how many it timed."""
    from bnlab import tracking
    from bnlab.claims import suite as claim_suite
    from bnlab.experiment.data import load_data
    from bnlab.experiment.step_timing import time_side_by_side

    study = claim_suite.expand(name, overrides)
    config = study.claim
    timing = config.claim.timing
    if not timing.key:
        raise ConfigError(f"claim.timing: the claim '{name}' times nothing side by side")
    if not config.tracking.enabled:
        raise ConfigError("tracking.enabled: a timing is recorded in the store; it is off")
    store = tracking.open_store(config.tracking)
    data = None
    timed = 0
    for cell in study.timing:
        done = store.find_timing(cell.identity)
        if done is not None:
            log.info("Step times of %s: recorded already (run %s)", cell.title, done)
            continue
        data = data or load_data(config.data)
        run = store.start_run(
            f"step time: {cell.title} ({timing.key} {' vs '.join(cell.variants)})",
            {
                metrics.ROLE_TAG: "timing",
                metrics.TIMING_TAG: cell.identity,
                metrics.THREADS_TAG: str(job_threads or "default"),
                **provenance.git_tags(),
                **provenance.host_tags(),
            },
        )
        run.start_heartbeat(config.tracking.heartbeat_seconds)
        try:
            run.log_params(
                {
                    "claim.id": config.claim.id,
                    "claim.timing.key": timing.key,
                    "claim.timing.steps": timing.steps,
                    "claim.timing.rounds": timing.rounds,
                    **cell.settings,
                }
            )
            found = time_side_by_side(cell.variants, data, timing.steps, timing.rounds)
            for number in range(timing.rounds):
                run.log_metrics(
                    {f"{metrics.TIMING_PREFIX}{label}": found[label][number] for label in found},
                    number,
                )
            run.end(metrics.FINISHED)
        except BaseException as error:
            run.log_error(error)
            run.end(metrics.KILLED if interrupts.stopped_by(error) else metrics.FAILED)
            raise
        ratio = sorted(a / b for a, b in zip(*found.values(), strict=False))
        log.info(
            "Step times of %s: %s; median ratio %s %.3f",
            cell.title,
            ", ".join(f"{label} {min(values) * 1e3:.1f} ms" for label, values in found.items()),
            "/".join(found),
            ratio[len(ratio) // 2],
        )
        timed += 1
    return timed


def main(argv: list[str]) -> int:
    if not argv or argv[0].startswith("-"):
        print("usage: python -m bnlab.claims.timing NAME [overrides]", file=sys.stderr)
        return 2
    name, overrides = argv[0], argv[1:]
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    interrupts.install()  # a SIGTERM, like Ctrl-C, closes the timing's run as KILLED
    try:
        time_claim(name, overrides, _pin_threads(name, overrides))
    except USER_ERRORS as error:
        exit_on_user_error(error)
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
