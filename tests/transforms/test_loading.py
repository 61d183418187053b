import json
import shutil
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.dataset import FileMetaDataset
from pydicom.encaps import encapsulate, generate_fragments
from pydicom.uid import ExplicitVRLittleEndian

from medvision.data.manifest import resolve
from medvision.dicom.reading import DicomReadError, presentation_values
from medvision.modality import LESION_MASKS, Modality
from medvision.transforms.loading import (
    Intensity,
    LoadMasksd,
    LoadStudyd,
    StudyLoadError,
    study_item,
)
from tests.transforms.phantoms import MakeStudy, Study, device_models, ground_truth_masks


def _grayscale(photometric: str, stored: list[list[int]], window: bool) -> pydicom.Dataset:
    ds = pydicom.Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    values = np.array(stored, dtype=np.uint16)
    ds.Rows, ds.Columns = values.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.RescaleSlope, ds.RescaleIntercept = 1, 0
    if window:
        ds.WindowCenter, ds.WindowWidth = 1000, 1000
    ds.PixelData = values.tobytes()
    return ds


def test_presentation_values_apply_the_window_then_invert_monochrome1() -> None:
    stored = [[0, 1000], [2000, 4095]]
    monochrome2 = presentation_values(_grayscale("MONOCHROME2", stored, window=True))
    monochrome1 = presentation_values(_grayscale("MONOCHROME1", stored, window=True))
    assert monochrome2 == pytest.approx(np.array([[0.0, 0.5005], [1.0, 1.0]]), abs=1e-4)
    assert monochrome1 == pytest.approx(1.0 - monochrome2, abs=1e-6)


def test_presentation_values_without_a_window_scale_the_storable_range() -> None:
    values = presentation_values(_grayscale("MONOCHROME2", [[0, 4095]], window=False))
    assert values.tolist() == [[0.0, 1.0]]


def test_presentation_values_refuse_colour_images() -> None:
    ds = _grayscale("RGB", [[0]], window=False)
    ds.SamplesPerPixel = 3
    with pytest.raises(DicomReadError, match="need a grayscale image"):
        presentation_values(ds)


def test_ct_slices_are_sorted_along_the_normal_with_a_ras_affine(
    phantom_on_device: MakeStudy,
) -> None:
    manifest, row = study = phantom_on_device(Modality.CT, "Aquila CT 128")
    loaded = LoadStudyd(Modality.CT)(study_item(row, manifest))
    assert isinstance(loaded, dict)
    item = LoadMasksd(["nodule"])(loaded)
    image, mask = item["image"], item["label"]
    slices = image.shape[1]
    # The phantom numbers its slices from the head down: sorting by position reverses them.
    assert image.meta["instance_numbers"] == list(range(slices, 0, -1))
    assert tuple(image.shape) == (1, 64, 160, 160)
    annotations = json.loads(resolve(manifest, row.annotations or Path()).read_text())
    truth = ground_truth_masks(study)[f"{image.meta['series_instance_uid']}__nodule"]
    assert np.array_equal(mask[0].numpy(), truth[::-1].astype(np.float32))
    affine = image.affine.numpy()
    for nodule in annotations["nodules"]:
        z, r, c = nodule["centre_voxel_zyx"]
        x, y, z_mm = nodule["centre_mm_xyz"]
        ras = affine @ np.array([slices - 1 - z, r, c, 1.0])
        # Both are rounded to 0.01 (voxels and mm) in the annotations.
        assert ras[:3] == pytest.approx([-x, -y, z_mm], abs=0.03)


def test_mammography_views_come_in_rcc_lcc_rmlo_lmlo_order(phantom_on_device: MakeStudy) -> None:
    manifest, row = phantom_on_device(Modality.MAMMO, "Aquila Mammo S")
    views = LoadStudyd(Modality.MAMMO)(study_item(row, manifest))
    assert isinstance(views, list)
    order = [(v["image"].meta["laterality"], v["image"].meta["view_position"]) for v in views]
    assert order == [("R", "CC"), ("L", "CC"), ("R", "MLO"), ("L", "MLO")]
    assert [tuple(v["image"].shape) for v in views] == [(1, 512, 384)] * 4


def test_a_folder_without_the_study_raises_naming_the_study(phantom_on_device: MakeStudy) -> None:
    manifest, row = phantom_on_device(Modality.CXR, "Aquila DR-9")
    item = study_item(row, manifest) | {"study_instance_uid": "1.2.3"}
    with pytest.raises(StudyLoadError, match=r"study 1\.2\.3: no DICOM file of this study"):
        LoadStudyd(Modality.CXR)(item)


