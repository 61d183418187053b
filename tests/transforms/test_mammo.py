from pathlib import Path

import numpy as np
import pytest
import torch
from monai.data.dataloader import DataLoader
from monai.data.dataset import Dataset
from monai.data.utils import list_data_collate
from scipy import ndimage

from medvision.modality import Modality
from medvision.transforms import mammo
from medvision.transforms.chain import MapKind, to_original_grid
from medvision.transforms.loading import LoadStudyd, study_item
from medvision.transforms.spatial import FLIPPED, ForegroundSelector
from tests.transforms.phantoms import (
    MakeStudy,
    device_models,
    dice,
    ground_truth_masks,
    pearson,
)


def _chest_wall_side(image: np.ndarray) -> str:
    """Return the side (of the image) where the breast is widest: the chest wall."""
    quarter = image.shape[-1] // 4
    return "left" if image[..., :quarter].mean() > image[..., -quarter:].mean() else "right"


@pytest.mark.parametrize("model", device_models(Modality.MAMMO))
def test_chain_gives_four_views_of_256_by_192_in_unit_range_on_every_device(
    phantom_on_device: MakeStudy, model: str
) -> None:
    manifest, row = phantom_on_device(Modality.MAMMO, model)
    views = mammo.build_transforms(False)(study_item(row, manifest))
    assert isinstance(views, list)
    order = [(v["image"].meta["laterality"], v["image"].meta["view_position"]) for v in views]
    assert order == list(mammo.VIEWS)
    for view in views:
        image = view["image"]
        assert tuple(image.shape) == (mammo.CHANNELS, *mammo.INPUT_SIZE) == (1, 256, 192)
        assert image.dtype == torch.float32
        assert float(image.min()) == 0.0
        assert float(image.max()) == pytest.approx(1.0, abs=1e-3)


def test_right_breast_views_are_flipped_so_the_chest_wall_is_on_the_left(
    phantom_on_device: MakeStudy,
) -> None:
    manifest, row = phantom_on_device(Modality.MAMMO, "Aquila Mammo S")
    item = study_item(row, manifest)
    loaded = LoadStudyd(Modality.MAMMO)(item)
    views = mammo.build_transforms(False)(item)
    assert isinstance(loaded, list) and isinstance(views, list)
    before = [_chest_wall_side(v["image"].numpy()) for v in loaded]
    after = [_chest_wall_side(v["image"].numpy()) for v in views]
    assert before == ["right", "left", "right", "left"]  # R-CC, L-CC, R-MLO, L-MLO
    assert after == ["left"] * 4
    assert [v["image"].meta[FLIPPED] for v in views] == [True, False, True, False]


def test_monochrome1_and_monochrome2_acquisitions_of_one_phantom_correlate(
    phantom_on_device: MakeStudy,
) -> None:
    chain = mammo.build_transforms(False)
    studies = {}
    for model in ("Delphin MG-1", "Aquila Mammo S"):
        manifest, row = phantom_on_device(Modality.MAMMO, model)
        views = chain(study_item(row, manifest))
        studies[views[0]["image"].meta["photometric_interpretation"]] = [
            v["image"].numpy() for v in views
        ]
    assert set(studies) == {"MONOCHROME1", "MONOCHROME2"}
    for first, second in zip(studies["MONOCHROME1"], studies["MONOCHROME2"], strict=True):
        assert pearson(first, second) > 0.95


def test_a_breast_mask_maps_back_onto_each_original_view(
    phantom_on_device: MakeStudy, tmp_path: Path
) -> None:
    manifest, row = phantom_on_device(Modality.MAMMO, "Borealis Tomo 2")
    item = study_item(row, manifest)
    loaded = LoadStudyd(Modality.MAMMO)(item)
    assert isinstance(loaded, list)
    # A large mask, on one side of each view: the breast.
    masks = {
        f"{v['image'].meta['sop_instance_uids'][0]}__breast": ForegroundSelector(0.1).mask(
            v["image"]
        )
        for v in loaded
    }
    arrays = {key: mask.astype(np.uint8) for key, mask in masks.items()}
    np.savez(tmp_path / "masks.npz", **arrays)  # type: ignore[arg-type]
    chain = mammo.build_transforms(False, mask_key="label", mask_names=["breast"])
    views = chain(item | {"masks": tmp_path / "masks.npz"})
    for view in views:
        back = to_original_grid(view["label"], view, chain, MapKind.LABEL)
        truth = masks[f"{view['image'].meta['sop_instance_uids'][0]}__breast"]
        assert back.shape == (1, 512, 384)
        assert dice(truth, back[0] > 0.5) > 0.95
        assert dice(truth[:, ::-1], back[0] > 0.5) < 0.5  # a flip not undone would show


