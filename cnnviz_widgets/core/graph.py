"""Every showable layer of a Keras 3 model, nested models included, as one graph.

Peer tools build ``keras.Model(model.input, layer.output)`` per layer, which fails
with "Graph disconnected" as soon as the layer sits inside a nested base model
(transfer learning). Instead, :class:`LayerGraph` re-traces the model once on new
symbolic inputs, descending into every nested functional or Sequential model, so
that every leaf layer's output becomes a tensor of ONE flat functional graph.
Any set of layers is then a plain multi-output ``keras.Model`` over that graph:
one forward pass, truncated automatically after the deepest requested layer.

Layers are named by path: ``"conv2d"`` at the top level, ``"vgg16/block1_conv1"``
inside a nested model, ``"outer/inner/leaf"`` two levels down.
"""

from __future__ import annotations

import functools
import math
import threading
import types
import weakref
from collections import OrderedDict, defaultdict
from dataclasses import dataclass, field

import keras
import numpy as np
import tensorflow as tf

from .errors import ModelNotBuiltError, UnknownLayerError, UnsupportedModelError, listed
from .heads import ClassifierHead, classifier_head
from .internals import FunctionalGraph, operation_inputs, run_through_graph, sequential_graph

SEPARATOR = "/"
# Compiled functions of big models hold MBs each; a loop over sizes or layer lists
# would otherwise keep one per call for the session.
MAX_CACHED_PER_KIND = 16
_MISSING = object()  # cached() keeps any value, None too


def _graph_of(model) -> FunctionalGraph:
    """The functional graph that computes ``model``."""
    if isinstance(model, keras.Sequential):
        functional = sequential_graph(model)
        if functional is None:
            raise ModelNotBuiltError(
                f"Sequential model '{model.name}' has no input shape yet, so its "
                "layers have no outputs to show. Build it first: start it with "
                "keras.Input(shape=...), or call model.build((None, H, W, C)), or "
                "call it once on a batch of images."
            )
        return functional
    if isinstance(model, FunctionalGraph):
        return model
    if isinstance(model, keras.Model):
        raise UnsupportedModelError(
            f"Model '{model.name}' is a subclassed keras.Model, whose layers are "
            "only known while its call() runs. Rebuild it as a functional model "
            "(keras.Model(inputs, outputs)) or a Sequential to inspect its layers."
        )
    raise UnsupportedModelError(
        f"Expected a keras.Model, got {type(model).__name__}. Pass a Keras 3 model "
        "(functional, Sequential or a keras.applications model)."
    )


def _float_unless_float(dtype) -> str:
    return dtype if "float" in str(dtype) else "float32"


def _is_nested_model(operation) -> bool:
    return isinstance(operation, keras.Model) and not isinstance(operation, keras.layers.InputLayer)


@dataclass
class LayerInfo:
    """One leaf layer as it appears in the flat graph."""

    path: str
    layer: keras.layers.Layer
    inputs: list = field(repr=False)
    output: object = field(repr=False)

    @property
    def output_shape(self) -> tuple:
        return tuple(self.output.shape)

    @property
    def kind(self) -> str:
        return type(self.layer).__name__


