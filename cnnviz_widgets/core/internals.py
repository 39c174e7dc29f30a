"""Every private Keras and TensorFlow API that cnnviz_widgets uses, and nothing else.

Keras 3 has no public way to walk a functional graph, to find the call that made a
tensor, or to tell a ``keras.ops.softmax`` node from other operations; TensorFlow
has no public handle on MatMul's own gradient. A release may rename any of them, so
they are used only through this module, and ``tests/test_internals.py`` checks each
one against the installed versions, naming the one that changed.
"""

from __future__ import annotations

import keras
from keras.src.models.functional import Functional
from keras.src.ops import nn as _keras_ops_nn
from tensorflow.python.ops import math_grad as _math_grad

# The class behind every functional model and every built Sequential's graph.
FunctionalGraph = Functional

# The operations that keras.ops.softmax / sigmoid / log_softmax leave in a functional graph.
SoftmaxOperation = _keras_ops_nn.Softmax
SigmoidOperation = _keras_ops_nn.Sigmoid
LogSoftmaxOperation = _keras_ops_nn.LogSoftmax

# TensorFlow's registered gradient of MatMul, for a gradient override to fall back on.
matmul_gradient = _math_grad._MatMulGrad


def sequential_graph(model: keras.Sequential) -> Functional | None:
    """The functional graph of a built Sequential; None before it is built."""
    return getattr(model, "_functional", None)


def run_through_graph(functional: Functional, inputs, operation_fn, call_fn):
    """Call every operation of ``functional`` on ``inputs`` in graph order.

    ``operation_fn(operation)`` returns what to call in the operation's place and
    ``call_fn(callable, *args, **kwargs)`` calls it; the graph's outputs come back.
    """
    return functional._run_through_graph(inputs, operation_fn=operation_fn, call_fn=call_fn)


def operation_inputs(tensor) -> list:
    """The input tensors of the call that produced the symbolic ``tensor``."""
    operation, node_index, _ = tensor._keras_history
    return operation._inbound_nodes[node_index].input_tensors


def producing_operation(tensor):
    """The layer or operation whose call produced the symbolic ``tensor``."""
    return tensor._keras_history.operation
