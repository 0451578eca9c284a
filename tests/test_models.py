"""nntrain.models: every builder builds, trains, compiles with XLA, keeps a float32 head under mixed
precision, and turns bad config fields into NntrainError."""

from __future__ import annotations

import dataclasses

import keras
import ml_collections
import numpy as np
import pytest
import tensorflow as tf

from nntrain import models
from nntrain.config import base_config, experiment_names, load_experiment
from nntrain.data.spec import DatasetSpec
from nntrain.errors import NntrainError

# Tiny versions of each experiment's model section.
FIELDS = {
    "mlp": dict(hidden_sizes=(8, 4), activation="gelu", dropout=0.1, l1=1e-5, l2=1e-4, batch_norm=True),
    "cnn": dict(filters=(4, 8), kernel_size=3, dense_units=8, dropout=0.1, batch_norm=True, activation="relu"),
    "resnet": dict(depth=8, width=4, l2=1e-4),
    "transformer": dict(embed_dim=8, num_heads=2, ff_dim=16, num_layers=1, dropout=0.1),
}
SPECS = {
    "mlp": DatasetSpec(input_shape=(3, 2), input_dtype="float32", num_classes=2, train_examples=8),
    "cnn": DatasetSpec(input_shape=(8, 8, 1), input_dtype="float32", num_classes=2, train_examples=8),
    "resnet": DatasetSpec(input_shape=(8, 8, 3), input_dtype="float32", num_classes=2, train_examples=8),
    "transformer": DatasetSpec(input_shape=(6,), input_dtype="int32", num_classes=2, train_examples=8,
                               vocab_size=20),
}
LOSSES = {"classification": "sparse_categorical_crossentropy", "binary": "binary_crossentropy", "regression": "mse"}
NUM_OUTPUTS = 3  # regression head units in these tests


def model_config(name: str, head: str = "classification", **overrides) -> ml_collections.ConfigDict:
    """The base config's model section plus the builder's fields, with `overrides` (any type) on top."""
    fields = {**base_config().model.to_dict(), "name": name, "head": head, "num_outputs": NUM_OUTPUTS}
    return ml_collections.ConfigDict({**fields, **FIELDS.get(name, {}), **overrides})


