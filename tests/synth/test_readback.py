"""Every kind of object the phantom generator writes reads back with the tools users have."""

from pathlib import Path

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk  # noqa: N813 - the name SimpleITK documents
from monai.transforms.io.array import LoadImage

from medvision.data.manifest import ManifestRow
from medvision.dicom.reading import iter_files
from medvision.modality import Modality
from tests.conftest import dciodvfy_errors, needs_dciodvfy

PhantomSet = tuple[Path, list[ManifestRow]]


def _one_study_per_device(rows: list[ManifestRow]) -> list[ManifestRow]:
    chosen: dict[str, ManifestRow] = {}
    for row in rows:
        chosen.setdefault(row.manufacturer_model, row)
    return list(chosen.values())


def _sample_files(out: Path, row: ManifestRow) -> list[Path]:
    files = sorted(iter_files(out / row.path))
    if row.modality == Modality.CT:
        return [files[0], files[len(files) // 2], files[-1]]
    return files


@pytest.mark.integration
@needs_dciodvfy
def test_every_device_writes_objects_dciodvfy_accepts(phantom_set: PhantomSet) -> None:
    out, rows = phantom_set
    problems = []
    for row in _one_study_per_device(rows):
        for path in _sample_files(out, row):
            errors = dciodvfy_errors(path)
            if errors:
                problems.append(f"{row.manufacturer_model} {path.name}: {errors}")
    assert problems == []


def test_every_device_reads_back_with_monai_load_image(phantom_set: PhantomSet) -> None:
    out, rows = phantom_set
    loader = LoadImage(reader="PydicomReader", image_only=True)
    for row in _one_study_per_device(rows):
        path = _sample_files(out, row)[0]
        image = loader(str(path))
        ds = pydicom.dcmread(path)
        expected = ds.pixel_array
        # MONAI returns (columns, rows[, channels]): spatial axes are transposed.
        array = np.asarray(image)
        if expected.ndim == 3:
            assert array.shape[:2] == (ds.Columns, ds.Rows), row.manufacturer_model
        else:
            assert array.shape == (ds.Columns, ds.Rows), row.manufacturer_model
            assert np.allclose(array.T, pixel_values_of(ds)), row.manufacturer_model


def pixel_values_of(ds: pydicom.Dataset) -> np.ndarray:
    slope = float(ds.get("RescaleSlope", 1.0))
    intercept = float(ds.get("RescaleIntercept", 0.0))
    return ds.pixel_array * slope + intercept


def test_ct_series_reads_as_one_volume_with_simpleitk_and_monai(phantom_set: PhantomSet) -> None:
    out, rows = phantom_set
    for row in _one_study_per_device([r for r in rows if r.modality == Modality.CT]):
        series_dir = next(p for p in (out / row.path).iterdir() if p.is_dir())
        files = sorted(series_dir.iterdir())
        first = pydicom.dcmread(files[0], stop_before_pixels=True)
        reader = sitk.ImageSeriesReader()
        reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(series_dir)))
        volume = reader.Execute()
        spacing = float(first.PixelSpacing[0]), float(first.PixelSpacing[1])
        assert volume.GetSize() == (first.Columns, first.Rows, len(files))
        assert volume.GetSpacing() == pytest.approx((*spacing, float(first.SliceThickness)))
        assert volume.GetDirection() == pytest.approx((1, 0, 0, 0, 1, 0, 0, 0, 1))
        monai_volume = LoadImage(reader="PydicomReader", image_only=True)(str(series_dir))
        assert tuple(monai_volume.shape) == (first.Columns, first.Rows, len(files))
        assert float(monai_volume.min()) >= -1024.0
