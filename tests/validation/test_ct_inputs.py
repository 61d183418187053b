"""Tests of reading CT masks (DICOM SEG) and nodule candidates (LUNA16 CSV) for validation."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest
from pydicom.sr.codedict import codes
from pydicom.uid import generate_uid

from medvision.data.manifest import ManifestRow, resolve
from medvision.dicom.segmentation import nodule_segmentation
from medvision.evaluation.ct_detection import annotated_series, load_ground_truth
from medvision.modality import Modality
from medvision.synth.generator import SynthConfig, generate
from validation.ct_inputs import (
    CtInputsError,
    CtProblemKind,
    ct_scans,
    read_detections,
    series_geometry,
)

#: Four CT phantoms: two without nodules, one of 14.4 mm and one of 5.5 mm.
SEED = 5

CtSet = tuple[Path, list[ManifestRow]]


@pytest.fixture(scope="module")
def ct_set(tmp_path_factory: pytest.TempPathFactory) -> CtSet:
    out = tmp_path_factory.mktemp("ct-inputs")
    config = SynthConfig((Modality.CT,), 4, SEED, out, prevalence={"*": 0.5}, workers=1)
    rows = generate(config, progress=False)
    return out / "manifest.csv", rows


def _slices(manifest: Path, row: ManifestRow) -> list[pydicom.Dataset]:
    folder = resolve(manifest, row.path)
    return [pydicom.dcmread(p) for p in sorted(folder.rglob("*.dcm"))]


def _write_seg(manifest: Path, row: ManifestRow, mask: np.ndarray, folder: Path) -> Path:
    segmentation = nodule_segmentation(
        _slices(manifest, row),
        mask,
        model_name="tester",
        model_version="1",
        weights_sha256="0" * 64,
        series_instance_uid=generate_uid(),
    )
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{segmentation.SOPInstanceUID}.dcm"
    segmentation.save_as(path, enforce_file_format=True)
    return path


def test_series_geometry_orders_slices_and_measures_the_voxel(ct_set: CtSet) -> None:
    manifest, rows = ct_set
    row = rows[0]
    series = annotated_series(row, manifest)
    geometry = series_geometry(resolve(manifest, row.path), series)
    slices = sorted(_slices(manifest, row), key=lambda s: int(s.InstanceNumber))
    assert geometry.sop_instance_uids == tuple(str(s.SOPInstanceUID) for s in slices)
    positions = [float(s.ImagePositionPatient[2]) for s in slices]
    assert geometry.spacing_mm == pytest.approx(
        (abs(positions[1] - positions[0]), *(float(v) for v in slices[0].PixelSpacing))
    )
    with pytest.raises(ValueError, match="has no slice of series"):
        series_geometry(resolve(manifest, row.path), "1.2.3")


def test_each_study_gets_its_own_seg_mask_and_other_dicom_is_passed_over(
    ct_set: CtSet, tmp_path: Path
) -> None:
    manifest, rows = ct_set
    for row in rows:
        _, truth = load_ground_truth(row, manifest)
        _write_seg(manifest, row, truth, tmp_path / "seg" / row.study_instance_uid)
    # A CT slice in the folder (as --dicom-out leaves SR and SC objects) is not a SEG.
    shutil.copy(next(resolve(manifest, rows[0].path).rglob("*.dcm")), tmp_path / "seg" / "x.dcm")
    scans, problems = ct_scans(rows, manifest, segmentations=tmp_path / "seg", detections=None)
    assert problems == []
    assert [s.detections.study_instance_uid for s in scans] == [r.study_instance_uid for r in rows]
    for scan in scans:
        assert np.array_equal(scan.detections.predicted_mask, scan.detections.truth_mask)
        assert (scan.has_segmentation, scan.has_detections) == (True, False)
        assert scan.detections.predicted == []
    assert sum(bool(s.detections.truth_mask.any()) for s in scans) == 2


def test_a_vendor_seg_without_empty_frames_and_a_superseded_seg(
    ct_set: CtSet, tmp_path: Path
) -> None:
    manifest, rows = ct_set
    row = next(r for r in rows if r.labels["nodule"] == 1)
    _, truth = load_ground_truth(row, manifest)
    old = _write_seg(manifest, row, np.zeros_like(truth), tmp_path / "seg")
    earlier = pydicom.dcmread(old)
    earlier.ContentDate, earlier.ContentTime = "20200101", "000000"
    earlier.save_as(old)
    ordered = sorted(_slices(manifest, row), key=lambda s: int(s.InstanceNumber))
    vendor = hd.seg.Segmentation(
        source_images=ordered,
        pixel_array=truth,
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=[
            hd.seg.SegmentDescription(
                segment_number=1,
                segment_label="Lesion 1",  # not the label: the property type says nodule
                segmented_property_category=codes.SCT.MorphologicallyAbnormalStructure,
                segmented_property_type=codes.SCT.Nodule,
                algorithm_type=hd.seg.SegmentAlgorithmTypeValues.MANUAL,
            )
        ],
        series_instance_uid=generate_uid(),
        series_number=77,
        sop_instance_uid=generate_uid(),
        instance_number=1,
        manufacturer="Another vendor",
        manufacturer_model_name="X",
        software_versions="1",
        device_serial_number="1",
        omit_empty_frames=True,
    )
    assert int(vendor.NumberOfFrames) < len(ordered)
    vendor.save_as(tmp_path / "seg" / "vendor.dcm", enforce_file_format=True)
    scans, problems = ct_scans([row], manifest, segmentations=tmp_path / "seg", detections=None)
    assert np.array_equal(scans[0].detections.predicted_mask, truth)
    (problem,) = problems
    assert problem.kind == CtProblemKind.SUPERSEDED_SEGMENTATION
    assert problem.where == [f"{old} (series {annotated_series(row, manifest)})"]


def test_a_study_without_a_seg_counts_as_predicting_nothing_and_is_reported(
    ct_set: CtSet, tmp_path: Path
) -> None:
    manifest, rows = ct_set
    (tmp_path / "seg").mkdir()
    (tmp_path / "seg" / "notes.txt").write_text("not DICOM")
    scans, problems = ct_scans(rows, manifest, segmentations=tmp_path / "seg", detections=None)
    assert all(not s.detections.predicted_mask.any() for s in scans)
    kinds = {p.kind: p for p in problems}
    assert kinds[CtProblemKind.NO_SEGMENTATION].where == [
        f"study {r.study_instance_uid}" for r in rows
    ]
    assert kinds[CtProblemKind.NO_SEGMENTATION].action == "counted as predicting no nodule voxel"
    assert kinds[CtProblemKind.UNREADABLE_SEGMENTATION].where == [str(tmp_path / "seg/notes.txt")]
    with pytest.raises(CtInputsError, match="is not a folder"):
        ct_scans(rows, manifest, segmentations=tmp_path / "absent", detections=None)


def test_candidates_are_read_by_series_and_bad_rows_reported(tmp_path: Path) -> None:
    path = tmp_path / "candidates.csv"
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["seriesuid", "coordX", "coordY", "coordZ", "probability", "note"])
        writer.writerow(["1.2", "1.5", "-2", "30", "0.75", "kept"])
        writer.writerow(["1.2", "x", "-2", "30", "0.5", "bad number"])
        writer.writerow(["9.9", "0", "0", "0", "0.5", "unknown series"])
        writer.writerow(["1.2", "0", "0", "nan", "0.5", "not finite"])
    candidates, problems = read_detections(path, ["1.2", "1.3"])
    (location,) = candidates["1.2"]
    assert (location.centre, location.score) == ((1.5, -2.0, 30.0), 0.75)
    assert {p.kind: p.where for p in problems} == {
        CtProblemKind.BAD_DETECTION: ["row 2", "row 4"],
        CtProblemKind.DETECTION_NOT_IN_MANIFEST: ["row 3"],
    }
    path.write_text("series,x,y,z,p\n")
    with pytest.raises(CtInputsError, match=r"candidates\.csv: missing column\(s\) seriesuid"):
        read_detections(path, [])