class LayerGraph:
    """A model re-traced as one flat graph whose every leaf layer output is reachable.

    Use :meth:`of` to get the cached graph of a model.
    """

    _cache: "weakref.WeakKeyDictionary[keras.Model, LayerGraph]" = weakref.WeakKeyDictionary()

    @classmethod
    def of(cls, model) -> "LayerGraph":
        graph = cls._cache.get(model) if isinstance(model, keras.Model) else None
        if graph is None:
            graph = cls(model)
            cls._cache[model] = graph
        return graph

    def __init__(self, model):
        functional = _graph_of(model)
        # Images arrive as float32 (prepare_inputs): an integer input (uint8 then
        # Rescaling) traced as float32 computes the same, and has a gradient for patterns.
        self.inputs = [
            keras.Input(batch_shape=tensor.shape, dtype=_float_unless_float(tensor.dtype), name=f"cnnviz_input_{i}")
            for i, tensor in enumerate(functional.inputs)
        ]
        self.layers: dict[str, LayerInfo] = {}
        self._path_of_tensor: dict[int, str] = {}
        structure = self._trace(functional, self.inputs, prefix="")
        self.outputs = keras.tree.flatten(structure)
        # An output is named by its dict key, if any, else by the path of the layer that computes
        # it; that path and Keras' output_names (a nested model's name) select it too.
        keys = [path[0] for path, _ in keras.tree.flatten_with_path(structure)] if isinstance(structure, dict) else []
        paths = [self._path_of_tensor.get(id(tensor), tensor.name) for tensor in self.outputs]  # an input has no layer
        self.output_names = keys or paths
        self._output_aliases: dict[str, int] = {}
        keras_names = list(functional.output_names)
        for names in (self.output_names, paths, keras_names if len(keras_names) == len(paths) else []):
            for index, name in enumerate(names):
                self._output_aliases.setdefault(name, index)
        # Show layers in model.layers order (as model.summary() does), not graph order.
        order = {path: i for i, path in enumerate(_declared_paths(functional, ""))}
        self.layers = dict(sorted(self.layers.items(), key=lambda item: order.get(item[0], len(order))))
        self._showable = {
            path: None
            for path, info in self.layers.items()
            if not isinstance(info.layer, keras.layers.InputLayer)
            and isinstance(info.output, keras.KerasTensor)
            and len(info.output.shape) >= 2
        }
        self._memo: defaultdict[object, OrderedDict] = defaultdict(OrderedDict)
        self._memo_lock = threading.Lock()
        self._building: dict[tuple, threading.Lock] = {}  # a lock per key being built: see cached()

    def _trace(self, functional, inputs, prefix):
        def operation_fn(operation):
            if _is_nested_model(operation):
                nested = _graph_of(operation)
                return lambda *args, **kwargs: self._trace(
                    nested, args[0], prefix + operation.name + SEPARATOR
                )
            return lambda *args, **kwargs: self._record(prefix + operation.name, operation, args, kwargs)

        return run_through_graph(functional, inputs, operation_fn, call_fn=lambda op, *args, **kwargs: op(*args, **kwargs))

    def _record(self, path, layer, args, kwargs):
        outputs = layer(*args, **kwargs)
        # A shared layer called twice is shown at its first call.
        if path not in self.layers:
            self.layers[path] = LayerInfo(path, layer, keras.tree.flatten(args), outputs)
            for tensor in keras.tree.flatten(outputs):
                self._path_of_tensor[id(tensor)] = path
        return outputs

    # -- names ---------------------------------------------------------------

    @property
    def paths(self) -> list[str]:
        """Every layer whose output is one tensor with a batch axis, in model.layers order."""
        return list(self._showable)

    def info(self, path: str) -> LayerInfo:
        if not isinstance(path, str) or path not in self._showable:  # a list is unhashable: no lookup
            raise UnknownLayerError(_unknown_layer_message(path, self.paths))
        return self.layers[path]

    def layer(self, path: str) -> keras.layers.Layer:
        return self.info(path).layer

    def spatial_paths(self, rank: int = 4) -> list[str]:
        return [p for p in self.paths if len(self.layers[p].output.shape) == rank]

    # -- models over the flat graph ------------------------------------------

    def cached(self, key: tuple, build):
        """``build()`` once per key: models and compiled functions over this graph.

        ``key[0]`` names the kind of value; each kind keeps its MAX_CACHED_PER_KIND most
        recently used values, so one kind used in a loop cannot push out the others.

        Job threads (a viewer's maps, the trust checks) call it too: the memo is read and
        written under a lock, and a key is built by one thread while others asking for it wait
        (a compiled function is seconds of tracing), without blocking other keys: ``build``
        may ask for another key.
        """
        with self._memo_lock:
            value = self._kept(key)
            if value is not _MISSING:
                return value
            building = self._building.setdefault(key, threading.Lock())
        with building:
            with self._memo_lock:
                value = self._kept(key)  # built by the thread this one waited for
            if value is not _MISSING:
                return value
            try:
                value = build()
                with self._memo_lock:
                    memo = self._memo[key[0]]
                    memo[key] = value
                    while len(memo) > MAX_CACHED_PER_KIND:
                        memo.popitem(last=False)
            finally:
                with self._memo_lock:
                    self._building.pop(key, None)
        return value

    def _kept(self, key: tuple):
        """The value kept for ``key``, now the most recently used, or _MISSING; call with _memo_lock held."""
        memo = self._memo[key[0]]
        if key not in memo:
            return _MISSING
        memo.move_to_end(key)
        return memo[key]

    def _model(self, outputs) -> keras.Model:
        return keras.Model(self.inputs if len(self.inputs) > 1 else self.inputs[0], outputs)

    def model_for(self, paths) -> keras.Model:
        """One keras.Model from the inputs to the outputs of ``paths`` (cached)."""
        paths = tuple(paths)
        return self.cached(("model", paths), lambda: self._model([self.info(p).output for p in paths]))

    def function_for(self, paths):
        """A compiled inference function returning the outputs of ``paths`` (cached)."""
        paths = tuple(paths)

        def build():
            return compiled_method(functools.partial(call_for_inference, self.model_for(paths)), reduce_retracing=True)

        return self.cached(("function", paths), build)

    def images_per_batch(self, budget_bytes: int, unknown: int = 32) -> int:
        """Images per batch such that the largest layer output of a batch stays within
        ``budget_bytes`` (``unknown`` where a layer's output shape is not fixed)."""
        shapes = [self.info(path).output_shape[1:] for path in self.paths]
        if any(None in shape for shape in shapes):
            return unknown
        largest = max(math.prod(shape) for shape in shapes) * np.dtype(np.float32).itemsize
        return max(1, budget_bytes // largest)

    def run(self, paths, inputs, batch_size: int = 32) -> list[np.ndarray]:
        """Outputs of ``paths`` for prepared ``inputs`` (list of arrays), batched."""
        chunks = list(self.batches(paths, inputs, batch_size))
        return [parts[0] if len(parts) == 1 else np.concatenate(parts, axis=0) for parts in zip(*chunks)]

    def batches(self, paths, inputs, batch_size: int = 32):
        """Outputs of ``paths`` for prepared ``inputs``, one list of arrays per batch, as they are computed."""
        function = self.function_for(paths)
        for start in range(0, len(inputs[0]), batch_size):
            batch = [tf.convert_to_tensor(x[start : start + batch_size]) for x in inputs]
            outputs = function(batch if len(batch) > 1 else batch[0])
            outputs = outputs if isinstance(outputs, (list, tuple)) else [outputs]
            # Mixed-precision layers give float16 or bfloat16, which numpy barely handles.
            yield [np.asarray(tf.cast(o, tf.float32) if o.dtype in (tf.float16, tf.bfloat16) else o) for o in outputs]

    # -- class scores -----------------------------------------------------------

    def output_index(self, output: int | str = 0) -> int:
        """The index of model output ``output``, given by index, dict key or layer name."""
        if isinstance(output, str) and output in self._output_aliases:
            return self._output_aliases[output]
        if isinstance(output, (int, np.integer)) and not isinstance(output, bool) and 0 <= output < len(self.outputs):
            return int(output)
        choices = ", ".join(f"{i} or '{name}'" for i, name in enumerate(self.output_names))
        raise UnknownLayerError(f"Unknown model output {output!r}: pass output= one of {choices}.")

    def output_path(self, output: int | str = 0) -> str:
        return self._path_of_tensor[id(self.outputs[self.output_index(output)])]

    def head(self, output: int | str = 0) -> ClassifierHead:
        """Model output ``output`` as a classifier head: its logits, probabilities and classes (cached)."""
        index = self.output_index(output)

        def build():
            info = self.layers[self.output_path(index)]
            return classifier_head(index, self.output_names[index], self.outputs[index], info.layer, info.inputs)

        return self.cached(("head", index), build)

    def probability_model(self, output: int | str = 0) -> keras.Model:
        """A model from the inputs to the class probabilities of ``output``, as ``head(output).title`` says (cached)."""
        head = self.head(output)
        return self.cached(("probabilities", head.index), lambda: self._model(head.probabilities))

    def probabilities(self, inputs, output: int | str = 0) -> np.ndarray:
        """(N, classes) class probabilities for prepared ``inputs``, as ``head(output).title`` says."""
        model = self.probability_model(output)
        return np.asarray(model(inputs if len(inputs) > 1 else inputs[0], training=False))

    def feeds(self, path: str, output: int | str = 0) -> bool:
        """Whether the output of ``path`` is used to compute the class logits of model ``output``."""
        target = id(self.info(path).output)
        seen, stack = set(), [self.head(output).logits]
        while stack:
            tensor = stack.pop()
            if id(tensor) == target:
                return True
            if id(tensor) in seen:
                continue
            seen.add(id(tensor))
            stack.extend(operation_inputs(tensor))
        return False

    def score_model(self, path: str, output: int | str = 0, probabilities: bool = False):
        """A model giving the output of ``path`` and the class logits, or probabilities (cached)."""
        head = self.head(output)
        scores = head.probabilities if probabilities else head.logits
        return self.cached(
            ("scores", path, head.index, probabilities),
            lambda: self._model([self.info(path).output, scores]),
        )


# Values whose meaning is fixed once made: numbers, strings, and modules, functions and
# classes, which a re-definition replaces by a new object.
_FIXED_VALUE_TYPES = (
    type(None), bool, int, float, complex, str, bytes, np.generic,
    types.ModuleType, types.FunctionType, types.BuiltinFunctionType, type,
)


def _is_fixed_value(value) -> bool:
    if isinstance(value, (tuple, frozenset)):
        return all(_is_fixed_value(item) for item in value)
    return isinstance(value, _FIXED_VALUE_TYPES)


def function_key(function):
    """A cache key for what ``function`` computes, for functions re-created on every call.

    Two plain functions from the same source (a lambda in a loop or a re-run cell) with
    equal defaults, closure values and referenced globals share one key, so what was
    compiled for one serves the other. Where one of those values could change in place
    (an array, a settings object), or for any other callable, the key is the function
    itself: a new function is then compiled anew, as it reads that value at tracing.
    """
    if not isinstance(function, types.FunctionType):
        return function
    code = function.__code__
    names, nested = set(), [code]
    while nested:
        inner = nested.pop()
        names.update(inner.co_names)
        nested.extend(const for const in inner.co_consts if isinstance(const, types.CodeType))
    try:
        closure = tuple(cell.cell_contents for cell in function.__closure__ or ())
    except ValueError:  # a closure variable not assigned yet
        return function
    captured = (
        function.__defaults__ or (),
        tuple(sorted((function.__kwdefaults__ or {}).items())),
        closure,
        tuple((name, function.__globals__[name]) for name in sorted(names) if name in function.__globals__),
    )
    return (code, captured) if _is_fixed_value(captured) else function


def _declared_paths(functional, prefix):
    for layer in functional.layers:
        if _is_nested_model(layer):
            yield from _declared_paths(_graph_of(layer), prefix + layer.name + SEPARATOR)
        else:
            yield prefix + layer.name


def _unknown_layer_message(name, available) -> str:
    shown = listed(available)
    hint = ""
    close = [p for p in available if p.endswith(SEPARATOR + str(name))]
    if close:
        hint = f" Did you mean '{close[0]}'? Layers inside a nested model are named 'outer/inner'."
    return f"Unknown layer '{name}'.{hint} Available: {shown}"


def layer_names(model) -> list[str]:
    """Every layer of ``model`` whose output can be shown; nested ones as "outer/inner"."""
    return LayerGraph.of(model).paths


def call_for_inference(model, inputs):
    return model(inputs, training=False)


def compiled_method(method, **options):
    """``tf.function(method, **options)`` for a bound ``method`` (or a closure), its retracing counted per instance.

    TensorFlow's "N out of the last N calls triggered tf.function retracing" warning keys its
    count on the code under a function, which every instance of a class (and every closure
    made by one function) shares: ten explainers (one per method, or per randomised copy in
    a sanity check) that each trace once read as one function retraced ten times, and the
    warning lands in the notebook. A ``functools.partial`` has no code for TensorFlow to
    unwrap to, so each instance's is a key of its own.
    """
    return tf.function(functools.partial(method), **options)
