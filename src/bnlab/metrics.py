"""Metric and tag names shared by the trainer, the tracking store and the report.

Every curve is logged with step = global training step.
"""

TRAIN_LOSS = "train/loss"
TRAIN_ACCURACY = "train/accuracy"
VAL_LOSS = "val/loss"
VAL_ACCURACY = "val/accuracy"
TEST_LOSS = "test/loss"
TEST_ACCURACY = "test/accuracy"
BEST_VAL_ACCURACY = "val/best_accuracy"
# Inside the network (train.internals=true), at every evaluation: percentiles of the input to
# the last hidden activation and each layer's gradient norm; at the end, validation accuracy
# with BN using batch statistics (training mode), beside val/accuracy's moving statistics.
PREACT_P15 = "internals/preact_p15"
PREACT_P50 = "internals/preact_p50"
PREACT_P85 = "internals/preact_p85"
GRAD_NORM_PREFIX = "internals/grad_norm/"
VAL_ACCURACY_BATCH_STATS = "val/accuracy_batch_stats"
VAL_ACCURACY_MOVING_STATS = "val/accuracy_moving_stats"
# Why BN helps (train.mechanism=true, bnlab.experiment.mechanism), at every evaluation:
# internal covariate shift as Santurkar et al. define it, and the loss landscape along the
# gradient; at the end, each one's mean over the run as `<name>_mean`.
MECHANISM_ICS_L2 = "mechanism/ics_l2"
MECHANISM_ICS_COSINE = "mechanism/ics_cosine"
MECHANISM_LOSS_VARIATION = "mechanism/loss_variation"
MECHANISM_GRADIENT_CHANGE = "mechanism/gradient_change"
MECHANISM_BETA_SMOOTHNESS = "mechanism/beta_smoothness"
MECHANISM_INPUT_SHIFT = "mechanism/input_shift"
MECHANISM_KEYS = (
    MECHANISM_ICS_L2,
    MECHANISM_ICS_COSINE,
    MECHANISM_LOSS_VARIATION,
    MECHANISM_GRADIENT_CHANGE,
    MECHANISM_BETA_SMOOTHNESS,
    MECHANISM_INPUT_SHIFT,
)
MEAN_SUFFIX = "_mean"
# Seconds a run spent on those measures (left out of its steps per second).
MECHANISM_SECONDS = "perf/mechanism_seconds"
# The model's parameter count (weights and BN's statistics), logged once.
PARAMETERS = "model/parameters"
# Seconds a run spent measuring its internals (left out of its steps per second).
INTERNALS_SECONDS = "perf/internals_seconds"
# A claim's side-by-side step timing (bnlab.experiment.step_timing): seconds per step of each
# variant,
# one point per round, under `timing/seconds_per_step/<the timed key's value>`.
TIMING_PREFIX = "timing/seconds_per_step/"
# Training speed over the evaluation intervals after the first (a fresh model traces its
# functions in its first), evaluation not counted.
SAMPLES_PER_SECOND = "perf/samples_per_second"
STEPS_PER_SECOND = "perf/steps_per_second"
WALL_TIME = "perf/wall_time_s"

CURVE_METRICS = (TRAIN_LOSS, TRAIN_ACCURACY, VAL_LOSS, VAL_ACCURACY)

# The value a job returns to a sweeper: best validation accuracy, or chance when it diverged.
OBJECTIVE = "objective"
# How many classes the run's data hold (a tag), from which chance accuracy follows.
CLASSES_TAG = "data_classes"
# The validation accuracy whose first crossing is compared ("steps to target"), and the best
# validation accuracy from which a run counts as having learned.
TARGET_ACCURACY = 0.9
LEARNED_ACCURACY = 0.5
# Validation images a BN model's end-of-run accuracies with batch and moving statistics
# are measured on (experiment.internals): one image is 1/256 of accuracy.
BATCH_STATS_IMAGES = 256


def chance_accuracy(classes: int) -> float:
    """The accuracy of guessing among `classes` balanced classes."""
    return 1.0 / classes


# Outcomes of a job, stored in the `outcome` tag.
FINISHED = "finished"
DIVERGED = "diverged"
PRUNED = "pruned"
FAILED = "failed"
KILLED = "killed"
SKIPPED = "skipped"
# Outcomes of a job that trained its whole schedule: only these satisfy a later job
# with the same identity. A pruned trial stopped early, so it never does.
COMPLETE_OUTCOMES = (FINISHED, DIVERGED)

# Tags MLflow itself reads.
PARENT_TAG = "mlflow.parentRunId"
RUN_NAME_TAG = "mlflow.runName"
# Tags this project writes on runs.
ROLE_TAG = "role"  # job, sweep, search or report
OUTCOME_TAG = "outcome"  # one of the outcomes above
IDENTITY_TAG = "identity"  # bnlab.job.identity.identity_hash of a job
IDENTITY_SCHEME_TAG = "identity_scheme"  # bnlab.job.identity.SCHEME when the job was recorded
# CPU threads the job's backend was pinned to ("default" when left alone).
THREADS_TAG = "threads"
SWEEP_ID_TAG = "sweep_id"  # the launch a job or parent belongs to
OVERRIDES_TAG = "overrides"
# On a sweep parent: the JSON list of keys whose value differs between its jobs.
VARYING_TAG = "sweep.varying"
ERROR_TAG = "error"
SPOOL_TAG = "spooled_from"  # a run recorded from a spool: the run its job had opened
HEARTBEAT_TAG = "heartbeat"  # Unix time of the last sign of life of a RUNNING run
STUDY_TAG = "study"  # the Optuna study of a search and its trials
TRIAL_TAG = "trial"  # a trial's number in its study
# On a claim's side-by-side step timing (role "timing"): the identity of what it timed.
TIMING_TAG = "timing"
# On a sweep's parent: one tag per job that reused a complete run, valued with that run's id.
SKIPPED_TAG_PREFIX = "skipped."
# On a sweep's parent: the count of each outcome, e.g. jobs.finished.
COUNT_TAG_PREFIX = "jobs."
