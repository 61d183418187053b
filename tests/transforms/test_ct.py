import json
from typing import Any

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.transforms.compose import Compose
from monai.transforms.transform import Randomizable
from scipy import ndimage

from medvision.data.manifest import resolve
from medvision.modality import Modality
from medvision.transforms import ct
from medvision.transforms.chain import MapKind, positive_region, to_original_grid
from medvision.transforms.crop_centres import CropCentreIndicesd
from medvision.transforms.loading import study_item
from tests.transforms.phantoms import MakeStudy, device_models, dice, ground_truth_masks


def _spacing(affine: torch.Tensor) -> list[float]:
    return [round(float(v), 6) for v in np.linalg.norm(affine.numpy()[:3, :3], axis=0)]


@pytest.mark.parametrize("model", device_models(Modality.CT))
def test_chain_gives_a_ras_volume_at_2_mm_in_unit_range_on_every_device(
    phantom_on_device: MakeStudy, model: str
) -> None:
    manifest, row = phantom_on_device(Modality.CT, model)
    item = ct.build_transforms(False)(study_item(row, manifest))
    image = item["image"]
    assert image.dtype == torch.float32
    assert nib.aff2axcodes(image.affine.numpy()) == ("R", "A", "S")
    assert _spacing(image.affine) == list(ct.SPACING_MM) == [2.0, 2.0, 2.0]
    assert float(image.min()) == 0.0 and float(image.max()) == 1.0
    # 160 pixels of 2.2-2.4 mm in-plane, about 160 mm of slices: extent / 2 mm voxels.
    rows, slices = image.meta["original_shape"][1], image.meta["original_shape"][0]
    pixel, thickness = image.meta["pixel_spacing"][0], _spacing(image.meta["original_affine"])[0]
    assert image.shape[0] == 1
    assert abs(image.shape[1] - rows * pixel / 2.0) <= 1
    assert abs(image.shape[2] - rows * pixel / 2.0) <= 1
    assert abs(image.shape[3] - slices * thickness / 2.0) <= 1


def test_nodule_mask_still_covers_each_nodule(phantom_on_device: MakeStudy) -> None:
    manifest, row = phantom_on_device(Modality.CT, "Aquila CT 128")
    item = ct.build_transforms(False, mask_key="label")(study_item(row, manifest))
    mask, image = item["label"][0].numpy(), item["image"][0].numpy()
    to_voxel = np.linalg.inv(item["label"].affine.numpy())
    nodules = json.loads(resolve(manifest, row.annotations or row.path).read_text())["nodules"]
    assert nodules
    for nodule in nodules:
        x, y, z = nodule["centre_mm_xyz"]  # LPS
        voxel = np.round(to_voxel @ np.array([-x, -y, z, 1.0]))[:3].astype(int)
        assert mask[tuple(voxel)] == 1.0
    lung = (image > 0.0) & (image < 0.15)  # about -1000 to -790 HU
    assert image[mask > 0].mean() > image[lung].mean() + 0.1


def _training_patches(phantom_on_device: MakeStudy, **options: Any) -> list[dict[str, Any]]:
    """Training patches of a phantom CT with a nodule, cut by a chain with ``options``."""
    manifest, row = phantom_on_device(Modality.CT, "Cygnus LD-16")
    chain = ct.CtTransforms(**options).build(True, mask_key="label")
    chain.set_random_state(seed=0)
    patches = chain(study_item(row, manifest))
    assert isinstance(patches, list)
    return patches


def _nodule_patches(phantom_on_device: MakeStudy, samples: int) -> list[dict[str, Any]]:
    """Training patches of a phantom CT, every one sampled around a nodule voxel."""
    return _training_patches(phantom_on_device, positive_fraction=1.0, samples_per_volume=samples)


def test_training_samples_patches_of_the_roi_size_around_the_nodule(
    phantom_on_device: MakeStudy,
) -> None:
    patches = _nodule_patches(phantom_on_device, 3)
    assert len(patches) == 3
    for patch in patches:
        assert tuple(patch["image"].shape) == (1, *ct.ROI_SIZE) == (1, 32, 32, 32)
        assert float(patch["label"].sum()) > 0


def test_with_the_dot_filter_patches_carry_it_as_a_second_channel_lit_at_the_nodule(
    phantom_on_device: MakeStudy,
) -> None:
    patches = _training_patches(
        phantom_on_device, positive_fraction=1.0, samples_per_volume=3, dot_enhancement=True
    )
    for patch in patches:
        assert tuple(patch["image"].shape) == (2, *ct.ROI_SIZE)
        nodule = np.asarray(patch["label"][0]) > 0.5
        dot = np.asarray(patch["image"][1])
        # The nodule is among the brightest blobs of its patch.
        assert float(dot[nodule].max()) > float(np.percentile(dot, 99))


