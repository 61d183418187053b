"""Tests of the Hessian dot filter and the transform that appends it as a channel."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.data.meta_tensor import MetaTensor
from scipy import ndimage

from medvision.transforms.enhancement import (
    DotEnhancementd,
    dot_enhancement,
    gaussian_derivative_kernel,
    hessian_eigenvalues,
)

SHAPE = (40, 40, 40)
CENTRE = (20, 20, 20)


def _grid() -> list[np.ndarray]:
    return list(np.meshgrid(*(np.arange(s, dtype=np.float32) for s in SHAPE), indexing="ij"))


def _sphere(radius: float, contrast: float = 100.0) -> np.ndarray:
    x, y, z = _grid()
    distance = np.sqrt((x - 20) ** 2 + (y - 20) ** 2 + (z - 20) ** 2)
    return (contrast * (distance <= radius)).astype(np.float32)


def _tube(radius: float, contrast: float = 100.0) -> np.ndarray:
    """A bright cylinder along axis 2 through the centre."""
    x, y, _ = _grid()
    return (contrast * (np.sqrt((x - 20) ** 2 + (y - 20) ** 2) <= radius)).astype(np.float32)


@pytest.mark.parametrize("sigma", [0.75, 1.25, 2.0])
def test_derivative_kernels_are_exact_on_polynomials_of_their_order(sigma: float) -> None:
    x = np.arange(-30, 31, dtype=np.float64)
    for order, polynomial, expected in (
        (0, 7.0 + 0 * x, 7.0),
        (1, 3.0 * x + 7.0, 3.0),
        (2, x**2, 2.0),
    ):
        kernel = gaussian_derivative_kernel(sigma, order)
        assert len(kernel) % 2 == 1
        assert np.isclose(ndimage.correlate1d(polynomial, kernel)[30], expected, atol=1e-12)
    assert abs(gaussian_derivative_kernel(sigma, 2).sum()) < 1e-15
    with pytest.raises(ValueError, match="order must be 0, 1 or 2, got 3"):
        gaussian_derivative_kernel(sigma, 3)


def test_closed_form_eigenvalues_equal_numpys_in_ascending_order() -> None:
    rng = np.random.default_rng(0)
    volume = ndimage.gaussian_filter(rng.standard_normal((24, 20, 16)), 1.5).astype(np.float32)
    lowest, middle, highest = hessian_eigenvalues(volume, 1.2)
    derivatives = {}
    for a in range(3):
        for b in range(3):
            result = volume
            for axis in range(3):
                order = (a == axis) + (b == axis)
                kernel = gaussian_derivative_kernel(1.2, order)
                result = ndimage.correlate1d(result, kernel, axis=axis, mode="nearest")
            derivatives[a, b] = result
    matrices = np.stack(
        [np.stack([derivatives[a, b] for b in range(3)], -1) for a in range(3)], -2
    ).astype(np.float64)
    expected = np.linalg.eigvalsh(matrices)
    scale = np.abs(expected).max()
    for k, got in enumerate((lowest, middle, highest)):
        assert got.dtype == np.float32 and got.shape == volume.shape
        assert np.abs(got - expected[..., k]).max() < 1e-4 * scale
    assert np.all(lowest <= middle + 1e-6 * scale) and np.all(middle <= highest + 1e-6 * scale)


def test_a_multiple_of_the_identity_has_three_equal_eigenvalues() -> None:
    # A constant second derivative along each axis: H = 2 I everywhere inside.
    x, y, z = _grid()
    volume = ((x - 20) ** 2 + (y - 20) ** 2 + (z - 20) ** 2).astype(np.float32)
    lowest, middle, highest = hessian_eigenvalues(volume, 1.0)
    inside = (slice(10, 30),) * 3
    for values in (lowest, middle, highest):
        assert np.allclose(values[inside], 2.0, atol=1e-3)


def test_a_blob_responds_and_a_tube_of_the_same_radius_does_not() -> None:
    sigmas = [1.0, 1.7, 2.8]
    blob = dot_enhancement(_sphere(3.0), sigmas)
    tube = dot_enhancement(_tube(3.0), sigmas)
    peak = float(blob.max())
    assert blob[CENTRE] == peak
    assert 10.0 < peak < 100.0  # a share of the 100 HU contrast
    assert float(tube.max()) < 0.02 * peak
    # A dark blob (e.g. air in tissue) and a flat region give nothing.
    assert float(dot_enhancement(-_sphere(3.0), sigmas).max()) == 0.0
    # (float32 rounding aside: a sampled kernel would give about 0.03 here)
    assert float(dot_enhancement(np.full(SHAPE, 50.0, np.float32), sigmas).max()) < 1e-9


def test_the_response_is_linear_in_contrast_and_peaks_near_the_matching_scale() -> None:
    sigmas = [1.0, 1.7, 2.8]
    faint = dot_enhancement(_sphere(3.0, contrast=20.0), sigmas)
    strong = dot_enhancement(_sphere(3.0, contrast=100.0), sigmas)
    assert np.allclose(strong, 5.0 * faint, rtol=1e-4, atol=1e-4)
    # A radius-3 sphere responds most at the scale nearest 3 / sqrt(3) = 1.7.
    single = {s: float(dot_enhancement(_sphere(3.0), [s])[CENTRE]) for s in sigmas}
    assert max(single, key=lambda s: single[s]) == 1.7


def test_bad_volumes_and_scales_are_refused() -> None:
    with pytest.raises(ValueError, match=r"expected a 3-D volume, got shape \(4, 4\)"):
        hessian_eigenvalues(np.zeros((4, 4)), 1.0)
    with pytest.raises(ValueError, match="sigma must be positive"):
        hessian_eigenvalues(np.zeros((4, 4, 4)), 0.0)
    with pytest.raises(ValueError, match="give at least one scale"):
        dot_enhancement(np.zeros((4, 4, 4)), [])
    with pytest.raises(ValueError, match="sigmas_mm must be positive and not empty"):
        DotEnhancementd("image", [], unit=1.0, ceiling=1.0)
    with pytest.raises(ValueError, match="unit and ceiling must be positive"):
        DotEnhancementd("image", [1.0], unit=0.0, ceiling=1.0)
    with pytest.raises(ValueError, match=r"expected a \(channels, X, Y, Z\) image"):
        DotEnhancementd("image", [1.0], unit=1.0, ceiling=1.0)({"image": torch.zeros(4, 4, 4)})


def test_the_transform_appends_the_scaled_clipped_filter_in_millimetres() -> None:
    volume = _sphere(3.0)
    affine = torch.diag(torch.tensor([2.0, 2.0, 2.0, 1.0], dtype=torch.float64))
    image = MetaTensor(torch.from_numpy(volume)[None], affine=affine, meta={"key": "kept"})
    image.push_applied_operation({"class": "Step"})
    out = DotEnhancementd("image", [2.0, 3.4], unit=10.0, ceiling=2.0)({"image": image})["image"]
    assert isinstance(out, MetaTensor) and tuple(out.shape) == (2, *SHAPE)
    assert torch.equal(out[0], image[0])
    assert torch.equal(out.affine, affine) and out.meta["key"] == "kept"
    assert len(out.applied_operations) == 1  # no spatial step of its own to undo
    # 2 and 3.4 mm at 2 mm voxels are 1 and 1.7 voxels.
    expected = np.clip(dot_enhancement(volume, [1.0, 1.7]) / 10.0, 0.0, 2.0)
    assert np.allclose(out[1].numpy(), expected, atol=1e-6)
    assert float(out[1].max()) == 2.0  # clipped
    # A plain tensor counts 1 mm voxels.
    plain = DotEnhancementd("image", [1.0], unit=1.0, ceiling=1e6)(
        {"image": torch.tensor(volume)[None]}
    )
    assert np.allclose(plain["image"][1].numpy(), dot_enhancement(volume, [1.0]), atol=1e-5)
