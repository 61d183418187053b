"""Array helpers shared by the phantom generators: noise textures, soft shapes, acquisition."""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray
from scipy import ndimage

FloatArray = NDArray[np.float32]


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
    return logistic((1.0 - distance) * mean_radius / max(edge, 1e-3))


def logistic(x: NDArray[np.floating]) -> FloatArray:
    """Return the logistic function ``1 / (1 + exp(-x))``, overflow-free, as float32."""
    return (0.5 * (1.0 + np.tanh(0.5 * np.asarray(x, dtype=np.float32)))).astype(np.float32)


def gaussian_blur(image: FloatArray, sigma_px: float) -> FloatArray:
    """Blur the spatial axes of ``image`` (not a trailing colour axis) by ``sigma_px``."""
    if sigma_px <= 0:
        return image
    sigma: list[float] = [sigma_px] * image.ndim
    if image.ndim == 3 and image.shape[-1] == 3:
        sigma[-1] = 0.0
    return ndimage.gaussian_filter(image, sigma).astype(np.float32)


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
