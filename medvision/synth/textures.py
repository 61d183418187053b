"""Array helpers shared by the phantom generators.

Noise textures, soft shapes, anti-aliased strokes, small patches pasted into a
larger image, and the acquisition steps (blur, quantisation).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np
from numpy.typing import ArrayLike, NDArray
from PIL import Image, ImageDraw
from scipy import ndimage

FloatArray = NDArray[np.float32]

#: One stroke of :func:`stroke_coverage`: points ``(n, 2)`` as (row, col), the width
#: in pixels at each point (or one width for the whole stroke), and the value painted
#: (0 to 1).
Stroke = tuple[ArrayLike, ArrayLike, float]


def smooth_noise(rng: np.random.Generator, shape: tuple[int, ...], sigma: float) -> FloatArray:
    """Gaussian-filtered white noise with zero mean and unit standard deviation.

    Large ``sigma`` values are computed on a coarse grid and zoomed up, which keeps
    the cost independent of the correlation length.
    """
    factor = max(1, int(sigma // 4))
    coarse_shape = tuple(max(2, -(-n // factor)) for n in shape)
    field = rng.standard_normal(coarse_shape).astype(np.float32)
    field = ndimage.gaussian_filter(field, sigma / factor, mode="wrap")
    if factor > 1:
        zoom = [n / c for n, c in zip(shape, coarse_shape, strict=True)]
        field = ndimage.zoom(field, zoom, order=1)[tuple(slice(0, n) for n in shape)]
    field -= field.mean()
    std = float(field.std())
    return (field / std if std > 0 else field).astype(np.float32)


def power_law_noise(rng: np.random.Generator, shape: tuple[int, int], beta: float) -> FloatArray:
    """2-D noise with a ``1 / f**beta`` power spectrum, zero mean and unit deviation.

    Anatomical background texture follows a power law (beta about 3 for breast
    tissue; Burgess et al. 2001).
    """
    fy = np.fft.fftfreq(shape[0])[:, None]
    fx = np.fft.rfftfreq(shape[1])[None, :]
    radius = np.sqrt(fx**2 + fy**2)
    radius[0, 0] = 1.0
    amplitude = radius ** (-beta / 2.0)
    amplitude[0, 0] = 0.0
    phase = rng.standard_normal((shape[0], shape[1] // 2 + 1)) + 1j * rng.standard_normal(
        (shape[0], shape[1] // 2 + 1)
    )
    field = np.fft.irfft2(amplitude * phase, s=shape).astype(np.float32)
    field -= field.mean()
    std = float(field.std())
    return (field / std if std > 0 else field).astype(np.float32)


def grid(shape: tuple[int, ...]) -> list[FloatArray]:
    """Return index coordinate arrays (``ij`` order) as float32, one per axis."""
    axes = np.meshgrid(*[np.arange(n) for n in shape], indexing="ij")
    return [a.astype(np.float32) for a in axes]


def soft_ellipse(
    shape: tuple[int, ...],
    centre: tuple[float, ...],
    radii: tuple[float, ...],
    edge: float = 1.5,
    coords: list[FloatArray] | None = None,
) -> FloatArray:
    """Return an ellipse (or ellipsoid) with a smooth edge, 1 inside and 0 outside.

    Parameters
    ----------
    shape
        Array shape (2-D or 3-D).
    centre, radii
        Centre and semi-axes in index units, one per axis.
    edge
        Width of the logistic edge in index units.
    coords
        Precomputed :func:`grid` of ``shape`` (optional, for speed).
    """
    axes = coords if coords is not None else grid(shape)
    distance = np.zeros(shape, dtype=np.float32)
    for axis, c, r in zip(axes, centre, radii, strict=True):
        distance += ((axis - c) / max(r, 1e-3)) ** 2
    distance = np.sqrt(distance)
    mean_radius = float(np.mean(radii))
    return soft_inside((distance - 1.0) * mean_radius, max(edge, 1e-3))


def logistic(x: ArrayLike) -> FloatArray:
    """Return the logistic function ``1 / (1 + exp(-x))``, overflow-free, as float32."""
    return (0.5 * (1.0 + np.tanh(0.5 * np.asarray(x, dtype=np.float32)))).astype(np.float32)


def soft_inside(signed_distance: ArrayLike, edge: float) -> FloatArray:
    """Return a soft indicator of ``signed_distance < 0`` with a logistic edge ``edge`` wide.

    Values are 1 well inside (negative distance), 0 well outside and 0.5 on the
    boundary; ``edge`` models partial-volume averaging across it.
    """
    return logistic(-np.asarray(signed_distance, dtype=np.float32) / edge)


def smoothstep(x: ArrayLike, low: float, high: float) -> FloatArray:
    """Return the cubic smoothstep of ``x``: 0 below ``low``, 1 above ``high``, smooth between."""
    t = np.clip((np.asarray(x, dtype=np.float32) - low) / (high - low), 0.0, 1.0)
    return (t * t * (3.0 - 2.0 * t)).astype(np.float32)


def stroke_coverage(
    shape: tuple[int, int],
    strokes: Sequence[Stroke],
    supersample: int = 4,
    origin: Sequence[float] = (0.0, 0.0),
) -> FloatArray:
    """Render variable-width polylines with anti-aliasing.

    Strokes are drawn with round joins and caps on a canvas ``supersample`` times
    finer than ``shape`` and box-averaged down, so each pixel holds the painted
    value times the fraction of it that is covered. Later strokes overwrite
    earlier ones where they overlap.

    Parameters
    ----------
    shape
        Output ``(rows, columns)``.
    strokes
        ``(points, widths, value)`` triples (see :data:`Stroke`); points are
        (row, col) in pixels, pixel centres at whole numbers.
    supersample
        Sub-pixels per pixel along each axis.
    origin
        (row, col) of the output's first pixel in the strokes' coordinates.

    Returns
    -------
    FloatArray
        Values in ``[0, 1]``.
    """
    rows, cols = shape
    canvas = Image.new("L", (cols * supersample, rows * supersample), 0)
    draw = ImageDraw.Draw(canvas)
    offset = np.array([origin[1], origin[0]])
    for stroke_points, stroke_widths, value in strokes:
        points = np.asarray(stroke_points, dtype=np.float64).reshape(-1, 2)
        n = len(points)
        if n == 0:
            continue
        widths = np.broadcast_to(np.asarray(stroke_widths, dtype=np.float64), (n,))
        fill = round(255 * min(max(value, 0.0), 1.0))
        xy = (points[:, ::-1] - offset + 0.5) * supersample - 0.5
        sub_widths = np.maximum(1, np.rint(widths * supersample)).astype(int)
        start = 0
        for end in range(1, n + 1):
            if end < n and sub_widths[end] == sub_widths[start]:
                continue
            width = int(sub_widths[start])
            run = xy[max(start - 1, 0) : end]
            coords = [(float(x), float(y)) for x, y in run]
            if len(coords) > 1:
                draw.line(coords, fill=fill, width=width, joint="curve")
            half = width / 2.0
            for x, y in (coords[0], coords[-1]):
                draw.ellipse((x - half, y - half, x + half, y + half), fill=fill)
            start = end
    return (np.asarray(canvas.reduce(supersample), dtype=np.float32) / 255.0).astype(np.float32)


def centred_origin(centre: Sequence[float], half: int) -> tuple[int, ...]:
    """Return the first index of a patch ``2 half + 1`` wide centred on ``centre``'s pixel."""
    return tuple(round(c) - half for c in centre)


