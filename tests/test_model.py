"""The network is exactly the blog's, with and without BN."""

from __future__ import annotations

import pytest
from keras import layers

from bnlab.experiment.batchnorm import FusedBatchNormalization
from bnlab.plugins.bn_switch import ACTIVATIONS, default_bn_impl
from bnlab.plugins.cnn import build_cnn
from bnlab.plugins.mlp import build_mlp

BN_LAYERS = {"keras": layers.BatchNormalization, "fused": FusedBatchNormalization}


def build_model(**settings):
    """The blog's CNN for 28x28 grey images and 10 classes."""
    return build_cnn(input_shape=(28, 28, 1), num_classes=10, **settings)


def kinds(model) -> list[str]:
    return [type(layer).__name__ for layer in model.layers]


@pytest.mark.parametrize("impl", BN_LAYERS)
def test_bn_model_has_bn_after_every_conv_and_dense_and_no_biases(impl: str) -> None:
    model = build_model(bn=True, bn_impl=impl)
    for index, layer in enumerate(model.layers):
        if isinstance(layer, (layers.Conv2D, layers.Dense)):
            assert layer.use_bias is False
            assert isinstance(model.layers[index + 1], BN_LAYERS[impl])
            assert isinstance(model.layers[index + 2], layers.Activation)
    assert kinds(model).count(BN_LAYERS[impl].__name__) == 5
    assert model.layers[-1].get_config()["activation"] == "softmax"


def test_tensorflow_defaults_to_the_fused_kernel() -> None:
    assert default_bn_impl() == "fused"


def test_plain_model_has_biases_and_no_bn() -> None:
    model = build_model(bn=False)
    assert "BatchNormalization" not in kinds(model)
    trainable = [
        layer for layer in model.layers if isinstance(layer, (layers.Conv2D, layers.Dense))
    ]
    assert len(trainable) == 5 and all(layer.use_bias for layer in trainable)


def test_architecture_is_the_blogs() -> None:
    model = build_model(bn=False)
    convs = [layer for layer in model.layers if isinstance(layer, layers.Conv2D)]
    assert [conv.filters for conv in convs] == [32, 64, 64]
    assert all(conv.kernel_size == (3, 3) for conv in convs)
    assert kinds(model).count("MaxPooling2D") == 2
    dense = [layer for layer in model.layers if isinstance(layer, layers.Dense)]
    assert [layer.units for layer in dense] == [64, 10]
    assert model.output_shape == (None, 10)


@pytest.mark.parametrize("impl", BN_LAYERS)
def test_parameter_counts(impl: str) -> None:
    plain = build_model(bn=False)
    assert plain.count_params() == 93_322
    with_bn = build_model(bn=True, bn_impl=impl)
    assert with_bn.count_params() == 94_024
    trainable = sum(int(w.numpy().size) for w in with_bn.trainable_weights)
    assert trainable == 93_556


@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("bn", [True, False])
def test_every_activation_builds(activation: str, bn: bool) -> None:
    model = build_model(bn=bn, activation=activation, bn_impl="fused")
    assert model.count_params() == (94_024 if bn else 93_322)


def test_the_data_set_the_input_shape_and_the_classes() -> None:
    model = build_cnn(input_shape=(32, 32, 3), num_classes=7, bn=False)
    assert model.input_shape == (None, 32, 32, 3) and model.output_shape == (None, 7)


@pytest.mark.parametrize("impl", BN_LAYERS)
def test_the_mlp_has_bn_after_every_dense_and_no_biases_with_bn(impl: str) -> None:
    model = build_mlp(input_shape=(8, 8, 1), num_classes=10, bn=True, bn_impl=impl)
    dense = [layer for layer in model.layers if isinstance(layer, layers.Dense)]
    assert [layer.units for layer in dense] == [64, 64, 10]
    assert not any(layer.use_bias for layer in dense)
    assert kinds(model).count(BN_LAYERS[impl].__name__) == 3
    plain = build_mlp(input_shape=(8, 8, 1), num_classes=10, bn=False)
    assert "BatchNormalization" not in kinds(plain)
    assert all(layer.use_bias for layer in plain.layers if isinstance(layer, layers.Dense))


