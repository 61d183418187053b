"""Tests of the lesion-fading augmentation (field-of-view normalisation: the fundus tests)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
from monai.data.meta_tensor import MetaTensor

from medvision.transforms.enhancement import dot_enhancement
from medvision.transforms.intensity import (
    RandLesionContrastd,
    fade_lesion,
    lesion_surroundings,
)

BACKGROUND = 0.1
LESION = 0.7
RESPONSE = 2.0


def _cube_image() -> tuple[np.ndarray, np.ndarray]:
    """A flat image with a bright 6-voxel cube (intensity and response channels) and its mask."""
    image = np.full((2, 24, 24, 24), BACKGROUND, dtype=np.float32)
    mask = np.zeros((24, 24, 24), dtype=bool)
    mask[9:15, 9:15, 9:15] = True
    image[0][mask] = LESION
    image[1][mask] = RESPONSE
    return image, mask


@pytest.mark.parametrize("factor", [0.0, 0.25, 0.5])
def test_fading_scales_the_lesions_contrast_and_response_and_leaves_the_rest(
    factor: float,
) -> None:
    image, mask = _cube_image()
    faded = fade_lesion(image, mask, factor)
    assert faded[0, 12, 12, 12] == pytest.approx(BACKGROUND + factor * (LESION - BACKGROUND))
    assert faded[1, 12, 12, 12] == pytest.approx(factor * RESPONSE)
    # Far from the lesion nothing changes; near it the values stay between
    # the surroundings and the original.
    np.testing.assert_array_equal(faded[:, :4], image[:, :4])
    assert np.all(faded[0] >= BACKGROUND - 1e-6) and np.all(faded[0] <= image[0] + 1e-6)
    assert np.all(faded[1] <= image[1] + 1e-6)
    np.testing.assert_array_equal(fade_lesion(image, mask, 1.0), image)


def test_the_surroundings_skip_the_edge_voxel_and_reach_three_voxels_out() -> None:
    _, mask = _cube_image()  # the cube fills 9..14 on each axis
    surround = lesion_surroundings(mask)
    along = [bool(surround[i, 12, 12]) for i in range(14, 19)]
    assert along == [False, False, True, True, False]  # inside, edge, 2 and 3 out, 4 out
    assert not (surround & mask).any()


def test_fading_leaves_voxels_darker_than_the_surroundings() -> None:
    image, mask = _cube_image()
    image[0, 12, 12, 12] = 0.0  # an air pocket inside the lesion
    faded = fade_lesion(image, mask, 0.5)
    assert faded[0, 12, 12, 12] == 0.0
    assert faded[0, 11, 11, 11] == pytest.approx(0.4)


def test_a_faded_blob_filters_as_the_scaled_response() -> None:
    # Why the response channel is scaled, not filtered again: the dot filter of the
    # faded image equals the scaled filter at the blob (within 1 %).
    x, y, z = np.meshgrid(*(np.arange(32, dtype=np.float32),) * 3, indexing="ij")
    distance = np.sqrt((x - 16) ** 2 + (y - 16) ** 2 + (z - 16) ** 2)
    mask = distance <= 3.0
    intensity = np.where(mask, 0.7, 0.1).astype(np.float32)
    scales = [(1.5, 1.5, 1.5)]
    image = np.stack([intensity, dot_enhancement(intensity, scales)])
    faded = fade_lesion(image, mask, 0.4)
    refiltered = dot_enhancement(faded[0], scales)
    assert faded[1, 16, 16, 16] == pytest.approx(refiltered[16, 16, 16], rel=0.01)
    assert faded[1, 16, 16, 16] == pytest.approx(0.4 * image[1, 16, 16, 16])


def test_fading_refuses_a_mask_that_does_not_fit_or_a_factor_outside_0_1() -> None:
    image, mask = _cube_image()
    with pytest.raises(ValueError, match="does not fit image"):
        fade_lesion(image, mask[:-1], 0.5)
    with pytest.raises(ValueError, match=r"factor must be in \[0, 1\], got 1.5"):
        fade_lesion(image, mask, 1.5)
    whole = np.ones(mask.shape, dtype=bool)  # nothing around it to fade towards
    np.testing.assert_array_equal(fade_lesion(image, whole, 0.5), image)
    np.testing.assert_array_equal(fade_lesion(image, ~whole, 0.5), image)


def _item() -> dict[str, Any]:
    image, mask = _cube_image()
    affine = torch.diag(torch.tensor([2.0, 2.0, 2.0, 1.0], dtype=torch.float64))
    return {
        "image": MetaTensor(torch.as_tensor(image), affine=affine),
        "label": torch.as_tensor(mask[None].astype(np.float32)),
    }


def test_the_transform_fades_with_a_factor_drawn_in_its_range_and_repeats_by_seed() -> None:
    fade = RandLesionContrastd("image", "label", (0.3, 0.6), prob=1.0)
    fade.set_random_state(seed=7)
    first = fade(_item())
    factor = fade.factor
    assert 0.3 <= factor <= 0.6
    image = first["image"]
    assert isinstance(image, MetaTensor)
    assert torch.equal(image.affine, _item()["image"].affine)
    assert float(image[1, 12, 12, 12]) == pytest.approx(factor * RESPONSE, rel=1e-5)
    assert torch.equal(first["label"], _item()["label"])  # the lesion is still there
    fade.set_random_state(seed=7)
    assert torch.equal(fade(_item())["image"], image)


def test_the_transform_leaves_items_without_a_lesion_or_not_drawn() -> None:
    never = RandLesionContrastd("image", "label", (0.3, 0.6), prob=0.0)
    item = _item()
    assert torch.equal(never(item)["image"], item["image"])
    always = RandLesionContrastd("image", "label", (0.3, 0.6), prob=1.0)
    empty = {**item, "label": torch.zeros_like(item["label"])}
    assert torch.equal(always(empty)["image"], item["image"])


@pytest.mark.parametrize("factors", [(0.6, 0.3), (-0.1, 0.5), (0.5, 1.1)])
def test_the_transform_refuses_a_range_outside_0_1_or_reversed(
    factors: tuple[float, float],
) -> None:
    with pytest.raises(ValueError, match="factors must satisfy 0 <= low <= high <= 1"):
        RandLesionContrastd("image", "label", factors)
