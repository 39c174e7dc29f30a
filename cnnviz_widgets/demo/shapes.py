"""Procedural images of simple shapes on textured, coloured backgrounds.

Every image is 64×64 RGB, float32 in [0, 1]: a background made of a random colour
gradient, sometimes stripes, and pixel noise, with one or two filled shapes of
random class, size, position, rotation and colour painted on it. The masks say
exactly which pixels each shape covers, so an explanation method such as Grad-CAM
can be scored against the truth.

Everything is drawn from one ``numpy.random.Generator`` seeded by ``seed``, so the
same arguments always give the same images.
"""

from __future__ import annotations

import numpy as np

CLASS_NAMES = ["circle", "square", "triangle", "cross", "star"]
IMAGE_SIZE = 64

MIN_RADIUS = 8.0  # px; a shape's circumradius, so the smallest are 16 px across
MAX_RADIUS = 14.0
SUPERSAMPLING = 4  # sub-pixels per axis, for anti-aliased edges
MIN_CONTRAST = 0.35  # RGB distance between a shape and the background under it


def generate(count: int, seed: int, shapes_per_image: int = 1):
    """``count`` images with ``shapes_per_image`` (1 or 2) shapes of different classes each.

    Returns ``(images, labels, masks)``:
      images: float32 (count, 64, 64, 3) in [0, 1]
      labels: int64 (count,) with one shape per image, else (count, shapes_per_image)
      masks:  bool (count, shapes_per_image, 64, 64), True where that shape covers
              at least half of the pixel; ``masks[:, j]`` belongs to ``labels[:, j]``.
    Single-shape images have balanced classes (each class ``count // 5`` or one more
    times); two-shape images never overlap and never repeat a class.
    """
    if shapes_per_image not in (1, 2):
        raise ValueError(f"shapes_per_image must be 1 or 2; got {shapes_per_image!r}.")
    rng = np.random.default_rng(seed)
    num_classes = len(CLASS_NAMES)
    if shapes_per_image == 1:
        labels = rng.permutation(np.resize(np.arange(num_classes), count))[:, None]
    else:
        labels = np.stack([rng.choice(num_classes, size=2, replace=False) for _ in range(count)])
    images = np.empty((count, IMAGE_SIZE, IMAGE_SIZE, 3), np.float32)
    masks = np.empty((count, shapes_per_image, IMAGE_SIZE, IMAGE_SIZE), bool)
    for index in range(count):
        images[index], masks[index] = _draw_image(rng, labels[index])
    labels = labels.astype(np.int64)
    return images, (labels[:, 0] if shapes_per_image == 1 else labels), masks


def _draw_image(rng: np.random.Generator, classes):
    image = _background(rng)
    radii, centres = _placements(rng, len(classes))
    masks = []
    for class_index, radius, centre in zip(classes, radii, centres):
        coverage = _coverage(CLASS_NAMES[class_index], radius, centre, rng.uniform(0, 2 * np.pi))
        colour = _contrasting_colour(rng, image[coverage > 0.5].mean(axis=0))
        image = image * (1 - coverage[..., None]) + colour * coverage[..., None]
        masks.append(coverage >= 0.5)
    image = image + rng.normal(0, rng.uniform(0.01, 0.08), image.shape)
    return np.clip(image, 0, 1), np.stack(masks)


def _pixel_grid():
    return np.meshgrid(np.arange(IMAGE_SIZE) + 0.5, np.arange(IMAGE_SIZE) + 0.5)