def patch_offsets(centre: Sequence[float], half: int) -> list[FloatArray]:
    """Return, per axis, each pixel's offset from ``centre`` on a patch around it.

    The patch is ``2 half + 1`` pixels wide along every axis and starts at
    :func:`centred_origin`; the offsets keep the sub-pixel part of ``centre``.
    """
    origin = centred_origin(centre, half)
    axes = grid((2 * half + 1,) * len(centre))
    return [(a + (o - c)).astype(np.float32) for a, o, c in zip(axes, origin, centre, strict=True)]


def overlap(
    shape: tuple[int, ...], patch_shape: tuple[int, ...], origin: Sequence[int]
) -> tuple[tuple[slice, ...], tuple[slice, ...]] | None:
    """Return where a patch placed with its first pixel at ``origin`` overlaps an array.

    Parameters
    ----------
    shape
        Shape of the array the patch is placed in.
    patch_shape
        Shape of the patch.
    origin
        Index in the array of the patch's first pixel (may lie outside the array).

    Returns
    -------
    tuple or None
        The array's and the patch's slices (one per axis) of the overlap, or None
        when they do not overlap.
    """
    field: list[slice] = []
    patch: list[slice] = []
    for size, length, start in zip(shape, patch_shape, origin, strict=True):
        lo, hi = max(start, 0), min(start + length, size)
        if hi <= lo:
            return None
        field.append(slice(lo, hi))
        patch.append(slice(lo - start, hi - start))
    return tuple(field), tuple(patch)


