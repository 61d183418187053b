from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.dataset import FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian

from medvision.dicom.reading import (
    DicomReadError,
    age_in_years,
    iter_files,
    pixel_values,
    read_header,
    scan_folder,
)


def _image(photometric: str, values: np.ndarray, intercept: float = 0.0) -> pydicom.Dataset:
    ds = pydicom.Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.Rows, ds.Columns = values.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    ds.BitsAllocated = 16
    ds.BitsStored = 12
    ds.HighBit = 11
    ds.PixelRepresentation = 0
    ds.RescaleSlope = 1
    ds.RescaleIntercept = intercept
    ds.PixelData = values.astype(np.uint16).tobytes()
    return ds


def test_monochrome1_is_inverted_so_high_means_bright() -> None:
    stored = np.array([[0, 4095], [100, 200]])
    values = pixel_values(_image("MONOCHROME1", stored))
    assert values.tolist() == [[4095.0, 0.0], [3995.0, 3895.0]]


def test_rescale_gives_hounsfield_units() -> None:
    values = pixel_values(_image("MONOCHROME2", np.array([[0, 1024], [2048, 24]]), -1024.0))
    assert values.tolist() == [[-1024.0, 0.0], [1024.0, -1000.0]]


def test_corrupt_pixel_data_raises_a_clear_error() -> None:
    ds = _image("MONOCHROME2", np.zeros((4, 4)))
    ds.PixelData = b"\x00" * 7
    with pytest.raises(DicomReadError, match="cannot be decoded"):
        pixel_values(ds)


def test_non_dicom_file_is_rejected_with_its_path(tmp_path: Path) -> None:
    path = tmp_path / "report.txt"
    path.write_text("hello")
    with pytest.raises(DicomReadError, match="not a readable DICOM file"):
        read_header(path)
    scan = scan_folder(tmp_path)
    assert scan.studies == {}
    assert [p for p, _ in scan.rejected] == [path]


@pytest.mark.parametrize(
    ("age", "birth", "study", "years"),
    [
        ("045Y", "", "", 45),
        ("018M", "", "", 1),
        ("", "19800615", "20250614", 44),
        ("", "19800615", "20250615", 45),
        ("", "", "", None),
    ],
)
def test_age_from_patient_age_or_dates(age: str, birth: str, study: str, years: int | None) -> None:
    ds = pydicom.Dataset()
    ds.PatientAge, ds.PatientBirthDate, ds.StudyDate = age, birth, study
    assert age_in_years(ds) == years


def test_linked_folders_are_followed_once_and_a_loop_ends(tmp_path: Path) -> None:
    study = tmp_path / "store" / "study"
    study.mkdir(parents=True)
    (study / "a.dcm").write_bytes(b"")
    collection = tmp_path / "collection"
    collection.mkdir()
    (collection / "linked").symlink_to(study, target_is_directory=True)
    (study / "back").symlink_to(tmp_path / "store", target_is_directory=True)  # a loop
    assert list(iter_files(collection)) == [collection / "linked" / "a.dcm"]