def test_a_study_without_images_of_the_modality_raises(phantom_on_device: MakeStudy) -> None:
    manifest, row = phantom_on_device(Modality.CXR, "Aquila DR-9")
    with pytest.raises(StudyLoadError, match=r"no ct image .* found Modality DX"):
        LoadStudyd(Modality.CT)(study_item(row, manifest))


def _copy_study(study: Study, tmp_path: Path) -> tuple[dict[str, object], list[Path]]:
    """Copy a study's folder; return the copy's data item and its files."""
    manifest, row = study
    folder = tmp_path / "study"
    shutil.copytree(resolve(manifest, row.path), folder)
    item: dict[str, object] = {"study": folder, "study_instance_uid": row.study_instance_uid}
    return item, sorted(folder.rglob("*.dcm"))


@pytest.mark.parametrize("model", ["Aquila DR-9", "Borealis Flat 4", "Cygnus CR-200"])
def test_corrupt_pixel_data_raises_a_study_load_error(
    phantom_on_device: MakeStudy, tmp_path: Path, model: str
) -> None:
    _, row = study = phantom_on_device(Modality.CXR, model)
    item, files = _copy_study(study, tmp_path)
    ds = pydicom.dcmread(files[0])
    if ds.file_meta.TransferSyntaxUID.is_compressed:  # JPEG 2000 and RLE: a cut-off frame
        fragment = next(generate_fragments(ds.PixelData))
        ds.PixelData = encapsulate([fragment[: len(fragment) // 3]])
    else:
        ds.PixelData = ds.PixelData[:100]
    ds.save_as(files[0])
    with pytest.raises(
        StudyLoadError, match=f"study {row.study_instance_uid}: .*cannot be decoded"
    ):
        LoadStudyd(Modality.CXR)(item)


def test_ct_slice_without_image_position_raises_naming_the_tag(
    phantom_on_device: MakeStudy, tmp_path: Path
) -> None:
    item, files = _copy_study(phantom_on_device(Modality.CT, "Borealis Helix 64"), tmp_path)
    ds = pydicom.dcmread(files[3])
    del ds.ImagePositionPatient
    ds.save_as(files[3])
    with pytest.raises(StudyLoadError, match=r"missing ImagePositionPatient \(0020,0032\)"):
        LoadStudyd(Modality.CT)(item)


def test_ct_series_with_a_missing_slice_raises(
    phantom_on_device: MakeStudy, tmp_path: Path
) -> None:
    item, files = _copy_study(phantom_on_device(Modality.CT, "Borealis Helix 64"), tmp_path)
    files[10].unlink()
    with pytest.raises(StudyLoadError, match="unevenly spaced"):
        LoadStudyd(Modality.CT)(item)


def test_masks_file_without_the_named_mask_raises(phantom_on_device: MakeStudy) -> None:
    manifest, row = phantom_on_device(Modality.CXR, "Aquila DR-9")
    item = LoadStudyd(Modality.CXR)(study_item(row, manifest))
    assert isinstance(item, dict)
    with pytest.raises(StudyLoadError, match="has no mask pneumonia"):
        LoadMasksd(["pneumonia"])(item)


def test_intensity_option_suggests_a_near_miss() -> None:
    with pytest.raises(ValueError, match="Did you mean 'presentation'"):
        LoadStudyd(Modality.CXR, intensity="presentaton")
    assert LoadStudyd(Modality.CXR, intensity="physical").intensity is Intensity.PHYSICAL


def test_a_tuple_of_mask_names_loads_as_one_channel_their_union(
    phantom_on_device: MakeStudy,
) -> None:
    model = device_models(Modality.FUNDUS)[0]
    manifest, row = study = phantom_on_device(Modality.FUNDUS, model)
    loaded = LoadStudyd(Modality.FUNDUS)(study_item(row, manifest))
    assert isinstance(loaded, dict)
    lesions = LESION_MASKS[Modality.FUNDUS]["referable_dr"]
    item = LoadMasksd([lesions, lesions[0]])(loaded)
    mask = item["label"].numpy()
    uid = loaded["image"].meta["sop_instance_uids"][0]
    truth = ground_truth_masks(study)
    union = np.logical_or.reduce([truth[f"{uid}__{name}"] > 0 for name in lesions])
    assert mask.shape[0] == 2
    assert union.any() and not np.array_equal(union, truth[f"{uid}__{lesions[0]}"] > 0)
    assert np.array_equal(mask[0], union.astype(np.float32))
    assert np.array_equal(mask[1], (truth[f"{uid}__{lesions[0]}"] > 0).astype(np.float32))
