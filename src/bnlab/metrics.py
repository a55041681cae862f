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
SAMPLES_PER_SECOND = "perf/samples_per_second"
STEPS_PER_SECOND = "perf/steps_per_second"
WALL_TIME = "perf/wall_time_s"

CURVE_METRICS = (TRAIN_LOSS, TRAIN_ACCURACY, VAL_LOSS, VAL_ACCURACY)

# The value a job returns to a sweeper: best validation accuracy, or chance when it diverged.
OBJECTIVE = "objective"
CHANCE_ACCURACY = 0.1

# Outcomes of a job, stored in the `outcome` tag.
FINISHED = "finished"
DIVERGED = "diverged"
PRUNED = "pruned"
FAILED = "failed"
KILLED = "killed"
SKIPPED = "skipped"
# Outcomes whose result is complete: a relaunched sweep skips them.
COMPLETE_OUTCOMES = (FINISHED, DIVERGED, PRUNED)
