"""The patch-centre lists computed once per image equal what the croppers compute per call."""

from collections.abc import Hashable
from typing import Any

import numpy as np
import pytest
import torch
from monai.data.dataset import CacheDataset
from monai.transforms.compose import Compose
from monai.transforms.croppad.dictionary import RandCropByPosNegLabeld
from monai.transforms.utils import map_binary_to_indices

from medvision.transforms.chain import RandCropByLesiond, lesion_patches
from medvision.transforms.crop_centres import (
    BACKGROUND_INDICES_KEY,
    FOREGROUND_INDICES_KEY,
    CropCentreIndicesd,
    CyclicTail,
    MaskIndices,
    crop_centre_indices,
    lesion_balanced_indices,
    with_hard_negatives,
)


@pytest.mark.parametrize("shape", [(7,), (5, 9), (4, 6, 11), (3, 2, 17)])
@pytest.mark.parametrize("density", [0.0, 0.05, 0.5, 1.0])
def test_mask_indices_are_flatnonzero_position_by_position(
    shape: tuple[int, ...], density: float
) -> None:
    mask = np.random.default_rng(len(shape) + int(10 * density)).random(shape) < density
    expected = np.flatnonzero(mask)
    indices = MaskIndices(torch.as_tensor(mask))
    assert len(indices) == len(expected)
    assert [int(indices[k]) for k in range(len(indices))] == expected.tolist()
    assert np.asarray(indices).tolist() == expected.tolist()
    if len(expected):
        assert int(indices[-1]) == int(expected[-1])
    with pytest.raises(IndexError):
        indices[len(expected)]
    with pytest.raises(IndexError):
        indices[-len(expected) - 1]


def test_mask_indices_refuse_a_scalar() -> None:
    with pytest.raises(ValueError, match="at least one axis"):
        MaskIndices(np.array(True))


def test_a_cyclic_tail_is_the_head_then_the_tail_repeated() -> None:
    head, tail = np.array([4, 9, 12]), np.array([100, 200])
    mixed = CyclicTail(head, tail, 5)
    expected = [4, 9, 12, 100, 200, 100, 200, 100]
    assert len(mixed) == 8
    assert [int(mixed[k]) for k in range(8)] == expected
    assert np.asarray(mixed).tolist() == expected
    assert int(mixed[-1]) == 100
    with pytest.raises(IndexError):
        mixed[8]
    with pytest.raises(ValueError, match="at least one index"):
        CyclicTail(head, np.array([], dtype=np.int64), 3)