def test_what_the_claims_vary_builds_as_asked_and_defaults_to_the_article() -> None:
    import numpy as np

    # A bias kept before BN: the five layers get theirs back (10 + 64 + 64 + 64 + 32).
    with_bias = build_model(bn=True, bn_bias=True, bn_impl="fused")
    assert with_bias.count_params() == 94_024 + 234
    assert all(
        layer.use_bias
        for layer in with_bias.layers
        if isinstance(layer, (layers.Conv2D, layers.Dense))
    )
    # BN after the activation in the hidden blocks; the output's BN stays before softmax.
    after = kinds(build_model(bn=True, bn_position="after", bn_impl="fused"))
    assert after[1:4] == ["Conv2D", "Activation", "FusedBatchNormalization"]
    assert after[-3:] == ["Dense", "FusedBatchNormalization", "Activation"]
    # The initial weights' spread scales with init_scale; 1 is Keras's Glorot uniform.
    spreads = {}
    for scale in (0.1, 1.0, 10.0):
        model = build_model(bn=False, init_scale=scale)
        kernel = next(layer for layer in model.layers if isinstance(layer, layers.Dense)).kernel
        spreads[scale] = float(np.std(kernel.numpy()))
    assert spreads[10.0] / spreads[1.0] == pytest.approx(10, rel=0.05)
    assert spreads[1.0] / spreads[0.1] == pytest.approx(10, rel=0.05)
    dense = build_model(bn=False).layers[-2]
    assert dense.get_config()["kernel_initializer"]["config"]["scale"] == 1.0


def test_noisy_bn_distorts_each_training_step_differently_and_not_inference() -> None:
    import numpy as np

    from bnlab.plugins.noisy_bn import NonStationaryNoise

    noisy = build_cnn((28, 28, 1), 10, bn_noise=0.5)
    noises = [layer for layer in noisy.layers if isinstance(layer, NonStationaryNoise)]
    # After each hidden BN (three convolutions and the hidden Dense), not the output's.
    assert len(noises) == 4
    assert not isinstance(noisy.layers[-2], NonStationaryNoise)
    x = np.random.default_rng(0).random((8, 28, 28, 1)).astype("float32")
    first, second = (np.asarray(noisy(x, training=True)) for _ in range(2))
    assert not np.allclose(first, second)
    layer = noises[0]
    inputs = np.ones((4, 3, 3, 8), dtype="float32")
    assert np.array_equal(np.asarray(layer(inputs, training=False)), inputs)
    trained = np.asarray(layer(inputs, training=True))
    # One scale and shift per channel: the same for every image and position.
    assert np.allclose(trained, trained[:1, :1, :1, :]) and not np.allclose(trained, inputs)


@pytest.mark.parametrize(
    ("norm", "groups"), [("layer", [1, 1, 1, 1, 1]), ("group", [8, 8, 8, 8, 2])]
)
def test_the_switch_inserts_layer_or_group_norm_in_bns_place(norm: str, groups: list) -> None:
    import numpy as np

    model = build_cnn((28, 28, 1), 10, norm=norm)
    found = [layer for layer in model.layers if isinstance(layer, layers.GroupNormalization)]
    # One after every Conv2D and Dense, the output's included, with no BN and no bias.
    assert [layer.groups for layer in found] == groups
    assert not [layer for layer in model.layers if "BatchNormalization" in type(layer).__name__]
    assert all(not layer.use_bias for layer in model.layers if hasattr(layer, "use_bias"))
    # Each example is normalized on its own: the same output in training and inference.
    x = np.random.default_rng(0).random((4, 28, 28, 1)).astype("float32")
    assert np.allclose(np.asarray(model(x, training=True)), np.asarray(model(x, training=False)))
