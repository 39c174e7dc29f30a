"""The private Keras/TensorFlow APIs of core/internals.py still do what the package relies on.

A failure here means a Keras or TensorFlow release changed one of them: the message names
which, and core/internals.py is the one place to adapt.
"""

import keras
import numpy as np
import pytest
import tensorflow as tf

from cnnviz_widgets.core import internals

VERSIONS = f"(Keras {keras.__version__}, TensorFlow {tf.__version__})"


def small_model():
    inputs = keras.Input((8, 8, 3))
    features = keras.layers.Conv2D(4, 3, name="conv")(inputs)
    pooled = keras.layers.GlobalAveragePooling2D(name="pool")(features)
    logits = keras.layers.Dense(3, name="dense")(pooled)
    return keras.Model(inputs, keras.ops.softmax(logits))


def changed(what):
    return f"{what} changed {VERSIONS}; adapt cnnviz_widgets/core/internals.py"


def test_functional_graph_is_the_class_of_functional_and_built_sequential_models():
    sequential = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    assert isinstance(small_model(), internals.FunctionalGraph), changed("keras.src.models.functional.Functional")
    assert isinstance(internals.sequential_graph(sequential), internals.FunctionalGraph), changed("Sequential._functional")
    assert internals.sequential_graph(keras.Sequential([keras.layers.Dense(2)])) is None, changed("Sequential._functional")


def test_run_through_graph_visits_every_operation_in_order_and_returns_the_outputs():
    model = small_model()
    visited = []

    def call(operation, *args, **kwargs):
        visited.append(operation.name)
        return operation(*args, **kwargs)

    x = np.random.default_rng(0).random((2, 8, 8, 3)).astype("float32")
    outputs = internals.run_through_graph(model, tf.constant(x), operation_fn=lambda op: op, call_fn=call)
    assert visited[:3] == ["conv", "pool", "dense"], changed("Functional._run_through_graph")
    np.testing.assert_allclose(keras.tree.flatten(outputs)[0], model(x), atol=1e-6, err_msg=changed("Functional._run_through_graph"))


def test_operation_inputs_and_producing_operation_follow_a_tensor_back_to_its_call():
    model = small_model()
    softmax_output = model.outputs[0]
    operation = internals.producing_operation(softmax_output)
    assert isinstance(operation, internals.SoftmaxOperation), changed("KerasTensor._keras_history / keras.src.ops.nn.Softmax")
    (logits,) = internals.operation_inputs(softmax_output)
    assert internals.producing_operation(logits) is model.get_layer("dense"), changed("Operation._inbound_nodes")


@pytest.mark.parametrize(
    "op, expected",
    [
        (keras.ops.softmax, "SoftmaxOperation"),
        (keras.ops.sigmoid, "SigmoidOperation"),
        (keras.ops.log_softmax, "LogSoftmaxOperation"),
    ],
)
def test_keras_ops_leave_the_operation_classes_heads_recognise(op, expected):
    tensor = op(keras.Input((3,)))
    assert isinstance(internals.producing_operation(tensor), getattr(internals, expected)), changed(f"keras.src.ops.nn.{expected}")


def test_matmul_gradient_is_tensorflows_own():
    a = tf.constant(np.random.default_rng(1).random((2, 3)), tf.float32)
    b = tf.constant(np.random.default_rng(2).random((3, 4)), tf.float32)

    @tf.function
    def both():
        product = tf.matmul(a, b)
        upstream = tf.ones_like(product)
        return internals.matmul_gradient(product.op, upstream), tf.gradients(product, [a, b], grad_ys=upstream)

    mine, reference = both()
    for got, want in zip(mine, reference):
        np.testing.assert_allclose(got, want, rtol=1e-6, err_msg=changed("tensorflow.python.ops.math_grad._MatMulGrad"))