def examples(spec: DatasetSpec, head: str, n: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """n random (features, label) pairs shaped and typed as the data module gives them."""
    rng = np.random.default_rng(0)
    shape = (n, *spec.input_shape)
    if spec.input_dtype == "int32":
        x = rng.integers(0, spec.vocab_size, shape, dtype=np.int32)
    else:
        x = rng.random(shape, dtype=np.float32)
    y = {"classification": lambda: rng.integers(0, spec.num_classes, (n,), dtype=np.int32),
         "binary": lambda: rng.integers(0, 2, (n, 1)).astype(np.float32),
         "regression": lambda: rng.random((n, NUM_OUTPUTS), dtype=np.float32)}[head]()
    return x, y


def finite(model: keras.Model) -> bool:
    return all(np.isfinite(w.numpy()).all() for w in model.weights)


@pytest.fixture(params=["mixed_bfloat16", "mixed_float16"])
def mixed_precision(request):
    keras.mixed_precision.set_global_policy(request.param)
    try:
        yield request.param
    finally:
        keras.mixed_precision.set_global_policy("float32")


@pytest.mark.fast
def test_names():
    assert {"cnn", "gpt", "mlp", "resnet", "transformer"} <= set(models.names())  # plus any a test registered


@pytest.mark.parametrize("head", sorted(LOSSES))
@pytest.mark.parametrize("name", sorted(FIELDS))
@pytest.mark.fast
def test_input_and_output_shapes(name, head):
    spec = SPECS[name]
    model = models.build(model_config(name, head), spec)
    assert len(model.inputs) == 1
    assert tuple(model.inputs[0].shape) == (None, *spec.input_shape)
    assert model.inputs[0].dtype == spec.input_dtype
    units = {"classification": spec.num_classes, "binary": 1, "regression": NUM_OUTPUTS}[head]
    assert tuple(model.outputs[0].shape) == (None, units)
    assert model.layers[-1].get_config()["activation"] == {
        "classification": "softmax", "binary": "sigmoid", "regression": "linear"}[head]


@pytest.mark.parametrize("name,head", [(name, "classification") for name in sorted(FIELDS)]
                         + [("mlp", "binary"), ("mlp", "regression")])
def test_fit_a_few_steps_in_strategy_scope(name, head):
    spec = SPECS[name]
    with tf.distribute.MirroredStrategy(["/cpu:0"]).scope():
        model = models.build(model_config(name, head), spec)
        model.compile(optimizer="adam", loss=LOSSES[head], jit_compile=False)
    assert all(isinstance(w.value, tf.distribute.DistributedValues) for w in model.weights)
    history = model.fit(*examples(spec, head), batch_size=4, epochs=1, verbose=0)
    assert len(history.history["loss"]) == 1 and np.isfinite(history.history["loss"]).all()
    assert finite(model)


@pytest.mark.parametrize("name", sorted(FIELDS))
def test_train_step_compiles_with_xla(name):
    spec = SPECS[name]
    model = models.build(model_config(name), spec)
    model.compile(optimizer="adam", loss=LOSSES["classification"], jit_compile=True)
    assert model.jit_compile  # Keras falls back to no XLA for models it thinks cannot compile
    loss = model.train_on_batch(*examples(spec, "classification", n=4))
    assert np.isfinite(loss)


@pytest.mark.parametrize("head", sorted(LOSSES))
@pytest.mark.parametrize("name", sorted(FIELDS))
def test_output_is_float32_under_mixed_precision(name, head, mixed_precision):
    spec = SPECS[name]
    model = models.build(model_config(name, head), spec)
    # The policy applies to the rest of the model.
    assert model.layers[-2].compute_dtype == mixed_precision.removeprefix("mixed_")
    assert model.layers[-1].dtype_policy.name == "float32"
    assert model.outputs[0].dtype == "float32"
    x, _ = examples(spec, head, n=2)
    assert keras.ops.convert_to_numpy(model(x)).dtype == np.float32


@pytest.mark.parametrize("depth", [20, 32])
def test_resnet_depth_counts_layers_with_weights(depth):
    # Option A shortcuts (subsample + zero-pad) have no weights: depth - 1 convs plus the Dense head.
    spec = DatasetSpec(input_shape=(32, 32, 3), input_dtype="float32", num_classes=10, train_examples=1)
    model = models.build(model_config("resnet", depth=depth, width=16), spec)
    assert sum(isinstance(layer, keras.layers.Conv2D) for layer in model.layers) == depth - 1
    assert sum(isinstance(layer, keras.layers.Dense) for layer in model.layers) == 1
    assert any(isinstance(layer, keras.layers.GlobalAveragePooling2D) for layer in model.layers)
    if depth == 20:  # ResNet-20 on CIFAR-10 has 0.27M parameters (He et al. 2016, table 6)
        assert sum(int(np.prod(w.shape)) for w in model.trainable_weights) == 269_722


@pytest.mark.parametrize("experiment", experiment_names())
def test_shipped_experiment_models_build(experiment):
    config = load_experiment(experiment)
    num_classes = {"classification": 10, "binary": 2, "regression": None}[config.model.head]
    if config.model.name in ("transformer", "gpt"):
        spec = DatasetSpec(input_shape=(config.data.sequence_length,), input_dtype="int32", num_classes=num_classes,
                           train_examples=1, vocab_size=config.data.vocab_size)
    elif config.model.name == "backbone":  # an images: folder's shape; ImageNet weights are not offline here
        config.model.backbone_weights = "none"
        spec = DatasetSpec(input_shape=(*config.data.image_size, config.data.channels), input_dtype="float32",
                           num_classes=num_classes, train_examples=1)
    else:
        spec = DatasetSpec(input_shape=tuple(config.data.input_shape), input_dtype="float32",
                           num_classes=num_classes, train_examples=1)
    assert models.build(config.model, spec).name == config.model.name


def test_regularizers_add_losses():
    model = models.build(model_config("mlp", l1=0.0, l2=0.0), SPECS["mlp"])
    assert not model.losses
    model = models.build(model_config("mlp", l1=0.01, l2=0.01), SPECS["mlp"])
    assert len(model.losses) == len(FIELDS["mlp"]["hidden_sizes"]) + 1  # hidden Dense kernels and the head


BAD_FIELDS = [
    ("mlp", dict(activation="swish"), "model.activation='swish'"),
    ("mlp", dict(hidden_sizes=()), "model.hidden_sizes=()"),
    ("mlp", dict(hidden_sizes=(8, -1)), "model.hidden_sizes=(8, -1)"),
    ("mlp", dict(hidden_sizes=(8, 2.5)), "model.hidden_sizes"),
    ("mlp", dict(dropout=1.0), "model.dropout=1.0"),
    ("mlp", dict(l1=-0.1), "model.l1=-0.1"),
    ("mlp", dict(l2="big"), "model.l2='big'"),
    ("mlp", dict(batch_norm="yes"), "model.batch_norm='yes'"),
    ("cnn", dict(filters=()), "model.filters=()"),
    ("cnn", dict(kernel_size=0), "model.kernel_size=0"),
    ("cnn", dict(dense_units=-8), "model.dense_units=-8"),
    ("cnn", dict(activation="softmax"), "model.activation='softmax'"),
    ("resnet", dict(depth=21), "model.depth=21 is not allowed: use 6n+2, e.g. 20, 32, 44"),
    ("resnet", dict(depth=2), "model.depth=2"),
    ("resnet", dict(width=0), "model.width=0"),
    ("resnet", dict(l2=-1e-4), "model.l2=-0.0001"),
    ("transformer", dict(embed_dim=30, num_heads=4), "model.embed_dim=30 is not allowed: it must be divisible by "
                                                     "config.model.num_heads=4, e.g. 32"),
    ("transformer", dict(num_heads=0), "model.num_heads=0"),
    ("transformer", dict(ff_dim=0), "model.ff_dim=0"),
    ("transformer", dict(num_layers=-1), "model.num_layers=-1"),
    ("transformer", dict(dropout=-0.5), "model.dropout=-0.5"),
    ("mlp", dict(head="softmax"), "model.head='softmax' is not allowed: use one of classification, binary, regression"),
    ("mlp", dict(head="regression", num_outputs=0), "model.num_outputs=0"),
]


@pytest.mark.parametrize("name,overrides,message", BAD_FIELDS)
@pytest.mark.fast
def test_bad_field_names_its_key(name, overrides, message):
    with pytest.raises(NntrainError, match="^config.") as error:
        models.build(model_config(name, **overrides), SPECS[name])
    assert message in str(error.value)
    assert "\n" not in str(error.value)


@pytest.mark.parametrize("name", sorted(FIELDS))
def test_missing_field_names_its_key(name):
    config = model_config(name)
    key = next(iter(FIELDS[name]))
    del config[key]
    with pytest.raises(NntrainError, match=f"config.model.{key} is missing"):
        models.build(config, SPECS[name])


@pytest.mark.fast
def test_classification_head_needs_num_classes():
    spec = DatasetSpec(input_shape=(1,), input_dtype="float32", num_classes=None, train_examples=8)
    with pytest.raises(NntrainError, match="model.head='classification' needs data with num_classes"):
        models.build(model_config("mlp"), spec)
    assert models.build(model_config("mlp", "regression"), spec).outputs[0].shape == (None, NUM_OUTPUTS)


def test_binary_head_rejects_many_classes():
    spec = dataclasses.replace(SPECS["mlp"], num_classes=3)
    with pytest.raises(NntrainError, match="model.head='binary' is not allowed: the data has 3 classes"):
        models.build(model_config("mlp", "binary"), spec)


@pytest.mark.parametrize("name,spec", [
    ("cnn", SPECS["mlp"]), ("resnet", SPECS["transformer"]), ("transformer", SPECS["cnn"]),
    ("mlp", SPECS["transformer"]),
    ("transformer", DatasetSpec(input_shape=(6,), input_dtype="int32", num_classes=2, train_examples=8)),
])
def test_unsuitable_data_is_an_error(name, spec):
    with pytest.raises(NntrainError, match=f"model '{name}' needs .*config.model.name or config.data.source"):
        models.build(model_config(name), spec)


@pytest.mark.fast
def test_unknown_name_lists_available_names():
    with pytest.raises(NntrainError) as error:
        models.build(model_config("resnte"), SPECS["resnet"])
    message = str(error.value)
    assert message.startswith("unknown model config.model.name='resnte': did you mean 'resnet'?")
    available = message.split("available: ")[1].split(" (")[0].split(", ")
    assert {"cnn", "gpt", "mlp", "resnet", "transformer"} <= set(available) and available == sorted(available)
    assert message.endswith("(or register one with nntrain.register_model)")
