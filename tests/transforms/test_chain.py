import itertools
import json
from collections.abc import Hashable

import numpy as np
import pytest
import torch
from monai.transforms.compose import Compose
from monai.transforms.croppad.dictionary import RandCropByPosNegLabeld
from monai.transforms.utils import map_binary_to_indices

from medvision.modality import Modality
from medvision.transforms import (
    CHAINS,
    chain_from_description,
    default_chain,
    to_original_grid,
)
from medvision.transforms.chain import FirstChannelsd, RandCropByLesiond, patch_symmetries
from medvision.transforms.crop_centres import lesion_balanced_indices, with_hard_negatives
from medvision.transforms.ct import CtTransforms, CtWindow
from medvision.transforms.cxr import CxrTransforms
from medvision.transforms.loading import study_item
from tests.transforms.phantoms import MakeStudy


@pytest.mark.parametrize("modality", list(Modality))
def test_every_chain_describes_itself_as_json_and_is_rebuilt_from_it(modality: Modality) -> None:
    chain = default_chain(modality)
    text = json.dumps(chain.describe())
    description = json.loads(text)
    assert description["name"] == modality.value
    assert description["version"] == 1
    assert chain_from_description(description) == chain


def test_changed_parameters_survive_the_description() -> None:
    chain = CtTransforms(window=CtWindow.MEDIASTINUM, spacing_mm=(1.0, 1.0, 1.5))
    description = json.loads(json.dumps(chain.describe()))
    assert description["parameters"]["window"] == "mediastinum"
    assert description["parameters"]["spacing_mm"] == [1.0, 1.0, 1.5]
    assert chain_from_description(description) == chain


def test_description_of_another_chain_version_is_refused() -> None:
    description = CxrTransforms().describe() | {"version": 0}
    with pytest.raises(ValueError, match="version 1 in this code, the description has version 0"):
        chain_from_description(description)


def test_description_with_an_unknown_parameter_is_refused() -> None:
    description = CxrTransforms().describe()
    description["parameters"]["input_sise"] = [224, 224]
    with pytest.raises(ValueError, match=r"cxr chain has no parameter.*input_sise"):
        chain_from_description(description)


def test_ct_window_accepts_its_name_and_suggests_a_near_miss() -> None:
    assert CtTransforms(window="lung").window is CtWindow.LUNG  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="Did you mean 'lung_nodule'"):
        CtTransforms(window="lung_nodul")  # type: ignore[arg-type]


def test_nonpositive_sizes_are_refused() -> None:
    with pytest.raises(ValueError, match=r"input_size must be positive, got \(0, 256\)"):
        CxrTransforms(input_size=(0, 256))


def test_chains_are_registered_under_their_modality() -> None:
    assert sorted(CHAINS) == sorted(m.value for m in Modality)


@pytest.mark.parametrize(
    ("modality", "model"),
    [
        (Modality.CXR, "Borealis Flat 4"),
        (Modality.FUNDUS, "Cygnus Handheld"),
        (Modality.MAMMO, "Delphin MG-1"),
    ],
)
def test_training_chains_keep_the_input_size_and_binary_masks(
    phantom_on_device: MakeStudy, modality: Modality, model: str
) -> None:
    manifest, row = phantom_on_device(modality, model)
    chain = default_chain(modality)
    transforms = chain.build(True, mask_key="label")
    transforms.set_random_state(seed=1)
    output = transforms(study_item(row, manifest))
    items = output if isinstance(output, list) else [output]
    size = chain.describe()["parameters"]["input_size"]
    for item in items:
        assert tuple(item["image"].shape[1:]) == tuple(size)
        assert tuple(item["label"].shape) == (len(chain.mask_names), *size)
        assert bool(torch.isfinite(item["image"]).all())
        assert set(torch.unique(item["label"]).tolist()) <= {0.0, 1.0}


def test_a_map_of_another_shape_is_refused(phantom_on_device: MakeStudy) -> None:
    manifest, row = phantom_on_device(Modality.CXR, "Aquila DR-9")
    chain = CxrTransforms().build(False)
    item = chain(study_item(row, manifest))
    with pytest.raises(ValueError, match=r"does not fit the image's \(256, 256\)"):
        to_original_grid(torch.zeros(1, 128, 128), item, chain)


@pytest.mark.parametrize(
    ("shape", "count"), [((5, 5), 8), ((4, 6), 4), ((4, 4, 3), 16), ((4, 5, 3), 8)]
)
def test_patch_symmetries_give_each_symmetry_of_the_patch_and_move_its_mask_along(
    shape: tuple[int, ...], count: int
) -> None:
    """Flips along every axis; quarter turns in the first plane where it is square."""
    image = np.arange(np.prod(shape), dtype=np.float32).reshape(1, *shape)
    axes = range(1, image.ndim)
    flips = [
        np.flip(image, flipped) if flipped else image
        for n in range(len(shape) + 1)
        for flipped in itertools.combinations(axes, n)
    ]
    turns = [np.rot90(f, k, axes=(1, 2)) for f in flips for k in range(4)]
    allowed = {t.tobytes() for t in (turns if shape[0] == shape[1] else flips)}
    assert len(allowed) == count
    steps = Compose(patch_symmetries(["image", "label"], shape))
    steps.set_random_state(seed=0)
    seen: dict[bytes, int] = {}
    draws = 40 * count
    for _ in range(draws):
        out = steps({"image": torch.tensor(image), "label": torch.tensor(2 * image)})
        result = np.ascontiguousarray(np.asarray(out["image"]))
        assert np.array_equal(np.asarray(out["label"]), 2 * result)
        seen[result.tobytes()] = seen.get(result.tobytes(), 0) + 1
    assert set(seen) == allowed
    assert min(seen.values()) >= draws / count / 2  # each about equally often