def _scan(seed: int, hard: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """A two-channel image and a mask: three lesions of different sizes, hard negatives."""
    rng = np.random.default_rng(seed)
    image = torch.as_tensor(rng.random((2, 20, 24, 16)).astype(np.float16))
    lesion = np.zeros((20, 24, 16), dtype=np.uint8)
    lesion[2:9, 3:10, 2:8] = 1  # large
    lesion[14, 18, 10] = 1  # one voxel
    lesion[12:14, 4:6, 12:14] = 1  # small
    channels = [lesion]
    if hard:
        marked = (rng.random(lesion.shape) < 0.01).astype(np.uint8)
        marked[5, 5, 5] = 1  # on a lesion: never a negative centre
        channels.append(marked)
    return image, torch.as_tensor(np.stack(channels))


@pytest.mark.parametrize("balance", [False, True])
@pytest.mark.parametrize("share", [0.0, 0.5, 1.0])
@pytest.mark.parametrize("threshold", [None, 0.7])
def test_the_lists_are_those_of_monai_balanced_and_mixed_as_configured(
    balance: bool, share: float, threshold: float | None
) -> None:
    image, mask = _scan(1, hard=True)
    chosen = None if threshold is None else image
    foreground, background = crop_centre_indices(
        mask, chosen, threshold or 0.0, balance_lesions=balance, hard_negative_share=share
    )
    # MONAI's lists of a boolean mask (of a uint8 mask without an image, MONAI's
    # background is every voxel, lesion included: ``~`` of uint8 is not a negation).
    monai_fg, monai_bg = map_binary_to_indices(mask[:1] > 0, chosen, threshold or 0.0)
    expected_fg = lesion_balanced_indices(mask[:1], monai_fg) if balance else np.asarray(monai_fg)
    hard = np.flatnonzero(((mask[1] > 0) & ~(mask[0] > 0)).numpy().ravel())
    expected_bg = with_hard_negatives(monai_bg, hard, share)
    assert np.asarray(foreground).tolist() == np.asarray(expected_fg).tolist()
    assert len(background) == len(expected_bg)
    assert np.asarray(background).tolist() == expected_bg.tolist()
    assert int(background[len(background) // 3]) == int(expected_bg[len(expected_bg) // 3])


def _centres(crops: list[dict[Hashable, Any]]) -> list[list[float]]:
    return [[float(v) for v in crop["label"].meta["crop_center"]] for crop in crops]


@pytest.mark.parametrize(
    ("cropper", "options"),
    [
        (RandCropByPosNegLabeld, {}),
        (RandCropByLesiond, {"balance_lesions": True}),
        (RandCropByLesiond, {"balance_lesions": True, "hard_negative_share": 0.5}),
        (RandCropByLesiond, {"balance_lesions": False, "hard_negative_share": 1.0}),
    ],
)
def test_a_cropper_given_the_lists_cuts_the_same_patches_as_one_computing_them(
    cropper: type[RandCropByPosNegLabeld], options: dict[str, Any]
) -> None:
    image, mask = _scan(2, hard="hard_negative_share" in options)
    common: dict[str, Any] = {
        "label_key": "label",
        "spatial_size": (6, 6, 6),
        "pos": 0.5,
        "neg": 0.5,
        "num_samples": 40,
        "image_key": "image",
        "image_threshold": 0.4,
    }
    computing = cropper(["image", "label"], **common, **options)
    given = cropper(
        ["image", "label"],
        **common,
        fg_indices_key=FOREGROUND_INDICES_KEY,
        bg_indices_key=BACKGROUND_INDICES_KEY,
        **options,
    )
    centres = CropCentreIndicesd(
        "label",
        "image",
        0.4,
        options.get("balance_lesions", False),
        options.get("hard_negative_share", 0.0),
    )
    computing.set_random_state(seed=7)
    given.set_random_state(seed=7)
    first = computing({"image": image, "label": mask})
    item = centres({"image": image, "label": mask})
    assert isinstance(item[BACKGROUND_INDICES_KEY], MaskIndices | CyclicTail | np.ndarray)
    second = given(item)
    assert len(first) == len(second) == 40
    for a, b in zip(first, second, strict=True):
        assert torch.equal(a["image"], b["image"]) and torch.equal(a["label"], b["label"])
        assert set(b) == {"image", "label"}  # the lists are not carried into the patches


def test_the_training_chain_caches_the_lists_and_cuts_the_same_patches() -> None:
    image, mask = _scan(3, hard=False)
    steps = lesion_patches(["image", "label"], (6, 6, 6), 0.67, 4, 0.3, balance_lesions=True)
    chain = Compose(steps)
    chain.set_random_state(seed=0)
    cached = CacheDataset([{"image": image, "label": mask}], chain, progress=False)
    held = cached._cache[0]
    assert isinstance(held, dict) and isinstance(held[BACKGROUND_INDICES_KEY], MaskIndices)
    patches = [patch for _ in range(5) for patch in cached[0]]
    # The same steps with a cropper that computes its lists on every call.
    again = Compose([step for step in steps if not isinstance(step, CropCentreIndicesd)])
    for step in again.transforms:
        if isinstance(step, RandCropByPosNegLabeld):
            step.fg_indices_key = step.bg_indices_key = "absent"
    again.set_random_state(seed=0)
    plain = [patch for _ in range(5) for patch in again({"image": image, "label": mask})]
    assert _centres(patches) == _centres(plain)
    for a, b in zip(patches, plain, strict=True):
        assert torch.equal(a["image"], b["image"]) and torch.equal(a["label"], b["label"])


def test_a_share_outside_zero_to_one_is_refused() -> None:
    with pytest.raises(ValueError, match="hard_negative_share"):
        CropCentreIndicesd("label", hard_negative_share=1.5)
