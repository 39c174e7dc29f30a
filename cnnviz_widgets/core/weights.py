"""A model's weights as data: kernels, biases, named weights, and the values a kernel view shows.

Reading: :func:`filter_weights`, :func:`bias`, :func:`weight_table`, :func:`param_counts`.
Drawing: :func:`display_kernel` (any kernel as (kh, kw, cin, filters)) → :func:`kernel_tiles`
→ :func:`kernel_page` (a grid picture, its layout and which filter each tile is);
:class:`KernelPages` cuts a large layer into pages; :class:`WeightHistogram` is how
weights spread.

Layers are named by the paths of :class:`~cnnviz_widgets.core.graph.LayerGraph`
(``"conv1"``, ``"vgg16/block1_conv1"``), so weights of layers inside nested base
models are reached exactly like their activations.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import keras
import numpy as np
import tensorflow as tf

from . import imaging
from .errors import InputError, NoKernelError, listed
from .graph import LayerGraph

# keras.applications models whose preprocess_input uses mode "caffe": their inputs,
# and so their first kernels, are in BGR order. ResNet V2, MobileNet, EfficientNet,
# DenseNet… use other modes and take RGB.
CAFFE_MODEL_NAMES = re.compile(r"vgg16|vgg19|resnet50|resnet101|resnet152")


def _kernel_variable(layer):
    """The variable holding a layer's spatial filters, or None.

    SeparableConv2D keeps them in ``depthwise_kernel``; its 1×1 ``pointwise_kernel``
    only mixes channels and is in :func:`weight_table`.
    """
    kernel = getattr(layer, "kernel", None)
    return kernel if kernel is not None else getattr(layer, "depthwise_kernel", None)


def _layer_with_kernel(model, layer: str):
    graph = LayerGraph.of(model)
    found = graph.layer(layer)
    if _kernel_variable(found) is None:
        raise NoKernelError(
            f"Layer '{layer}' ({type(found).__name__}) has no kernel. Layers with "
            f"kernels: {listed(kernel_layer_names(model)) or 'none'}."
        )
    return found


def kernel_layer_names(model) -> list[str]:
    """The layers of ``model`` that have a kernel to show, in layer_names order."""
    graph = LayerGraph.of(model)
    return [path for path in graph.paths if _kernel_variable(graph.layer(path)) is not None]


def filter_weights(model, layer: str) -> np.ndarray:
    """The kernel of ``layer`` as Keras stores it.

    Conv2D (kh, kw, cin, cout), Conv1D (k, cin, cout), Dense (in, out),
    DepthwiseConv2D (kh, kw, cin, multiplier), SeparableConv2D its depthwise kernel
    (kh, kw, cin, multiplier), Conv2DTranspose (kh, kw, cout, cin). A layer without
    one (Flatten, pooling, BatchNormalization) raises :class:`NoKernelError`.
    """
    return _to_numpy(_kernel_variable(_layer_with_kernel(model, layer)))


def kernel_shape(model, layer: str) -> tuple[int, ...]:
    """``filter_weights(model, layer).shape`` without copying the kernel (VGG16's fc1 is 411 MB)."""
    return tuple(_kernel_variable(_layer_with_kernel(model, layer)).shape)


def bias(model, layer: str) -> np.ndarray | None:
    """The bias of a layer with a kernel, or None when it was built with ``use_bias=False``."""
    variable = getattr(_layer_with_kernel(model, layer), "bias", None)
    return None if variable is None else _to_numpy(variable)


def _to_numpy(variable) -> np.ndarray:
    """A numpy copy of ``variable``: ``keras.ops.convert_to_numpy`` holds two copies at its peak."""
    return np.asarray(variable.value)


def _read_only_view(variable) -> np.ndarray:
    """The values of ``variable`` without a copy (VGG16's fc1 is 411 MB), read-only: what a view draws.

    A read shares the variable's buffer, which TensorFlow copies on a later assign, so the
    view keeps the values it was taken with. A bfloat16 kernel is read as a float32 copy:
    numpy's maths (histograms, einsum) refuse bfloat16."""
    values = tf.convert_to_tensor(variable.value)
    if values.dtype == tf.bfloat16:
        values = tf.cast(values, tf.float32)
    view = np.asarray(values).view()  # np.asarray alone is writeable over the tensor's buffer
    view.flags.writeable = False
    return view


def weight_table(model, layer: str | None = None) -> list[dict]:
    """One row per weight variable of ``layer``, or of every layer (nested models flattened).

    Row keys: ``layer`` (path), ``name`` (``"L4_bn/moving_mean"``: layer and variable
    name), ``shape``, ``dtype``, ``trainable`` and ``params``. ``trainable`` is what
    training would update: False for BatchNormalization's moving statistics and for
    every weight of a frozen layer or frozen base model.
    """
    graph = LayerGraph.of(model)
    if layer is None:
        layers = [(path, info.layer) for path, info in graph.layers.items()]
    else:
        layers = [(layer, graph.layer(layer))]
    trainable = {id(variable) for variable in model.trainable_weights}
    return [
        {
            "layer": path,
            "name": f"{found.name}/{variable.name}",
            "shape": tuple(variable.shape),
            "dtype": str(variable.dtype),
            "trainable": id(variable) in trainable,
            "params": math.prod(variable.shape),
        }
        for path, found in layers
        for variable in found.weights
    ]


def param_counts(model) -> dict[str, int]:
    """Total, trainable and non-trainable parameter counts, as ``model.summary()`` prints them."""
    trainable = sum(math.prod(v.shape) for v in model.trainable_weights)
    non_trainable = sum(math.prod(v.shape) for v in model.non_trainable_weights)
    return {"total": trainable + non_trainable, "trainable": trainable, "non_trainable": non_trainable}


def is_caffe_mode(model) -> bool:
    """Whether ``model`` is, or wraps, a keras.applications model that takes BGR input.

    Detected by model name (``vgg16``, ``vgg19``, ``resnet50``, ``resnet101``,
    ``resnet152``), so a renamed application model is not recognised.
    """
    if not isinstance(model, keras.Model):
        return False
    if CAFFE_MODEL_NAMES.fullmatch(model.name):
        return True
    return any(is_caffe_mode(inner) for inner in model.layers)


def is_bgr_kernel(model, layer: str) -> bool:
    """Whether the kernel of ``layer`` reads BGR colour channels: 3 input channels in a caffe-mode model."""
    shape = kernel_shape(model, layer)
    return len(shape) == 4 and shape[2] == 3 and is_caffe_mode(model)


TRANSPOSED_CONVOLUTIONS = (keras.layers.Conv1DTranspose, keras.layers.Conv2DTranspose, keras.layers.Conv3DTranspose)
DEPTHWISE_CONVOLUTIONS = (
    keras.layers.DepthwiseConv1D,
    keras.layers.DepthwiseConv2D,
    keras.layers.SeparableConv1D,
    keras.layers.SeparableConv2D,
)


def display_kernel(model, layer: str) -> tuple[np.ndarray, bool]:
    """The kernel of ``layer`` as (kh, kw, cin, filters), one filter per output channel,
    and whether its tiles are RGB.

    Only a plain convolution over 3 input channels draws in colour. A Dense unit's
    weight vector is wrapped into rows, so an MLP on flattened 28×28 images shows
    28×28 tiles and a Dense after Flatten shows (positions × channels). Read-only: where
    the layout allows, a view of the variable, not a copy.
    """
    found = _layer_with_kernel(model, layer)
    kernel = _read_only_view(_kernel_variable(found))
    if kernel.ndim == 2:
        inputs, units = kernel.shape
        rows = max(d for d in range(1, math.isqrt(inputs) + 1) if inputs % d == 0)
        return kernel.reshape(rows, inputs // rows, 1, units), False
    rgb = kernel.ndim == 4 and kernel.shape[2] == 3
    if isinstance(found, TRANSPOSED_CONVOLUTIONS):  # stored (..., out, in)
        kernel, rgb = np.swapaxes(kernel, -1, -2), False
    if isinstance(found, DEPTHWISE_CONVOLUTIONS):
        # (..., cin, multiplier): output channel c * multiplier + m sees input c only.
        kernel, rgb = kernel.reshape(*kernel.shape[:-2], 1, -1), False
    if kernel.ndim == 3:  # Conv1D (k, cin, filters): 1 × k tiles
        kernel = kernel[None]
    if kernel.ndim == 5:  # Conv3D (kd, kh, kw, cin, filters): depth slices side by side
        kd, kh, kw, cin, filters = kernel.shape
        kernel = np.moveaxis(kernel, 0, 2).reshape(kh, kw, kd * cin, filters)
    return kernel, rgb


def kernel_tiles(
    kernel, rgb: bool | None = None, bgr: bool = False, scale: str = "tile", signed_bound: float | None = None
) -> np.ndarray:
    """A conv kernel (kh, kw, cin, cout) as float32 tiles in [0, 1].

    With 3 input channels and ``rgb`` not False: one colour tile per filter,
    (cout, kh, kw, 3). Otherwise one gray tile per filter and input channel,
    (cout * cin, kh, kw), filter by filter: tile ``f * cin + c`` is ``kernel[:, :, c, f]``.
    ``bgr=True`` reverses the input channels first (caffe-trained weights). ``scale``
    is ``"tile"`` (min-max each tile), ``"global"`` (one min-max for the kernel) or
    ``"signed"``: 0.5 + w / (2 · ``signed_bound``), so 0 is 0.5 whatever the filter
    (``signed_bound`` None: the kernel's largest absolute weight).
    A Conv1D kernel (k, cin, cout) gives 1×k tiles.
    """
    kernel = np.asarray(kernel)
    if kernel.ndim == 3:
        kernel = kernel[None]
    if kernel.ndim != 4:
        raise InputError(
            f"A kernel of shape {kernel.shape} has no (kh, kw, cin, cout) filters to draw. "
            "Dense kernels (in, out) are one matrix: show normalize(kernel) with colormap()."
        )
    channels = kernel.shape[2]
    if (bgr or rgb) and channels != 3:
        raise InputError(
            f"The kernel has {channels} input channels; rgb=True and bgr=True need 3. "
            "Pass rgb=False, bgr=False for gray tiles."
        )
    if bgr:
        kernel = kernel[:, :, ::-1]
    if channels == 3 and rgb is not False:
        tiles = kernel.transpose(3, 0, 1, 2)
    else:
        tiles = kernel.transpose(3, 2, 0, 1).reshape(-1, *kernel.shape[:2])
    if scale == "signed":
        bound = signed_weight_bound(kernel) if signed_bound is None else signed_bound
        return imaging.normalize(tiles, "global", bounds=(-bound, bound))
    return imaging.normalize(tiles, scale)


def signed_weight_bound(kernel) -> float:
    """The bound of a kernel's signed scale: its largest absolute weight (a zero kernel: 1, so all stays at 0.5)."""
    return float(max(-kernel.min(), kernel.max())) or 1.0  # np.abs would copy the kernel (fc1: 411 MB)


def kernel_montage(
    model,
    layer: str,
    bgr: bool | str = "auto",
    gap: int = 1,
    columns: int | None = None,
    upscale: int = 8,
    scale: str = "tile",
) -> np.ndarray:
    """All filters of ``layer`` as one uint8 grid image (RGB for 3 input channels, else gray).

    ``bgr="auto"`` uses :func:`is_bgr_kernel`. Each tile is enlarged ``upscale``
    times (nearest neighbour) before tiling, so gaps stay ``gap`` pixels wide;
    ``columns=None`` makes the grid about square. ResNet50's ``conv1_conv`` gives
    an 8×8 grid of 56-pixel colour tiles.
    """
    if bgr == "auto":
        bgr = is_bgr_kernel(model, layer)
    kernel, rgb = display_kernel(model, layer)
    every_filter = range(kernel.shape[-1])
    drawn = {"rgb": rgb, "bgr": bgr and rgb, "scale": scale, "upscale": upscale, "columns": columns, "gap": gap}
    return kernel_page(kernel, every_filter, **drawn).picture


@dataclass(frozen=True)
class KernelPage:
    """Some filters of a kernel drawn as one grid picture: the value FilterGallery shows."""

    filters: range  # the filters drawn, in order
    tiles: np.ndarray  # float [0, 1] tiles (see kernel_tiles), tiles_per_filter per filter
    tiles_per_filter: int  # 1 colour tile, else a gray tile per input channel: tile t is filter start + t // this
    picture: np.ndarray  # uint8, the tiles enlarged and laid out
    layout: imaging.GridLayout  # where each tile lies in ``picture``
    weight_range: tuple[float, float] | None = None  # the weights at the two ends of a shared scale; None: per tile
    colormap: str = "gray"  # of the gray tiles' values (colour tiles show their own RGB)

    def filter_picture(self, channel: int, side_px: int) -> np.ndarray:
        """The tiles of filter ``channel`` (on this page) as one uint8 picture enlarged to about ``side_px``.

        The tiles are enlarged, not the gaps: gaps as wide as a weight hid a third of a 3×3 filter."""
        first = (channel - self.filters.start) * self.tiles_per_filter
        own = self.tiles[first : first + self.tiles_per_filter]
        columns = math.ceil(math.sqrt(len(own)))
        gap = self.layout.gap
        tile_side = max(own.shape[1:3])
        factor = max(1, (side_px - (columns - 1) * gap) // (columns * tile_side))
        return imaging.montage(own, factor, columns, gap)


def kernel_page(
    kernel: np.ndarray,
    filters: range,
    *,
    rgb: bool,
    bgr: bool = False,
    scale: str = "tile",
    upscale: int = 8,
    columns: int | None = None,
    gap: int = 1,
    signed_bound: float | None = None,
) -> KernelPage:
    """``filters`` of a :func:`display_kernel` kernel as tiles (see :func:`kernel_tiles`; ``scale="global"``
    min-maxes over these filters), each enlarged ``upscale`` times, ``columns`` tiles a row (None: about square).

    ``scale="signed"`` draws gray tiles in the diverging SIGNED_COLORMAP (white at 0) over
    ±``signed_bound`` (None: these filters' largest absolute weight; pass the layer's to
    compare pages)."""
    page_kernel = kernel[..., filters.start : filters.stop]
    if scale == "signed" and signed_bound is None:
        signed_bound = signed_weight_bound(page_kernel)
    tiles = kernel_tiles(page_kernel, rgb=rgb, bgr=bgr, scale=scale, signed_bound=signed_bound)
    colour_tiles = tiles.ndim == 4
    colormap = "gray"
    if scale == "signed" and not colour_tiles:
        colormap = SIGNED_COLORMAP
        tiles = imaging.colormap(tiles, colormap).astype(np.float32) / 255
    columns = columns or math.ceil(math.sqrt(len(tiles)))
    kh, kw = tiles.shape[1:3]
    layout = imaging.GridLayout.for_tiles(len(tiles), (kh * upscale, kw * upscale), columns, gap)
    picture = imaging.montage(tiles, upscale, columns, gap)
    if scale == "signed":
        weight_range = (-signed_bound, signed_bound)
    elif scale == "global":
        weight_range = (float(page_kernel.min()), float(page_kernel.max()))
    else:
        weight_range = None
    return KernelPage(filters, tiles, len(tiles) // len(filters), picture, layout, weight_range, colormap)


SIGNED_COLORMAP = "RdBu_r"  # blue negative, white 0, red positive


MAX_GRID_WIDTH = 2048  # kernel tiles shrink (down to 1 px per weight) to fit this width
MAX_GRID_PIXELS = 2**22  # a kernel page beyond this is cut into pages of filters
MAX_UPSCALE = 8  # S2/S3 enlarge each weight to 8×8 pixels…
MAX_TILE_SIZE = 64  # …but big tiles (a Dense unit's 28×28 weights) less


@dataclass
class KernelPages:
    """A layer's kernel cut into pages of filters whose pictures stay within MAX_GRID_WIDTH and MAX_GRID_PIXELS."""

    kernel: np.ndarray  # (kh, kw, cin, filters), see display_kernel
    rgb: bool
    bgr: bool
    scale: str
    gap: int = 1  # pixels between tiles, as in S2

    def __post_init__(self):
        kh, kw, cin, count = self.kernel.shape
        self.count = count
        self.signed_bound = signed_weight_bound(self.kernel)  # one signed scale for every page of the layer
        tiles_per_filter = 1 if self.rgb else cin
        # One row per filter when it has several gray tiles; otherwise a square grid.
        self.columns = tiles_per_filter if tiles_per_filter > 1 else math.ceil(math.sqrt(count))
        fitting = min((MAX_GRID_WIDTH // self.columns - self.gap) // kw, MAX_TILE_SIZE // max(kh, kw))
        self.upscale = int(np.clip(fitting, 1, MAX_UPSCALE))
        filter_pixels = tiles_per_filter * (kh * self.upscale + self.gap) * (kw * self.upscale + self.gap)
        self.per_page = min(count, max(1, MAX_GRID_PIXELS // filter_pixels))
        if self.per_page < count and tiles_per_filter == 1:
            self.columns = math.ceil(math.sqrt(self.per_page))

    def page_of(self, channel: int) -> range:
        """The filters on the page that holds filter ``channel``."""
        return imaging.page_of(channel, self.per_page, self.count)

    def page(self, filters: range) -> KernelPage:
        settings = {"rgb": self.rgb, "bgr": self.bgr, "scale": self.scale, "upscale": self.upscale}
        drawn = {"columns": self.columns, "gap": self.gap, "signed_bound": self.signed_bound}
        return kernel_page(self.kernel, filters, **settings, **drawn)


@dataclass(frozen=True, eq=False)
class WeightHistogram:
    """How weights are spread: the fraction of them in each bin, and their range and mean."""

    values: np.ndarray  # the weights counted
    edges: np.ndarray  # bins + 1 edges
    fractions: np.ndarray  # count in each bin / number of weights

    @classmethod
    def of(cls, values, bins=40) -> "WeightHistogram":
        """``values`` counted in ``bins`` equal bins over their range, or in the given bin edges (as np.histogram)."""
        values = np.asarray(values)
        counts, edges = np.histogram(values, bins=bins)
        return cls(values, edges, counts / values.size)

    @property
    def centres(self) -> np.ndarray:
        return (self.edges[:-1] + self.edges[1:]) / 2

    def ticks(self, count: int = 5) -> np.ndarray:
        """Round weights within the bins' range for the x axis (see :func:`imaging.nice_ticks`)."""
        return imaging.nice_ticks(self.edges[0], self.edges[-1], count)

    # Read on demand: a layer's histogram is drawn without them, and VGG16's fc1 has 100M weights.
    @property
    def minimum(self) -> float:
        return float(self.values.min())

    @property
    def maximum(self) -> float:
        return float(self.values.max())

    @property
    def mean(self) -> float:
        return float(self.values.mean())


def default_kernel_layer(model) -> str:
    """The layer a kernel view starts on: the first convolution, else the first layer with a kernel."""
    names = kernel_layer_names(model)
    convolutions = [path for path in names if len(kernel_shape(model, path)) >= 3]
    return (convolutions or names)[0]


def strongest_filter(kernel) -> int:
    """The filter of a :func:`display_kernel` kernel with the largest L2 norm: a view opens on it, not on a dead one."""
    flat = np.asarray(kernel).reshape(-1, np.shape(kernel)[-1])
    return int(np.argmax(np.einsum("wf,wf->f", flat, flat)))  # np.square would copy the kernel (fc1: 411 MB)
