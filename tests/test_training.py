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


@pytest.mark.parametrize(
    "variant",
    [
        ["model.bn_noise=0.5", "train.internals=true", "train.mechanism=true"],
        ["+normalization=group", "optimizer=rmsprop"],
        ["model=mlp", "data=digits", "bn=false", "activation=sigmoid"],
    ],
    ids=["noisy-bn-with-probes", "groupnorm-rmsprop", "plain-mlp"],
)
def test_a_job_on_a_kept_model_trains_as_on_a_fresh_one(tiny_cfg, variant) -> None:
    # A worker's next job of the same graph gets its last model back (compiled.py). Its
    # seed's weights, random-seed states and a zeroed optimizer make it a fresh model,
    # even after a job that diverged (NaN in every weight) at another learning rate.
    from bnlab.experiment import compiled

    job = validate(tiny_cfg(*variant, "seed=1", "lr=0.003"))
    data = load_data(job.data)
    compiled._kept.clear()
    fresh = train_model(job, data)
    diverged = train_model(validate(tiny_cfg(*variant, "seed=2", "lr=1e12")), data)
    assert diverged.model is fresh.model  # the kept model, not a new one
    again = train_model(job, data)
    assert again.model is fresh.model
    assert again.outcome == fresh.outcome == metrics.FINISHED
    assert again.history == fresh.history
    for key in (metrics.TEST_LOSS, metrics.TEST_ACCURACY, metrics.BEST_VAL_ACCURACY):
        assert again.final[key] == fresh.final[key]
    assert float(fresh.model.optimizer.learning_rate) == pytest.approx(0.003)


def test_only_a_built_model_with_a_plain_learning_rate_is_kept() -> None:
    # A plug-in's model that creates its variables at its first call cannot be given a
    # fresh model's state, and a schedule has no learning rate to set per job: both are
    # compiled anew for every job.
    import keras

    from bnlab.experiment import compiled

    class Lazy(keras.Model):
        def __init__(self) -> None:
            super().__init__()
            self.dense = keras.layers.Dense(3)

        def call(self, x):
            return self.dense(x)

    def compiled_with(model: keras.Model, learning_rate) -> keras.Model:
        model.compile(optimizer=keras.optimizers.Adam(learning_rate), loss="mse")
        return model

    def built() -> keras.Model:
        return keras.Sequential([keras.Input((2,)), keras.layers.Dense(3)])

    schedule = keras.optimizers.schedules.ExponentialDecay(0.1, decay_steps=10, decay_rate=0.5)
    assert compiled._keepable(compiled_with(built(), 0.01))
    assert not compiled._keepable(compiled_with(Lazy(), 0.01))
    assert not compiled._keepable(compiled_with(built(), schedule))
    assert not compiled._same_variables(Lazy().variables, built().variables)


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
    from bnlab.experiment.compiled import compile_model
    from bnlab.experiment.training import steps_per_execution

    config = validate(tiny_cfg("lr=0.001", "train.batch_size=8", "train.lr_scaling=sqrt"))
    model = compile_model(config, load_data(config.data), steps_per_execution(config))
    assert float(model.optimizer.learning_rate) == pytest.approx(0.0005)