def paste(
    field: NDArray[np.floating],
    patch: NDArray[np.floating],
    origin: Sequence[int],
    combine: Literal["add", "max"] = "add",
) -> None:
    """Add ``patch`` into ``field`` (or take the maximum), in place, clipped to ``field``.

    ``origin`` is the index in ``field`` of the patch's first pixel (see
    :func:`centred_origin` for a patch centred on a point).
    """
    where = overlap(field.shape, patch.shape, origin)
    if where is None:
        return
    box, part = where
    if combine == "max":
        np.maximum(field[box], patch[part], out=field[box])
    else:
        field[box] += patch[part]


def union(
    parts: Sequence[tuple[FloatArray, tuple[int, ...]]],
) -> tuple[FloatArray, tuple[int, ...]]:
    """Return the union (maximum) of ``(patch, origin)`` parts on one patch covering them all."""
    first = tuple(min(origin[axis] for _, origin in parts) for axis in range(len(parts[0][1])))
    stop = tuple(
        max(origin[axis] + patch.shape[axis] for patch, origin in parts)
        for axis in range(len(first))
    )
    combined = np.zeros(tuple(b - a for a, b in zip(first, stop, strict=True)), dtype=np.float32)
    for patch, origin in parts:
        paste(combined, patch, [o - f for o, f in zip(origin, first, strict=True)], "max")
    return combined, first


def gaussian_blur(
    image: FloatArray, sigma_px: float | Sequence[float], truncate: float = 4.0
) -> FloatArray:
    """Blur ``image`` with a Gaussian of standard deviation ``sigma_px`` pixels.

    Parameters
    ----------
    image
        The array to blur.
    sigma_px
        One standard deviation for every spatial axis (a trailing colour axis of
        length 3 of a 3-D image is left alone), or one per axis of ``image``, for
        example for non-cubic voxels (0 leaves an axis unblurred).
    truncate
        Half-width of the filter in standard deviations.

    Returns
    -------
    FloatArray
        The blurred image (``image`` itself when no axis is blurred).

    Raises
    ------
    ValueError
        If ``sigma_px`` is a sequence whose length is not ``image.ndim``.
    """
    sigma = [float(s) for s in np.ravel(sigma_px)]
    if np.ndim(sigma_px) == 0:
        sigma = sigma * image.ndim
        if image.ndim == 3 and image.shape[-1] == 3:
            sigma[-1] = 0.0
    elif len(sigma) != image.ndim:
        raise ValueError(f"{len(sigma)} sigmas for an image of {image.ndim} axes")
    if all(s <= 0 for s in sigma):
        return image
    blurred = ndimage.gaussian_filter(image, sigma, truncate=truncate)
    return blurred.astype(np.float32, copy=False)


def quantise(image01: FloatArray, bits_stored: int, invert: bool = False) -> NDArray[np.uint16]:
    """Map values in ``[0, 1]`` to stored integers of ``bits_stored`` bits.

    ``invert`` renders MONOCHROME1 (high stored value = dark).
    """
    top = 2**bits_stored - 1
    clipped = np.clip(image01, 0.0, 1.0)
    if invert:
        clipped = 1.0 - clipped
    dtype = np.uint8 if bits_stored <= 8 else np.uint16
    return np.rint(clipped * top).astype(dtype)


def bounding_box(mask: NDArray[np.number]) -> list[int] | None:
    """Return ``[min_0, min_1, ..., max_0, max_1, ...]`` (inclusive) of a mask, or None."""
    points = np.argwhere(mask > 0)
    if points.size == 0:
        return None
    return [int(v) for v in points.min(axis=0)] + [int(v) for v in points.max(axis=0)]


def mirror_box(box: Sequence[int], columns: int) -> list[int]:
    """Return a 2-D :func:`bounding_box` ``[r0, c0, r1, c1]`` after a left-right flip.

    ``columns`` is the width of the flipped image.
    """
    r0, c0, r1, c1 = box
    return [r0, columns - 1 - c1, r1, columns - 1 - c0]