def test_training_holds_the_scan_in_half_precision_until_the_patches_are_cut(
    phantom_on_device: MakeStudy,
) -> None:
    manifest, row = phantom_on_device(Modality.CT, "Aquila CT 128")
    chain = ct.CtTransforms(dot_enhancement=True).build(True, mask_key="label")
    first_random = next(
        i for i, step in enumerate(chain.transforms) if isinstance(step, Randomizable)
    )
    # What a CacheDataset keeps: the steps before the first random one.
    held = Compose(chain.transforms[:first_random])(study_item(row, manifest))
    full = ct.CtTransforms(dot_enhancement=True).build(False, mask_key="label")(
        study_item(row, manifest)
    )
    assert (held["image"].dtype, held["label"].dtype) == ct.CACHED_DTYPES
    assert held["image"].dtype == torch.float16 and held["label"].dtype == torch.uint8
    # Two bytes a channel and one for the mask, instead of four each.
    voxels = full["label"].numel()
    assert held["image"].nbytes + held["label"].nbytes == 5 * voxels
    assert full["image"].nbytes + full["label"].nbytes == 12 * voxels
    # The same values, rounded to half precision; the binary mask exactly.
    image, rounded = full["image"].numpy(), held["image"].float().numpy()
    np.testing.assert_allclose(rounded, image, rtol=2.0**-11, atol=2.0**-24)  # subnormals
    np.testing.assert_array_equal(held["label"].numpy(), full["label"].numpy())
    assert held["image"].meta["affine"].tolist() == full["image"].meta["affine"].tolist()
    chain.set_random_state(seed=0)
    for patch in chain(study_item(row, manifest)):
        assert patch["image"].dtype == patch["label"].dtype == torch.float32


def test_lesion_contrast_fades_the_nodule_of_each_patch_and_nothing_far_from_it(
    phantom_on_device: MakeStudy,
) -> None:
    # No jitter; with the same seed the patches are cut at the same places.
    same = {"positive_fraction": 1.0, "samples_per_volume": 3, "intensity_fraction": 0.0}
    plain = _training_patches(phantom_on_device, augment_probability=1.0, **same)
    faded = _training_patches(
        phantom_on_device, augment_probability=1.0, lesion_contrast=(0.5, 0.5), **same
    )
    for before, after in zip(plain, faded, strict=True):
        assert torch.equal(before["label"], after["label"])
        nodule = np.asarray(before["label"][0]) > 0.5
        far = ~ndimage.binary_dilation(nodule, np.ones((3, 3, 3)), iterations=6)
        image, fainter = np.asarray(before["image"][0]), np.asarray(after["image"][0])
        np.testing.assert_array_equal(fainter[far], image[far])
        # Half the nodule's contrast over its surroundings is gone.
        surround = ndimage.binary_dilation(nodule, iterations=3) & ~ndimage.binary_dilation(nodule)
        background = float(np.median(image[surround]))
        contrast = image[nodule] - background
        bright = contrast > 0
        np.testing.assert_allclose(
            fainter[nodule][bright] - background, 0.5 * contrast[bright], atol=1e-5
        )


def test_lesion_contrast_is_a_training_step_after_the_crop_and_is_checked() -> None:
    keys, modes = ["image", "mask"], ["bilinear", "nearest"]
    names = [
        type(step).__name__
        for step in ct.CtTransforms(lesion_contrast=(0.4, 1.0)).steps(True, keys, modes)
    ]
    assert names.index("RandSpatialCropd") < names.index("RandLesionContrastd")
    assert names.index("RandLesionContrastd") < names.index("RandScaleIntensityd")
    for training, step_keys in ((False, keys), (True, keys[:1])):  # serving; no mask
        steps = ct.CtTransforms(lesion_contrast=(0.4, 1.0)).steps(
            training, step_keys, modes[: len(step_keys)]
        )
        assert "RandLesionContrastd" not in [type(step).__name__ for step in steps]
    chain = ct.CtTransforms(lesion_contrast=(0.4, 1.0))
    assert chain.describe()["parameters"]["lesion_contrast"] == [0.4, 1.0]
    assert ct.CtTransforms.from_parameters(chain.describe()["parameters"]) == chain
    assert ct.CtTransforms().lesion_contrast is None
    for bad in ((0.8, 0.4), (0.4, 1.2), (0.4,)):
        with pytest.raises(ValueError, match="lesion_contrast must be"):
            ct.CtTransforms(lesion_contrast=bad)  # type: ignore[arg-type]