def _background(rng: np.random.Generator) -> np.ndarray:
    x, y = _pixel_grid()
    angle = rng.uniform(0, 2 * np.pi)
    ramp = (np.cos(angle) * x + np.sin(angle) * y) / IMAGE_SIZE
    ramp = (ramp - ramp.min()) / (ramp.max() - ramp.min())
    start, end = rng.uniform(0, 1, (2, 3))
    image = start + (end - start) * ramp[..., None]
    if rng.uniform() < 0.5:
        angle = rng.uniform(0, np.pi)
        period = rng.uniform(4, 16)
        wave = np.sin(2 * np.pi * (np.cos(angle) * x + np.sin(angle) * y) / period + rng.uniform(0, 2 * np.pi))
        image = image + rng.uniform(0.05, 0.2) * wave[..., None] * rng.uniform(-1, 1, 3)
    return np.clip(image, 0, 1)


def _placements(rng: np.random.Generator, count: int):
    """Radii and centres of ``count`` shapes that fit in the image and keep apart."""
    while True:
        radii = rng.uniform(MIN_RADIUS, MAX_RADIUS, count)
        centres = np.stack([rng.uniform(r + 1, IMAGE_SIZE - r - 1, 2) for r in radii])
        if count == 1 or np.linalg.norm(centres[0] - centres[1]) > radii.sum() + 3:
            return radii, centres


def _contrasting_colour(rng: np.random.Generator, background: np.ndarray) -> np.ndarray:
    while True:
        colour = rng.uniform(0, 1, 3)
        if np.linalg.norm(colour - background) > MIN_CONTRAST:
            return colour


def _coverage(name: str, radius: float, centre, rotation: float) -> np.ndarray:
    """Fraction (64, 64) of each pixel that the shape covers, from sub-pixel samples."""
    steps = (np.arange(IMAGE_SIZE * SUPERSAMPLING) + 0.5) / SUPERSAMPLING
    x, y = np.meshgrid(steps - centre[0], steps - centre[1])
    # Rotate the sample points the other way instead of rotating the shape.
    cos, sin = np.cos(rotation), np.sin(rotation)
    u, v = cos * x + sin * y, -sin * x + cos * y
    if name == "circle":
        inside = u**2 + v**2 <= radius**2
    else:
        vertices_u, vertices_v = _outline(name) * radius
        inside = _inside_polygon(u, v, vertices_u, vertices_v)
    blocks = inside.reshape(IMAGE_SIZE, SUPERSAMPLING, IMAGE_SIZE, SUPERSAMPLING)
    return blocks.mean(axis=(1, 3))


def _outline(name: str) -> np.ndarray:
    """(2, vertices) polygon of circumradius 1 around the origin."""
    if name in ("square", "triangle"):
        sides = 4 if name == "square" else 3
        angles = np.pi / 2 + 2 * np.pi * np.arange(sides) / sides
        return np.stack([np.cos(angles), np.sin(angles)])
    if name == "star":
        angles = np.pi / 2 + np.pi * np.arange(10) / 5
        lengths = np.where(np.arange(10) % 2 == 0, 1.0, 0.5)
        return np.stack([lengths * np.cos(angles), lengths * np.sin(angles)])
    if name == "cross":
        arm = 0.4  # half the width of each arm
        upper_arm = np.array([[arm, arm], [arm, 1], [-arm, 1]]).T
        quarter_turn = np.array([[0, -1], [1, 0]])
        arms = [np.linalg.matrix_power(quarter_turn, k) @ upper_arm for k in range(4)]
        return np.concatenate(arms, axis=1)
    raise ValueError(f"Unknown shape {name!r}. Available: {', '.join(CLASS_NAMES)}.")


def _inside_polygon(x, y, vertices_x, vertices_y) -> np.ndarray:
    """Even-odd rule: a point is inside if a ray to +x crosses the outline an odd number of times."""
    inside = np.zeros(x.shape, bool)
    previous = len(vertices_x) - 1
    for current in range(len(vertices_x)):
        x0, y0, x1, y1 = vertices_x[current], vertices_y[current], vertices_x[previous], vertices_y[previous]
        if y0 != y1:
            spans = (y0 > y) != (y1 > y)
            crossing = x0 + (x1 - x0) * (y - y0) / (y1 - y0)
            inside ^= spans & (x < crossing)
        previous = current
    return inside
