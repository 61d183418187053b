"""Nodule masks as DICOM SEG: valid, one frame per slice, read back voxel for voxel."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest
from pydicom.sr.codedict import codes
from pydicom.uid import generate_uid

from medvision.data.manifest import ManifestRow
from medvision.dicom.segmentation import SEG_SERIES_NUMBER, SERIES_DESCRIPTION, nodule_segmentation
from medvision.modality import Modality
from medvision.pipeline.reports import write_segmentations
from medvision.pipeline.results import AnalysisRun, Finding, StudyResult
from tests.conftest import dciodvfy_errors, needs_dciodvfy

HASH = "ef" * 32


def _ct(phantom_set: tuple[Path, list[ManifestRow]]) -> tuple[Path, list[pydicom.Dataset]]:
    folder, rows = phantom_set
    row = next(row for row in rows if row.modality == Modality.CT)
    paths = sorted((folder / row.path).rglob("*.dcm"))
    return folder / row.path, [pydicom.dcmread(p, stop_before_pixels=True) for p in paths]


def _mask(slices: list[pydicom.Dataset]) -> np.ndarray:
    mask = np.zeros((len(slices), int(slices[0].Rows), int(slices[0].Columns)), np.uint8)
    mask[5:8, 40:46, 50:53] = 1
    mask[20, 100, 100] = 1
    return mask


@needs_dciodvfy
def test_the_seg_is_valid_keeps_every_slice_and_reads_back_exactly(
    phantom_set: tuple[Path, list[ManifestRow]], tmp_path: Path
) -> None:
    _, slices = _ct(phantom_set)
    ordered = sorted(slices, key=lambda s: int(s.InstanceNumber))
    mask = _mask(ordered)
    segmentation = nodule_segmentation(
        list(reversed(ordered)),  # any order in, InstanceNumber order inside
        mask,
        model_name="ct-unet",
        model_version="0.1.0",
        weights_sha256=HASH,
        series_instance_uid=generate_uid(),
    )
    segmentation.save_as(tmp_path / "seg.dcm", enforce_file_format=True)
    assert dciodvfy_errors(tmp_path / "seg.dcm") == []
    back = hd.seg.segread(tmp_path / "seg.dcm")
    assert int(back.NumberOfFrames) == len(ordered)  # empty frames kept
    pixels = back.get_pixels_by_source_instance(
        [str(s.SOPInstanceUID) for s in ordered], segment_numbers=[1]
    )
    assert np.array_equal(pixels[..., 0], mask)
    assert back.StudyInstanceUID == ordered[0].StudyInstanceUID
    assert (back.SeriesNumber, back.SeriesDescription) == (SEG_SERIES_NUMBER, SERIES_DESCRIPTION)
    (segment,) = back.SegmentSequence
    assert segment.SegmentLabel == "nodule"
    assert segment.SegmentAlgorithmType == "AUTOMATIC"
    assert segment.SegmentedPropertyTypeCodeSequence[0].CodeValue == codes.SCT.Nodule.value
    (algorithm,) = segment.SegmentationAlgorithmIdentificationSequence
    assert (algorithm.AlgorithmName, algorithm.AlgorithmVersion) == ("ct-unet", "0.1.0")
    assert algorithm.AlgorithmParameters == f"weights SHA-256={HASH}"
    (series,) = back.ReferencedSeriesSequence
    assert series.SeriesInstanceUID == ordered[0].SeriesInstanceUID


def test_a_mask_that_does_not_fit_its_series_is_refused(
    phantom_set: tuple[Path, list[ManifestRow]],
) -> None:
    _, slices = _ct(phantom_set)

    def segment(slices: list[pydicom.Dataset], mask: np.ndarray) -> None:
        nodule_segmentation(
            slices,
            mask,
            model_name="m",
            model_version="1",
            weights_sha256=HASH,
            series_instance_uid=generate_uid(),
        )

    with pytest.raises(ValueError, match="does not fit the series'"):
        segment(slices, _mask(slices)[1:])
    moved = pydicom.Dataset(slices[0])
    moved.SeriesInstanceUID = generate_uid()
    with pytest.raises(ValueError, match="the slices come from 2 series"):
        segment([moved, *slices[1:]], _mask(slices))
    with pytest.raises(ValueError, match="needs its source slices"):
        segment([], _mask(slices))


@needs_dciodvfy
def test_the_pipeline_writes_one_seg_per_finding_with_a_mask(
    phantom_set: tuple[Path, list[ManifestRow]], tmp_path: Path
) -> None:
    study, slices = _ct(phantom_set)
    ordered = sorted(slices, key=lambda s: int(s.InstanceNumber))
    finding = Finding(
        name="nodule",
        probability=0.75,
        threshold=0.5,
        flagged=True,
        locations=[],
        model_name="ct-unet",
        model_version="0.1.0",
        weights_sha256=HASH,
        mask=_mask(ordered),
    )
    result = StudyResult(
        study_instance_uid=str(ordered[0].StudyInstanceUID),
        modality=Modality.CT,
        site="",
        manufacturer="",
        manufacturer_model="",
        sex="",
        age=None,
        findings=[finding, replace(finding, name="other", mask=None)],
    )
    written = write_segmentations(AnalysisRun([result], []), [study], tmp_path)
    (item,) = written
    assert item.path.parent == tmp_path / result.study_instance_uid
    assert item.path.name.startswith("SEG_")
    assert dciodvfy_errors(item.path) == []