def test_lesions_map_back_to_where_they_were(phantom_on_device: MakeStudy) -> None:
    study = manifest, row = phantom_on_device(Modality.MAMMO, "Aquila Mammo S")
    chain = mammo.build_transforms(False, mask_key="label")
    truth = ground_truth_masks(study)
    checked = 0
    for view in chain(study_item(row, manifest)):
        uid = view["image"].meta["sop_instance_uids"][0]
        back = to_original_grid(view["label"], view, chain, MapKind.CONTINUOUS)
        for channel, name in enumerate(mammo.MASK_NAMES):
            lesion = truth[f"{uid}__{name}"] > 0
            if lesion.any():
                mapped = back[channel] > 0.5
                distance = np.subtract(
                    ndimage.center_of_mass(lesion), ndimage.center_of_mass(mapped)
                )
                assert float(np.hypot(*distance)) < 2.0
                assert dice(lesion, mapped) > 0.7
                checked += 1
    assert checked >= 2  # the malignancy shows in both views of its breast


def test_a_study_collates_into_a_batch_of_four_views(phantom_on_device: MakeStudy) -> None:
    manifest, row = phantom_on_device(Modality.MAMMO, "Delphin MG-1")
    dataset = Dataset([study_item(row, manifest)], transform=mammo.build_transforms(False))
    batch = next(iter(DataLoader(dataset, batch_size=1, collate_fn=list_data_collate)))
    assert tuple(batch["image"].shape) == (4, 1, 256, 192)
    assert batch["image"].meta["laterality"] == ["R", "L", "R", "L"]
    assert batch["image"].meta["view_position"] == ["CC", "CC", "MLO", "MLO"]


def test_training_patches_hold_the_lesion_at_varying_places_and_stay_in_the_breast(
    phantom_on_device: MakeStudy,
) -> None:
    manifest, row = phantom_on_device(Modality.MAMMO, "Aquila Mammo S")
    chain = mammo.MammoTransforms(
        input_size=(512, 384), patch_size=(96, 96), patches_per_view=8, positive_fraction=1.0
    ).build(True, mask_key="label", mask_names=("malignancy",))
    chain.set_random_state(seed=0)
    views = chain(study_item(row, manifest))
    assert isinstance(views, list) and len(views) == 4
    with_lesion = [v for v in views if isinstance(v, list) and v[0]["label"].any()]
    assert len(with_lesion) == 2  # both views of the malignant breast
    for patches in views:
        assert len(patches) == 8
        for patch in patches:
            assert tuple(patch["image"].shape) == tuple(patch["label"].shape) == (1, 96, 96)
    centres = []
    for patches in with_lesion:
        for patch in patches:
            mask = np.asarray(patch["label"][0]) > 0.5
            assert mask.any()  # every patch of a lesion view holds lesion pixels
            centres.append(ndimage.center_of_mass(mask))
    assert np.ptp(np.array(centres), axis=0).min() >= 8.0  # not always in the middle


def test_patches_of_views_without_a_lesion_are_cut_from_the_breast(
    phantom_on_device: MakeStudy,
) -> None:
    manifest, row = phantom_on_device(Modality.MAMMO, "Aquila Mammo S")
    chain = mammo.MammoTransforms(
        input_size=(512, 384), patch_size=(64, 64), patches_per_view=6
    ).build(True, mask_key="label", mask_names=("malignancy",))
    chain.set_random_state(seed=1)
    views = chain(study_item(row, manifest))
    without = [p for v in views for p in v if not p["label"].any()]
    assert without
    # The patch centre lies in the breast (never in the air or padding around it).
    assert all(float(p["image"][0, 32, 32]) > 0.05 for p in without)


def test_a_patch_larger_than_the_input_is_refused() -> None:
    with pytest.raises(ValueError, match=r"no larger than the input size \(256, 192\)"):
        mammo.MammoTransforms(patch_size=(300, 100))
