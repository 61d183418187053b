"""Selective enhancement of blob-like structures in CT: the Hessian dot filter.

In a chest CT a small nodule and a vessel seen end-on look alike on one slice;
in 3-D the nodule is a blob and the vessel a tube. The eigenvalues of the Hessian
of the Gaussian-smoothed image tell them apart (Li, Sone & Doi 2003, "Selective
enhancement filters for nodules, vessels, and airway walls in two- and
three-dimensional CT scans", Med. Phys. 30(8)): with ``|λ1| ≥ |λ2| ≥ |λ3|``, a
bright blob has all three negative and of similar size, a bright tube has
``λ3 ≈ 0``. The dot filter

``z_dot = |λ3|² / |λ1|`` where ``λ1, λ2, λ3 < 0``, else 0

is then about ``|λ|`` for a blob and about 0 for a tube or a plane. Each scale
``σ`` uses the scale-normalised Hessian ``σ² H`` (Lindeberg 1998), so responses of
different scales compare, and the filter keeps the largest over the scales.

:class:`DotEnhancementd` appends the response as a channel of the image, so a
network sees the blob-versus-tube evidence explicitly (the CT chain's
``dot_enhancement``).
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from monai.config.type_definitions import KeysCollection
from monai.data.meta_tensor import MetaTensor
from monai.data.utils import affine_to_spacing
from monai.transforms.transform import MapTransform
from numpy.typing import NDArray
from scipy import ndimage

FloatArray = NDArray[np.float32]


#: Gaussian kernels reach this many standard deviations (as ``scipy.ndimage``'s default).
TRUNCATE = 4.0


def gaussian_derivative_kernel(sigma: float, order: int) -> NDArray[np.float64]:
    """Return the sampled 1-D Gaussian derivative of ``order`` (0-2) as correlation weights.

    Unlike sampling the derivative alone (``scipy.ndimage.gaussian_filter``), the
    kernels are corrected to be exact on polynomials up to their order: the
    smoothing kernel sums to 1, the first-derivative kernel gives slope 1 on a
    ramp, and the second-derivative kernel sums to 0 and gives 1 on ``x² / 2``. So a
    flat region has a Hessian of exactly zero whatever its intensity (sampled, the
    second-derivative kernel's sum is not zero, and a flat lung at -860 HU would
    read as a faint blob).

    Raises
    ------
    ValueError
        If ``sigma`` is not positive or ``order`` is not 0, 1 or 2.
    """
    if not sigma > 0:
        raise ValueError(f"sigma must be positive, got {sigma}")
    if order not in (0, 1, 2):
        raise ValueError(f"order must be 0, 1 or 2, got {order}")
    radius = max(1, int(TRUNCATE * sigma + 0.5))
    x = np.arange(-radius, radius + 1, dtype=np.float64)
    gaussian = np.exp(-0.5 * (x / sigma) ** 2)
    gaussian /= gaussian.sum()
    if order == 0:
        return gaussian
    if order == 1:
        # Correlation weights of d/dx: w(x) = g'(-x) = x g(x) / sigma², scaled to slope 1.
        weights = x * gaussian
        return weights / float((weights * x).sum())
    weights = (x**2 / sigma**4 - 1.0 / sigma**2) * gaussian
    weights -= gaussian * (weights.sum() / gaussian.sum())
    return weights / float((weights * x**2 / 2.0).sum())


def _derivative(values: FloatArray, sigmas: Sequence[float], orders: Sequence[int]) -> FloatArray:
    """Smooth ``values`` with a Gaussian and differentiate it ``orders[axis]`` times per axis."""
    result = values
    for axis, (sigma, order) in enumerate(zip(sigmas, orders, strict=True)):
        kernel = gaussian_derivative_kernel(float(sigma), int(order))
        result = ndimage.correlate1d(result, kernel, axis=axis, mode="nearest")
    return result


def hessian_eigenvalues(
    volume: NDArray[np.floating[Any]], sigma_voxels: float | Sequence[float]
) -> tuple[FloatArray, FloatArray, FloatArray]:
    """Return the eigenvalues of the Hessian of a Gaussian-smoothed volume, ascending.

    The Hessian is the second derivatives of ``volume`` smoothed with a Gaussian of
    ``sigma_voxels`` (per axis, in voxels; :func:`gaussian_derivative_kernel`, the
    volume's edge repeated outwards), not scale-normalised. The eigenvalues of each voxel's
    symmetric 3 x 3 matrix come in closed form (the trigonometric solution of the
    characteristic cubic; Smith 1961), vectorised over the volume instead of one
    ``numpy.linalg.eigvalsh`` call per voxel's matrix.

    Parameters
    ----------
    volume
        A 3-D array.
    sigma_voxels
        Gaussian standard deviation, one value or one per axis (voxels, positive).

    Returns
    -------
    tuple of numpy.ndarray
        ``(lowest, middle, highest)`` eigenvalue per voxel, float32, each of the
        volume's shape.

    Raises
    ------
    ValueError
        If ``volume`` is not 3-D or a sigma is not positive.
    """
    values = np.asarray(volume, dtype=np.float32)
    if values.ndim != 3:
        raise ValueError(f"expected a 3-D volume, got shape {values.shape}")
    sigmas = np.broadcast_to(np.asarray(sigma_voxels, dtype=np.float64), (3,))
    if not np.all(sigmas > 0):
        raise ValueError(f"sigma must be positive, got {sigma_voxels}")
    derivative: dict[tuple[int, int], FloatArray] = {}
    for a in range(3):
        for b in range(a, 3):
            orders = [0, 0, 0]
            orders[a] += 1
            orders[b] += 1
            derivative[a, b] = _derivative(values, sigmas.tolist(), orders)
    xx, yy, zz = derivative[0, 0], derivative[1, 1], derivative[2, 2]
    xy, xz, yz = derivative[0, 1], derivative[0, 2], derivative[1, 2]
    mean = (xx + yy + zz) / 3.0
    off_diagonal = xy * xy + xz * xz + yz * yz
    dx, dy, dz = xx - mean, yy - mean, zz - mean
    spread = np.sqrt((dx * dx + dy * dy + dz * dz + 2.0 * off_diagonal) / 6.0)
    # det((H - mean I) / spread) / 2 = cos(3 phi); a multiple of the identity has spread 0.
    determinant = dx * (dy * dz - yz * yz) - xy * (xy * dz - yz * xz) + xz * (xy * yz - dy * xz)
    safe = np.where(spread > 0, spread, 1.0)
    phi = np.arccos(np.clip(determinant / (2.0 * safe**3), -1.0, 1.0)) / 3.0
    highest = mean + 2.0 * spread * np.cos(phi)
    lowest = mean + 2.0 * spread * np.cos(phi + 2.0 * math.pi / 3.0)
    middle = 3.0 * mean - highest - lowest
    return (
        lowest.astype(np.float32),
        middle.astype(np.float32),
        highest.astype(np.float32),
    )


def dot_enhancement(
    volume: NDArray[np.floating[Any]], sigmas_voxels: Sequence[float | Sequence[float]]
) -> FloatArray:
    """Return the multi-scale dot filter of bright blobs (Li, Sone & Doi 2003).

    Per scale, with the eigenvalues of the scale-normalised Hessian ``σ² H`` ordered
    ``|λ1| ≥ |λ2| ≥ |λ3|``: ``|λ3|² / |λ1|`` where all three are negative, else 0;
    then the largest over the scales. In the units of ``volume``: a bright sphere
    of contrast ``c`` and radius near ``σ√3`` responds with a fraction of ``c``, a
    bright tube and a flat region with about 0.

    Parameters
    ----------
    volume
        A 3-D array (e.g. CT in HU, or windowed).
    sigmas_voxels
        The scales: Gaussian standard deviations in voxels, each one value or one per axis.

    Raises
    ------
    ValueError
        If no scale is given, or see :func:`hessian_eigenvalues`.
    """
    if len(sigmas_voxels) == 0:
        raise ValueError("give at least one scale")
    best = np.zeros(np.shape(volume), dtype=np.float32)
    for sigma in sigmas_voxels:
        lowest, _, highest = hessian_eigenvalues(volume, sigma)
        # Scale normalisation: sigma squared (the geometric mean where anisotropic).
        weight = np.float32(float(np.prod(np.broadcast_to(np.asarray(sigma), (3,)))) ** (2 / 3))
        # All negative means the highest (smallest in magnitude) is negative.
        response = np.where(highest < 0, highest * highest / np.maximum(-lowest, 1e-12), 0.0)
        best = np.maximum(best, weight * response.astype(np.float32))
    return best


class DotEnhancementd(MapTransform):
    """Append the dot filter of an image's first channel as a new last channel.

    Parameters
    ----------
    keys
        Image keys; each is a ``(channels, X, Y, Z)`` tensor (a MetaTensor keeps its
        affine, meta and trace: the channel is appended, no spatial step recorded).
    sigmas_mm
        The filter's scales, Gaussian standard deviations in millimetres; converted
        to voxels with the image's voxel size (its affine; 1 mm voxels without one).
    unit
        The response is divided by this (in the image's intensity units), so that
        the new channel is about 1 at a typical target.
    ceiling
        The scaled response is clipped to ``[0, ceiling]``.
    """

    def __init__(
        self,
        keys: KeysCollection,
        sigmas_mm: Sequence[float],
        unit: float,
        ceiling: float,
    ) -> None:
        super().__init__(keys)
        if not sigmas_mm or min(sigmas_mm) <= 0:
            raise ValueError(f"sigmas_mm must be positive and not empty, got {sigmas_mm}")
        if unit <= 0 or ceiling <= 0:
            raise ValueError(f"unit and ceiling must be positive, got {unit} and {ceiling}")
        self.sigmas_mm = tuple(float(s) for s in sigmas_mm)
        self.unit = float(unit)
        self.ceiling = float(ceiling)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        """Return the item with each keyed image one channel longer."""
        d = dict(data)
        for key in self.key_iterator(d):
            image = d[key]
            if image.ndim != 4:
                raise ValueError(f"expected a (channels, X, Y, Z) image, got {tuple(image.shape)}")
            voxel_mm = (
                affine_to_spacing(np.asarray(image.affine, dtype=np.float64), r=3)
                if isinstance(image, MetaTensor)
                else np.ones(3)
            )
            first = np.asarray(torch.as_tensor(image[0]).detach().cpu(), dtype=np.float32)
            scales = [tuple(s / voxel_mm) for s in self.sigmas_mm]
            response = np.clip(dot_enhancement(first, scales) / self.unit, 0.0, self.ceiling)
            channel = torch.as_tensor(response, dtype=image.dtype)[None]
            d[key] = torch.cat([image, channel.to(image.device)], dim=0)
        return d
