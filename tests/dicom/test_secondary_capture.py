"""Heatmap Secondary Capture objects: valid DICOM, in the source study, saying what they are."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.uid import SecondaryCaptureImageStorage, generate_uid

from medvision.data.manifest import ManifestRow
from medvision.dicom.secondary_capture import SERIES_DESCRIPTION, heatmap_secondary_capture
from medvision.modality import Modality
from tests.conftest import dciodvfy_errors, needs_dciodvfy


def _source(phantom_set: tuple[Path, list[ManifestRow]], modality: Modality) -> pydicom.Dataset:
    folder, rows = phantom_set
    row = next(row for row in rows if row.modality == modality)
    return pydicom.dcmread(next((folder / row.path).rglob("*.dcm")))


def _capture(
    source: pydicom.Dataset, picture: np.ndarray, series: str, method: str = "Grad-CAM"
) -> pydicom.Dataset:
    return heatmap_secondary_capture(
        source,
        picture,
        finding="nodule",
        probability=0.8125,
        threshold=0.5,
        model_name="cxr-densenet",
        model_version="0.1.0",
        weights_sha256="ab" * 32,
        series_instance_uid=series,
        series_number=9001,
        instance_number=3,
        method=method,
    )


@needs_dciodvfy
@pytest.mark.parametrize("modality", [Modality.CXR, Modality.FUNDUS, Modality.MAMMO, Modality.CT])
def test_the_object_passes_dciodvfy_and_sits_in_the_source_study(
    phantom_set: tuple[Path, list[ManifestRow]], modality: Modality, tmp_path: Path
) -> None:
    source = _source(phantom_set, modality)
    rng = np.random.default_rng(0)
    picture = rng.integers(0, 256, (int(source.Rows) + 40, int(source.Columns), 3), np.uint8)
    series = generate_uid()
    _capture(source, picture, series).save_as(tmp_path / "sc.dcm", enforce_file_format=True)
    written = pydicom.dcmread(tmp_path / "sc.dcm")
    assert dciodvfy_errors(tmp_path / "sc.dcm") == []
    assert written.SOPClassUID == SecondaryCaptureImageStorage
    assert written.SOPInstanceUID != source.SOPInstanceUID
    for keyword in ("StudyInstanceUID", "PatientID", "PatientName", "AccessionNumber"):
        assert written.get(keyword) == source.get(keyword)
    assert (written.SeriesInstanceUID, written.SeriesNumber, written.InstanceNumber) == (
        series,
        9001,
        3,
    )
    assert written.SeriesDescription == SERIES_DESCRIPTION
    assert written.BurnedInAnnotation == "YES"
    assert list(written.ImageType) == ["DERIVED", "SECONDARY"]
    (reference,) = written.SourceImageSequence
    assert reference.ReferencedSOPInstanceUID == source.SOPInstanceUID
    assert reference.ReferencedSOPClassUID == source.SOPClassUID
    assert written.DerivationDescription == (
        "Grad-CAM heatmap of nodule: probability 0.812, threshold 0.500; model cxr-densenet "
        f"0.1.0, weights SHA-256 {'ab' * 32}"
    )
    ct_capture = _capture(source, picture, series, method="HiResCAM")
    assert str(ct_capture.DerivationDescription).startswith("HiResCAM heatmap of nodule: ")
    assert written.Manufacturer == "medvision"
    assert written.ManufacturerModelName == "cxr-densenet"
    assert written.PhotometricInterpretation == "RGB"
    assert np.array_equal(written.pixel_array, picture)
    assert written.get("PatientOrientation") == source.get("PatientOrientation", "")
    if modality == Modality.MAMMO:
        assert written.Laterality == source.ImageLaterality


def test_a_picture_that_is_not_rgb_bytes_is_refused(
    phantom_set: tuple[Path, list[ManifestRow]],
) -> None:
    source = _source(phantom_set, Modality.CXR)
    with pytest.raises(ValueError, match=r"uint8 RGB, got float64 \(4, 4, 3\)"):
        _capture(source, np.zeros((4, 4, 3)), generate_uid())