def _two_lesions() -> np.ndarray:
    """A 1 x 40 x 40 mask: one voxel at (5, 5), a 10 x 10 square at rows and columns 20-29."""
    mask = np.zeros((1, 40, 40), dtype=np.float32)
    mask[0, 5, 5] = 1.0
    mask[0, 20:30, 20:30] = 1.0
    return mask


def test_lesion_balanced_indices_repeat_each_lesion_up_to_the_largest() -> None:
    mask = _two_lesions()
    foreground = np.flatnonzero(mask[0].ravel())
    balanced = lesion_balanced_indices(mask, foreground)
    small = 5 * 40 + 5
    assert len(balanced) == 200
    assert np.sum(balanced == small) == 100
    assert sorted(set(balanced.tolist()) - {small}) == sorted(set(foreground.tolist()) - {small})
    assert all(np.sum(balanced == index) == 1 for index in foreground if index != small)
    single = np.zeros((1, 8, 8), dtype=np.float32)
    single[0, 2:4, 2:4] = 1.0
    only = np.flatnonzero(single[0].ravel())
    assert lesion_balanced_indices(single, only).tolist() == only.tolist()


def test_lesion_balanced_indices_keep_to_the_foreground_they_are_given() -> None:
    # A two-channel mask: MONAI's foreground leaves the first (background) channel out.
    mask = np.concatenate([np.zeros((1, 40, 40), dtype=np.float32), _two_lesions()])
    mask[0, 35:38, 35:38] = 1.0
    foreground, _ = map_binary_to_indices(torch.as_tensor(mask))
    balanced = lesion_balanced_indices(mask, foreground)
    assert set(balanced.tolist()) == set(np.asarray(foreground).tolist())
    assert len(balanced) == 200


def _small_lesion_crops(cropper: type[RandCropByPosNegLabeld]) -> int:
    """Crops (of 200, all around a lesion) that hold the one-voxel lesion."""
    mask = _two_lesions()
    transform = cropper(
        ["image", "mask"], label_key="mask", spatial_size=(6, 6), pos=1.0, neg=0.0, num_samples=200
    )
    transform.set_random_state(seed=0)
    crops = transform({"image": torch.as_tensor(mask), "mask": torch.as_tensor(mask)})
    # A crop around the large square holds at least 9 of its voxels.
    return sum(int(crop["mask"].sum()) == 1 for crop in crops)


def test_hard_negatives_take_their_share_of_the_background() -> None:
    background, hard = np.arange(300), np.array([1000, 1001])
    mixed = with_hard_negatives(background, hard, 0.25)
    assert len(mixed) == 400  # 300 plain and 100 hard: a quarter
    assert np.isin(mixed, hard).sum() == 100
    assert np.sum(mixed == 1000) == np.sum(mixed == 1001) == 50
    assert mixed[:300].tolist() == background.tolist()
    assert with_hard_negatives(background, hard, 0.0).tolist() == background.tolist()
    assert with_hard_negatives(background, np.array([], dtype=int), 0.5).tolist() == (
        background.tolist()
    )
    assert with_hard_negatives(background, hard, 1.0).tolist() == hard.tolist()
    assert with_hard_negatives(torch.arange(3), hard, 0.5).tolist() == [0, 1, 2, 1000, 1001, 1000]


def _hard_negative_crops(share: float) -> list[dict[Hashable, torch.Tensor]]:
    """200 crops without a lesion of an image whose second mask channel marks one spot."""
    lesion = _two_lesions()
    hard = np.zeros_like(lesion)
    hard[0, 35, 4] = 1.0  # a hard negative far from both lesions
    hard[0, 25, 25] = 1.0  # marked on a lesion too: never a negative centre
    mask = torch.as_tensor(np.concatenate([lesion, hard]))
    transform = RandCropByLesiond(
        ["image", "mask"],
        label_key="mask",
        spatial_size=(5, 5),
        pos=0.0,
        neg=1.0,
        num_samples=200,
        hard_negative_share=share,
    )
    transform.set_random_state(seed=0)
    return transform({"image": torch.ones(1, 40, 40), "mask": mask})


@pytest.mark.parametrize(("share", "low", "high"), [(0.0, 0, 5), (0.5, 80, 120), (1.0, 200, 200)])
def test_hard_negative_crops_are_centred_on_the_marked_voxels_by_their_share(
    share: float, low: int, high: int
) -> None:
    crops = _hard_negative_crops(share)
    # A 5 x 5 crop centred on the spot holds it; one centred elsewhere rarely does.
    holding = sum(bool(crop["mask"][1, 2, 2] > 0) for crop in crops)
    assert low <= holding <= high
    assert all(float(crop["mask"][0, 2, 2]) == 0.0 for crop in crops)  # no lesion centre


def test_the_helper_channel_is_dropped_and_the_rest_kept() -> None:
    mask = torch.arange(3 * 4 * 4, dtype=torch.float32).reshape(3, 4, 4)
    item = FirstChannelsd("mask", 1)({"mask": mask, "image": mask})
    assert torch.equal(item["mask"], mask[:1]) and torch.equal(item["image"], mask)
    with pytest.raises(ValueError, match="count must be at least 1"):
        FirstChannelsd("mask", 0)


def test_lesion_balanced_crops_find_the_small_lesion_as_often_as_the_large_one() -> None:
    # Voxel-uniform: 1 of 101 mask voxels is the small lesion's; lesion-balanced: 1 of 2 lesions.
    plain = _small_lesion_crops(RandCropByPosNegLabeld)
    balanced = _small_lesion_crops(RandCropByLesiond)
    assert plain < 10
    assert 70 < balanced < 130
