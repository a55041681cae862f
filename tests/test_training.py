"""Training learns, is deterministic, and treats divergence as a result."""

from __future__ import annotations

import math

import pytest

from bnlab import metrics
from bnlab.config import validate
from bnlab.experiment.data import load_data
from bnlab.experiment.training import _intervals, steps_per_execution, train_model


def test_short_run_learns_above_chance(tiny_cfg) -> None:
    config = validate(tiny_cfg("data.limit=640", "train.steps=60", "train.eval_every=20"))
    result = train_model(config, load_data(config.data))
    assert result.outcome == metrics.FINISHED
    assert [point["step"] for point in result.history] == [20, 40, 60]
    assert result.final[metrics.BEST_VAL_ACCURACY] > 0.5
    assert result.final[metrics.TEST_ACCURACY] > 0.3
    assert result.objective == result.final[metrics.BEST_VAL_ACCURACY]
    assert result.final[metrics.SAMPLES_PER_SECOND] > 0


def test_same_config_and_seed_give_the_same_metrics(tiny_cfg) -> None:
    config = validate(tiny_cfg())
    data = load_data(config.data)
    first = train_model(config, data)
    second = train_model(config, data)
    assert first.history == second.history
    assert first.final[metrics.TEST_LOSS] == second.final[metrics.TEST_LOSS]
    other_seed = train_model(validate(tiny_cfg("seed=1")), data)
    assert other_seed.history != first.history


def test_divergence_stops_the_run_with_chance_objective(tiny_cfg) -> None:
    config = validate(tiny_cfg("bn=false", "optimizer=sgd", "lr=1e12"))
    result = train_model(config, load_data(config.data))
    assert result.outcome == metrics.DIVERGED
    assert result.objective == metrics.chance_accuracy(10)
    assert all(math.isfinite(value) for value in result.final.values())


def test_hook_can_stop_training_early(tiny_cfg) -> None:
    config = validate(tiny_cfg("train.steps=40"))
    result = train_model(config, load_data(config.data), on_eval=lambda step, point: step >= 20)
    assert result.outcome == metrics.PRUNED
    assert result.final["steps"] == 20


def test_schedule_ends_every_compiled_call_on_an_evaluation(tiny_cfg) -> None:
    config = validate(tiny_cfg("train.steps=1000", "train.eval_every=50"))
    assert steps_per_execution(config) == 25
    assert sum(interval * count for interval, count in _intervals(config)) == 1000
    odd = validate(tiny_cfg("train.steps=70", "train.eval_every=20"))
    assert steps_per_execution(odd) == 10
    assert _intervals(odd) == [(20, 3), (10, 1)]


@pytest.mark.parametrize("activation", ["tanh", "elu", "selu", "gelu", "swish", "softplus"])
def test_every_activation_trains_and_evaluates_with_the_fused_bn_kernel(
    tiny_cfg, activation: str
) -> None:
    # TensorFlow's remapper fused FusedBatchNorm with these activations at evaluation and
    # stopped with "Fusion is not implemented" on the CPU (bnlab/graph_options.py).
    from bnlab.job import runner as job

    final = job.run(
        tiny_cfg(f"activation={activation}", "model.bn_impl=fused", "tracking.enabled=false")
    )
    assert 0 <= final[metrics.OBJECTIVE] <= 1


def test_the_optimizer_trains_at_the_learning_rate_scaled_to_the_batch(tiny_cfg) -> None:
    from bnlab.experiment.training import compile_model

    config = validate(tiny_cfg("lr=0.001", "train.batch_size=8", "train.lr_scaling=sqrt"))
    model = compile_model(config, load_data(config.data))
    assert float(model.optimizer.learning_rate) == pytest.approx(0.0005)
