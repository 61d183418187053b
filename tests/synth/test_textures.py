"""Behaviour of the array helpers shared by the phantoms (``medvision.synth.textures``)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from medvision.synth.textures import (
    bounding_box,
    centred_origin,
    gaussian_blur,
    mirror_box,
    overlap,
    paste,
    patch_offsets,
    smoothstep,
    soft_ellipse,
    soft_inside,
    stroke_coverage,
    union,
)


def test_gaussian_blur_takes_one_sigma_per_axis_and_zero_leaves_an_axis_alone() -> None:
    volume = np.zeros((9, 21, 21), dtype=np.float32)
    volume[4, 10, 10] = 1.0
    blurred = gaussian_blur(volume, [0.0, 2.0, 1.0], truncate=3.0)
    expected = ndimage.gaussian_filter(volume, [0.0, 2.0, 1.0], truncate=3.0)
    np.testing.assert_allclose(blurred, expected)
    assert blurred.dtype == np.float32
    assert np.count_nonzero(blurred[[3, 5]]) == 0  # no spread across slices
    spread = (blurred > 1e-4).sum(axis=(0, 1)), (blurred > 1e-4).sum(axis=(0, 2))
    assert np.count_nonzero(spread[1]) > np.count_nonzero(spread[0])  # rows blurred more


def test_gaussian_blur_with_one_sigma_leaves_the_colour_axis_alone() -> None:
    image = np.zeros((15, 15, 3), dtype=np.float32)
    image[7, 7] = [1.0, 0.0, 0.0]
    blurred = gaussian_blur(image, 1.5)
    assert blurred[..., 1:].max() == 0.0
    assert blurred[..., 0].sum() == pytest.approx(1.0, abs=1e-3)
    assert gaussian_blur(image, 0.0) is image


def test_gaussian_blur_rejects_a_sigma_list_of_the_wrong_length() -> None:
    with pytest.raises(ValueError, match="2 sigmas"):
        gaussian_blur(np.zeros((4, 4, 4), dtype=np.float32), [1.0, 1.0])


def test_soft_inside_and_smoothstep_run_from_zero_to_one() -> None:
    inside = soft_inside(np.array([-10.0, 0.0, 10.0]), 1.0)
    np.testing.assert_allclose(inside, [1.0, 0.5, 0.0], atol=1e-4)
    step = smoothstep(np.array([0.0, 1.0, 2.0, 3.0, 4.0]), 1.0, 3.0)
    np.testing.assert_allclose(step, [0.0, 0.0, 0.5, 1.0, 1.0])


def test_soft_ellipse_is_half_on_its_boundary() -> None:
    ellipse = soft_ellipse((41, 41), (20.0, 20.0), (10.0, 15.0), edge=1.0)
    assert ellipse[20, 20] == pytest.approx(1.0, abs=1e-4)
    assert ellipse[30, 20] == pytest.approx(0.5)
    assert ellipse[20, 35] == pytest.approx(0.5)


def test_patch_offsets_keep_the_sub_pixel_centre() -> None:
    centre = (10.3, 4.6)
    assert centred_origin(centre, 2) == (8, 3)
    dr, dc = patch_offsets(centre, 2)
    assert dr.shape == dc.shape == (5, 5)
    assert dr[2, 2] == pytest.approx(-0.3)
    assert dc[2, 2] == pytest.approx(0.4)
    assert dr[0, 0] == pytest.approx(-2.3)


def test_paste_clips_to_the_field_and_adds_or_takes_the_maximum() -> None:
    field = np.ones((4, 5), dtype=np.float32)
    patch = np.full((3, 3), 2.0, dtype=np.float32)
    paste(field, patch, (-1, 3))
    assert field.sum() == 20 + 2 * 4
    np.testing.assert_array_equal(field[:2, 3:], 3.0)
    paste(field, patch, (2, 0), "max")
    np.testing.assert_array_equal(field[2:, :3], 2.0)
    before = field.copy()
    paste(field, patch, (4, 0))  # entirely below the field
    np.testing.assert_array_equal(field, before)
    assert overlap((4, 5), (3, 3), (-3, 0)) is None
    assert overlap((4, 5), (3, 3), (1, -1)) == (
        (slice(1, 4), slice(0, 2)),
        (slice(0, 3), slice(1, 3)),
    )


def test_union_covers_every_part_with_their_maximum() -> None:
    a = np.full((2, 2), 0.5, dtype=np.float32)
    b = np.full((3, 1), 1.0, dtype=np.float32)
    combined, origin = union([(a, (5, 5)), (b, (6, 6))])
    assert origin == (5, 5)
    expected = np.array([[0.5, 0.5], [0.5, 1.0], [0.0, 1.0], [0.0, 1.0]], dtype=np.float32)
    np.testing.assert_array_equal(combined, expected)


def test_stroke_coverage_covers_the_stroke_area_once() -> None:
    line = ([(10.0, 5.0), (10.0, 25.0)], 3.0, 1.0)
    coverage = stroke_coverage((21, 31), [line])
    # A 20 px long, 3 px wide stroke with round caps: 20 * 3 + pi * 1.5 ** 2.
    assert coverage.sum() == pytest.approx(60.0 + np.pi * 1.5**2, rel=0.05)
    assert coverage.max() == pytest.approx(1.0)
    assert bounding_box((coverage > 0.5).astype(np.uint8)) == [9, 4, 11, 26]
    per_point = (np.array(line[0]), np.array([3.0, 3.0]), 1.0)
    np.testing.assert_array_equal(stroke_coverage((21, 31), [per_point]), coverage)
    shifted = stroke_coverage((21, 31), [line], origin=(2.0, 3.0))
    np.testing.assert_array_equal(shifted[:-2, :-3], coverage[2:, 3:])
    half = stroke_coverage((21, 31), [(line[0], line[1], 0.5)])
    assert half.max() == pytest.approx(128 / 255)


def test_mirror_box_matches_the_box_of_the_flipped_mask() -> None:
    mask = np.zeros((6, 9), dtype=np.uint8)
    mask[1:4, 2:4] = 1
    box = bounding_box(mask)
    assert box is not None
    assert mirror_box(box, 9) == bounding_box(mask[:, ::-1])
    assert mirror_box(mirror_box(box, 9), 9) == box
