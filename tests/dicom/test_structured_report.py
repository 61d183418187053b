"""TID 1500 SR documents: valid, rendered by DCMTK, and read back by highdicom unchanged."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest
from pydicom.uid import generate_uid

from medvision.data.manifest import ManifestRow
from medvision.dicom.structured_report import (
    ABSENT,
    FINDING_CODES,
    GRADE_CODES,
    PRESENCE,
    PRESENT,
    PRIVATE_SCHEME,
    PROBABILITY,
    SEVERITY,
    THRESHOLD,
    study_report,
)
from medvision.explain.heatmaps import Heatmap
from medvision.grading import DR_GRADE, decode_grade
from medvision.inference.scoring import Location
from medvision.modality import Modality
from medvision.pipeline.results import Finding, StudyResult
from tests.conftest import dciodvfy_errors, needs_dciodvfy

HASH = "cd" * 32


def _headers(
    phantom_set: tuple[Path, list[ManifestRow]], modality: Modality
) -> list[pydicom.Dataset]:
    folder, rows = phantom_set
    row = next(row for row in rows if row.modality == modality)
    return [pydicom.dcmread(p, stop_before_pixels=True) for p in (folder / row.path).rglob("*.dcm")]


def _finding(
    name: str,
    probability: float,
    threshold: float,
    locations: list[Location] | None = None,
    **extra: object,
) -> Finding:
    return Finding(
        name=name,
        probability=probability,
        threshold=threshold,
        flagged=probability >= threshold,
        locations=locations or [],
        model_name="cxr-densenet",
        model_version="0.1.0",
        weights_sha256=HASH,
        **extra,  # type: ignore[arg-type]
    )


def _result(
    headers: list[pydicom.Dataset], modality: Modality, findings: list[Finding]
) -> StudyResult:
    return StudyResult(
        study_instance_uid=str(headers[0].StudyInstanceUID),
        modality=modality,
        site="",
        manufacturer="",
        manufacturer_model="",
        sex="",
        age=None,
        findings=findings,
    )


def _write(
    document: pydicom.Dataset, path: Path
) -> tuple[pydicom.Dataset, hd.sr.MeasurementReport]:
    """Save ``document``, read it back with highdicom; return it and its TID 1500 content."""
    document.save_as(path, enforce_file_format=True)
    report = hd.sr.srread(path)
    content = report.content
    assert isinstance(content, hd.sr.MeasurementReport)
    return report, content


def _texts(group: object) -> dict[str, str]:
    items = group[0].ContentSequence  # type: ignore[index]
    return {
        str(item.ConceptNameCodeSequence[0].CodeMeaning): str(item.TextValue)
        for item in items
        if item.ValueType == "TEXT"
    }


def _values(group: object) -> dict[str, float]:
    return {m.name.meaning: float(m.value) for m in group.get_measurements()}  # type: ignore[attr-defined]


@needs_dciodvfy
def test_a_chest_x_ray_report_is_valid_and_reads_back_with_every_figure(
    phantom_set: tuple[Path, list[ManifestRow]], tmp_path: Path
) -> None:
    (source,) = _headers(phantom_set, Modality.CXR)
    sop = str(source.SOPInstanceUID)
    heatmap = Heatmap("pleural_effusion", np.zeros((2, 2), np.float32), sop, (10, 20))
    result = _result(
        [source],
        Modality.CXR,
        [
            _finding("pleural_effusion", 0.8125, 0.5, heatmaps=[heatmap]),
            _finding("nodule", 0.125, 0.25),
        ],
    )
    document = study_report(result, [source], series_instance_uid=generate_uid())
    report, content = _write(document, tmp_path / "sr.dcm")
    assert dciodvfy_errors(tmp_path / "sr.dcm") == []
    if shutil.which("dsrdump"):
        dump = subprocess.run(
            ["dsrdump", str(tmp_path / "sr.dcm")], capture_output=True, text=True, check=True
        )
        assert '"Imaging Measurement Report"' in dump.stdout
        assert '(60046008,SCT,"Pleural effusion")' in dump.stdout
    assert report.StudyInstanceUID == source.StudyInstanceUID
    assert report.PatientID == source.PatientID
    assert report.SeriesDescription == "AI findings (medvision) - not for primary diagnosis"
    assert report.VerificationFlag == "UNVERIFIED"
    assert PRIVATE_SCHEME in [
        item.CodingSchemeDesignator for item in report.CodingSchemeIdentificationSequence
    ]
    evidence = report.CurrentRequestedProcedureEvidenceSequence[0]
    assert (
        evidence.ReferencedSeriesSequence[0].ReferencedSOPSequence[0].ReferencedSOPInstanceUID
        == sop
    )
    (planar,) = content.get_planar_roi_measurement_groups()
    (image_level,) = content.get_image_measurement_groups()
    assert planar.finding_type == FINDING_CODES["pleural_effusion"]
    assert image_level.finding_type == FINDING_CODES["nodule"]
    assert _values(planar) == {PROBABILITY.meaning: 0.8125, THRESHOLD.meaning: 0.5}
    assert _values(image_level) == {PROBABILITY.meaning: 0.125, THRESHOLD.meaning: 0.25}
    assert planar.get_qualitative_evaluations()[0].value == PRESENT
    assert image_level.get_qualitative_evaluations()[0].value == ABSENT
    region = planar.roi
    assert region is not None
    assert np.array_equal(region.value, np.array([[20.5, 10.5]]))
    (image,) = region.ContentSequence
    assert image.ReferencedSOPSequence[0].ReferencedSOPInstanceUID == sop
    for group in (planar, image_level):
        assert _texts(group) == {
            "Tracking Identifier": _texts(group)["Tracking Identifier"],
            "Algorithm Name": "cxr-densenet",
            "Algorithm Version": "0.1.0",
            "Algorithm Parameters": f"weights SHA-256 {HASH}",
        }
    (source_item,) = [n for n in image_level[0].ContentSequence if n.ValueType == "IMAGE"]
    assert source_item.ReferencedSOPSequence[0].ReferencedSOPInstanceUID == sop


@needs_dciodvfy
def test_a_ct_nodule_is_a_3d_point_in_the_series_frame_with_its_diameter(
    phantom_set: tuple[Path, list[ManifestRow]], tmp_path: Path
) -> None:
    headers = _headers(phantom_set, Modality.CT)
    series = str(headers[0].SeriesInstanceUID)
    location = Location(series, (-12.5, 30.25, 101.0), diameter_mm=7.5)
    finding = _finding("nodule", 0.75, 0.5, locations=[location])
    document = study_report(
        _result(headers, Modality.CT, [finding]), headers, series_instance_uid=generate_uid()
    )
    _, content = _write(document, tmp_path / "sr.dcm")
    assert dciodvfy_errors(tmp_path / "sr.dcm") == []
    (group,) = content.get_planar_roi_measurement_groups()
    assert group.roi is not None
    assert np.array_equal(group.roi.value, np.array([[-12.5, 30.25, 101.0]]))
    assert group.roi.ReferencedFrameOfReferenceUID == headers[0].FrameOfReferenceUID
    assert _values(group)["Diameter"] == 7.5


@needs_dciodvfy
def test_a_graded_finding_carries_its_grade_as_a_second_evaluation(
    phantom_set: tuple[Path, list[ManifestRow]], tmp_path: Path
) -> None:
    (source,) = _headers(phantom_set, Modality.FUNDUS)
    grade = decode_grade(DR_GRADE, True, 0.875, (3.0, 2.0, -2.0))
    finding = _finding("referable_dr", 0.875, 0.25, grade=grade)
    document = study_report(
        _result([source], Modality.FUNDUS, [finding]), [source], series_instance_uid=generate_uid()
    )
    _, content = _write(document, tmp_path / "sr.dcm")
    assert dciodvfy_errors(tmp_path / "sr.dcm") == []
    if shutil.which("dsrdump"):
        dump = subprocess.run(
            ["dsrdump", str(tmp_path / "sr.dcm")], capture_output=True, text=True, check=True
        )
        assert (
            '"Severity (attribute)")=(DRG3,99MEDVISION,"DR grade 3: severe non-proliferative DR")'
            in dump.stdout
        )
    (group,) = content.get_image_measurement_groups()
    evaluations = {e.name: e.value for e in group.get_qualitative_evaluations()}
    assert grade.value == 3
    assert evaluations == {PRESENCE: PRESENT, SEVERITY: GRADE_CODES["dr_grade"][3]}
    assert _values(group) == {PROBABILITY.meaning: 0.875, THRESHOLD.meaning: 0.25}


def test_a_new_report_lists_the_reports_it_supersedes(
    phantom_set: tuple[Path, list[ManifestRow]],
) -> None:
    (source,) = _headers(phantom_set, Modality.CXR)
    result = _result([source], Modality.CXR, [_finding("nodule", 0.5, 0.5)])
    first = study_report(result, [source], series_instance_uid=generate_uid())
    second = study_report(result, [source], series_instance_uid=generate_uid(), supersedes=[first])
    (study,) = second.PredecessorDocumentsSequence
    (series,) = study.ReferencedSeriesSequence
    assert series.ReferencedSOPSequence[0].ReferencedSOPInstanceUID == first.SOPInstanceUID
    assert "PredecessorDocumentsSequence" not in first


def test_sources_must_be_the_study_s_own(phantom_set: tuple[Path, list[ManifestRow]]) -> None:
    (cxr,) = _headers(phantom_set, Modality.CXR)
    (fundus,) = _headers(phantom_set, Modality.FUNDUS)
    result = _result([cxr], Modality.CXR, [_finding("nodule", 0.5, 0.5)])
    with pytest.raises(ValueError, match="an SR needs its source images"):
        study_report(result, [], series_instance_uid=generate_uid())
    with pytest.raises(ValueError, match="source images of other studies given"):
        study_report(result, [cxr, fundus], series_instance_uid=generate_uid())
