"""Feature visualisation as in Olah, Mordvintsev & Schubert 2017 ("Feature Visualization",
Distill), the ``style="lucid"`` of :func:`~cnnviz_widgets.core.patterns.filter_patterns`.

Three things make the patterns look like something instead of high-frequency noise;
the constants are those of lucent (github.com/greentfrapp/lucent, the PyTorch port of
lucid), cited per piece:

- The image is parametrised in Fourier space: the optimised values are a spectrum
  (real and imaginary parts per channel) scaled by 1/frequency, so a step changes
  low frequencies as much as high ones (``lucent/optvis/param/spatial.py``,
  ``fft_image``: scale ``1 / max(f, 1 / max(h, w))``, an orthonormal inverse real
  FFT, divided by 4). The start is ``N(0, 0.2)``, not lucent's 0.01: so flat a start
  leaves the ReLU filters of deeper layers at 0 everywhere, without a gradient (30
  of the demo model's first 32 conv4 filters never move; 6 with 0.2).
- Colours are decorrelated: the three channels the FFT makes are mixed by lucid's
  square root of ImageNet's colour covariance (from its SVD, columns scaled to norm
  at most 1), then a sigmoid maps them into the value range
  (``lucent/optvis/param/color.py``, ``to_valid_rgb(decorrelate=True)``). Models
  with other than 3 channels skip the mixing.
- Transformation robustness: before every step each image is shifted, scaled and
  rotated at random (``lucent/optvis/transform.py``'s ``standard_transforms``: pad
  12, jitter 8, scale 0.9–1.1, rotate ±10°, jitter 4). Here they are one bilinear
  affine warp per image at the same size (reflecting at the edges), so the model
  sees as many pixels as in the tutorial style; the random draws are per
  (seed, filter), so a pattern does not depend on the batch it was computed in.

The spectrum ascends with Adam at lucent's learning rate 0.05 (``render.py``).
``diversity`` (lucent's ``objectives.diversity``) subtracts, for images of the same
filter in one batch, the mean cosine similarity of their Gram matrices at the layer:
``filter_patterns(model, layer, [5] * 4, style="lucid", diversity=100)`` gives four
different images of filter 5.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

# lucid's square root of ImageNet's colour correlation, scaled so no column has norm > 1.
COLOR_CORRELATION_SVD_SQRT = np.asarray([[0.26, 0.09, 0.02], [0.27, 0.00, -0.05], [0.27, -0.09, 0.03]], np.float32)
COLOR_CORRELATION = COLOR_CORRELATION_SVD_SQRT / np.max(np.linalg.norm(COLOR_CORRELATION_SVD_SQRT, axis=0))
SPECTRUM_SD = 0.2  # lucent: 0.01, see above
SATURATION = 4.0  # lucid's "magic" divisor of the spatial image: larger is less saturated
LEARNING_RATE = 0.05
JITTER_PX = 8
SCALES = (0.9, 1.1)
ROTATION_DEGREES = 10.0
ADAM_BETAS = (0.9, 0.999)
ADAM_EPSILON = 1e-8


class FourierImage:
    """Images of ``(height, width, channels)`` as scaled spectra with decorrelated colour.

    ``decode`` maps a spectrum batch (B, C, height, width // 2 + 1, 2) to images in
    (0, 1); ``encode`` is its inverse for images strictly inside (0, 1).
    """

    def __init__(self, height: int, width: int, channels: int):
        self.height, self.width, self.channels = height, width, channels
        rows = np.fft.fftfreq(height)[:, None]
        columns = np.fft.rfftfreq(width)[None, :]
        frequencies = np.sqrt(rows**2 + columns**2)
        self._scale = tf.constant(1.0 / np.maximum(frequencies, 1.0 / max(height, width)), tf.float32)
        self._orthonormal = float(np.sqrt(height * width))  # irfft2d divides by h·w; ortho by sqrt(h·w)
        self._colors = tf.constant(COLOR_CORRELATION.T if channels == 3 else np.eye(channels, dtype=np.float32))

    @property
    def spectrum_shape(self) -> tuple:
        return (self.channels, self.height, self.width // 2 + 1, 2)

    def start(self, seeds) -> np.ndarray:
        """Start spectra, one per seed (a sequence of ints for ``np.random.default_rng``)."""
        return np.stack([np.random.default_rng(seed).normal(0, SPECTRUM_SD, self.spectrum_shape) for seed in seeds]).astype(
            np.float32
        )

    def decode(self, spectra):
        spectrum = tf.complex(spectra[..., 0], spectra[..., 1]) * tf.cast(self._scale, tf.complex64)
        planes = tf.signal.irfft2d(spectrum, fft_length=[self.height, self.width]) * self._orthonormal
        image = tf.transpose(planes, (0, 2, 3, 1)) / SATURATION
        return tf.sigmoid(tf.linalg.matmul(image, self._colors))

    def encode(self, images) -> np.ndarray:
        """The spectra whose ``decode`` is ``images`` (values strictly inside (0, 1))."""
        images = tf.constant(images, tf.float32)
        logits = tf.math.log(images) - tf.math.log1p(-images)
        planes = tf.linalg.matmul(logits, tf.linalg.inv(self._colors)) * SATURATION
        spectrum = tf.signal.rfft2d(tf.transpose(planes, (0, 3, 1, 2))) / self._orthonormal
        spectrum = spectrum / tf.cast(self._scale, tf.complex64)
        return tf.stack([tf.math.real(spectrum), tf.math.imag(spectrum)], axis=-1).numpy()


def random_transforms(seeds, steps: int, image_shape) -> np.ndarray:
    """(B, steps, 8) projective transforms: per image and step a random shift of up to
    ``JITTER_PX``, a scale in ``SCALES`` and a rotation of up to ``ROTATION_DEGREES``
    about the centre, as ImageProjectiveTransform takes them (output → input pixel)."""
    height, width = image_shape[:2]
    centre = np.array([(width - 1) / 2, (height - 1) / 2])
    rows = []
    for seed in seeds:
        # One draw per step, row by row: the first k steps' transforms are the same for any ``steps``.
        draws = np.random.default_rng(seed).random((steps, 4))
        shift = (draws[:, :2] * 2 - 1) * JITTER_PX
        scale = SCALES[0] + draws[:, 2] * (SCALES[1] - SCALES[0])
        angle = np.deg2rad((draws[:, 3] * 2 - 1) * ROTATION_DEGREES)
        cos, sin = np.cos(angle) / scale, np.sin(angle) / scale
        # input = R(-angle) / scale · (output - centre) + centre + shift
        offset = centre + shift - np.stack([cos * centre[0] + sin * centre[1], -sin * centre[0] + cos * centre[1]], 1)
        zeros = np.zeros(steps)
        rows.append(np.stack([cos, sin, offset[:, 0], -sin, cos, offset[:, 1], zeros, zeros], axis=1))
    return np.stack(rows).astype(np.float32)


def warp(images, transforms):
    """Each image of ``images`` (B, H, W, C) moved by its row of ``transforms`` (B, 8), same size."""
    return tf.raw_ops.ImageProjectiveTransformV3(
        images=images,
        transforms=transforms,
        output_shape=tf.shape(images)[1:3],
        fill_value=0.0,
        interpolation="BILINEAR",
        fill_mode="REFLECT",
    )


def gram_similarity(activations, same_filter):
    """Per image, the mean cosine similarity of its Gram matrix to those of the other images
    of its filter (``same_filter`` a (B, B) 0/1 matrix, 0 on the diagonal)."""
    flat = tf.reshape(activations, (tf.shape(activations)[0], -1, tf.shape(activations)[-1]))
    grams = tf.linalg.matmul(flat, flat, transpose_a=True)
    grams = tf.reshape(grams, (tf.shape(grams)[0], -1))
    grams = grams / (tf.norm(grams, axis=1, keepdims=True) + 1e-8)
    similarity = tf.linalg.matmul(grams, grams, transpose_b=True) * same_filter
    return tf.reduce_sum(similarity, axis=1) / tf.maximum(tf.reduce_sum(same_filter, axis=1), 1.0)


def adam_ascent(parameters, gradients, first, second, step, learning_rate):
    """One Adam step up the gradient; ``step`` counts from 1."""
    beta1, beta2 = ADAM_BETAS
    first = beta1 * first + (1 - beta1) * gradients
    second = beta2 * second + (1 - beta2) * tf.square(gradients)
    corrected = learning_rate * tf.sqrt(1 - beta2**step) / (1 - beta1**step)
    return parameters + corrected * first / (tf.sqrt(second) + ADAM_EPSILON), first, second