def test_positive_patches_do_not_always_hold_the_nodule_at_their_centre(
    phantom_on_device: MakeStudy,
) -> None:
    patches = _nodule_patches(phantom_on_device, 12)
    offsets = []
    for patch in patches:
        mask = np.asarray(patch["label"][0]) > 0.5
        assert mask.any()  # the chosen mask voxel always stays inside the patch
        centre = np.array(ndimage.center_of_mass(mask))
        offsets.append(centre - (np.array(ct.ROI_SIZE) - 1) / 2)
    spread = np.ptp(np.array(offsets), axis=0)
    # The patch is cut at a random place of a region a quarter larger on each side.
    assert np.all(spread >= 4.0)
    assert positive_region(ct.ROI_SIZE) == (48, 48, 48)


def _negative_patches(
    phantom_on_device: MakeStudy, negative_min_hu: float | None
) -> list[dict[str, Any]]:
    """Training patches of a phantom CT, none sampled around its nodule."""
    return _training_patches(
        phantom_on_device,
        positive_fraction=0.0,
        samples_per_volume=24,
        negative_min_hu=negative_min_hu,
        augment_probability=0.0,
    )


def test_patches_without_a_nodule_are_centred_on_tissue_denser_than_lung(
    phantom_on_device: MakeStudy,
) -> None:
    low, high = ct.WINDOWS_HU[ct.CtWindow.LUNG_NODULE]
    dense = (ct.NEGATIVE_MIN_HU - low) / (high - low)
    # The region's centre voxel lies inside its patch, so each patch holds dense tissue.
    for patch in _negative_patches(phantom_on_device, ct.NEGATIVE_MIN_HU):
        assert float(patch["image"].max()) > dense
    # Centred anywhere, some patches of the same volume fall in the air around it.
    anywhere = _negative_patches(phantom_on_device, None)
    assert any(float(patch["image"].max()) <= dense for patch in anywhere)


def test_training_without_a_mask_samples_random_patches(phantom_on_device: MakeStudy) -> None:
    manifest, row = phantom_on_device(Modality.CT, "Cygnus LD-16")
    chain = ct.build_transforms(True)
    chain.set_random_state(seed=0)
    patches = chain(study_item(row, manifest))
    assert [tuple(p["image"].shape) for p in patches] == [(1, 32, 32, 32)] * 4


def test_sliding_window_inference_covers_the_whole_volume(phantom_on_device: MakeStudy) -> None:
    manifest, row = phantom_on_device(Modality.CT, "Aquila CT 128")
    image = ct.build_transforms(False)(study_item(row, manifest))["image"]
    batch = image.as_tensor()[None]
    output = ct.sliding_window_inferer()(batch, lambda patch: patch * 2.0)
    assert isinstance(output, torch.Tensor)
    assert tuple(output.shape) == tuple(batch.shape)
    assert torch.allclose(output, batch * 2.0, atol=1e-5)


def test_nodule_mask_maps_back_onto_the_dicom_grid(phantom_on_device: MakeStudy) -> None:
    study = manifest, row = phantom_on_device(Modality.CT, "Borealis Helix 64")
    chain = ct.build_transforms(False, mask_key="label")
    item = chain(study_item(row, manifest))
    back = to_original_grid(item["label"], item, chain, MapKind.LABEL)
    meta = item["image"].meta
    truth = ground_truth_masks(study)[f"{meta['series_instance_uid']}__nodule"]
    in_array_order = truth[np.argsort(np.argsort(meta["instance_numbers"]))]
    assert back.shape == (1, *truth.shape)
    assert in_array_order.sum() > 0
    assert dice(in_array_order > 0, back[0] > 0.5) > 0.9


@pytest.mark.parametrize(
    ("balance", "cropper"), [(True, "RandCropByLesiond"), (False, "RandCropByPosNegLabeld")]
)
def test_training_cuts_nodule_patches_lesion_balanced_unless_told_not_to(
    balance: bool, cropper: str
) -> None:
    chain = ct.CtTransforms(balance_lesions=balance).build(True, mask_key="label")
    names = [type(step).__name__ for step in chain.transforms]
    croppers = [name for name in names if name.startswith("RandCrop")]
    assert croppers[0] == cropper
    # The centres' lists are computed just before it, as configured.
    centres = chain.transforms[names.index(cropper) - 1]
    assert isinstance(centres, CropCentreIndicesd) and centres.balance_lesions is balance
    assert ct.CtTransforms().balance_lesions is True
