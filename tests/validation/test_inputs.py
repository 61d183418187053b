"""Predictions joined to the manifest: every mismatch reported with its rows and its outcome."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from medvision.data.manifest import ManifestRow
from medvision.modality import Modality
from validation.inputs import (
    PredictionsError,
    ProblemKind,
    join_inputs,
    read_predictions,
)
from validation.protocol import parse_protocol

PROTOCOL = """
name: test
modality: cxr
finding: nodule
acceptance: {sensitivity_lower_ci_min: 0.8}
"""


def _study(uid: str, nodule: int | None) -> ManifestRow:
    labels = {} if nodule is None else {"nodule": nodule}
    return ManifestRow(uid, Modality.CXR, Path(uid), site="A", labels=labels)


def _prediction(
    uid: str, probability: str, flagged: str, finding: str = "nodule"
) -> dict[str, str]:
    return {
        "study_instance_uid": uid,
        "finding": finding,
        "probability": probability,
        "threshold": "0.5",
        "flagged": flagged,
    }


def test_every_mismatch_is_reported_with_its_rows_and_outcome() -> None:
    manifest = [
        _study("1", 1),
        _study("2", 0),
        _study("3", 1),  # conflicting duplicate predictions
        _study("4", 0),  # identical duplicates
        _study("5", 1),  # no prediction
        _study("6", None),  # no reference label
        ManifestRow("7", Modality.FUNDUS, Path("7"), labels={"referable_dr": 1}),  # other modality
    ]
    predictions = [
        _prediction("1", "0.9", "1"),  # row 1
        _prediction("2", "0.2", "0"),  # row 2
        _prediction("3", "0.7", "1"),  # row 3
        _prediction("3", "0.1", "0"),  # row 4
        _prediction("4", "0.3", "0"),  # row 5
        _prediction("4", "0.3", "0"),  # row 6
        _prediction("1", "0.9", "1", finding="tumour"),  # row 7
        _prediction("8", "0.6", "1"),  # row 8: not in the manifest
        _prediction("2", "1.7", "1", finding="nodule"),  # row 9: bad probability
        _prediction("1", "0.9", "1", finding="pneumothorax"),  # row 10: another finding
    ]
    inputs = join_inputs(predictions, manifest, parse_protocol(PROTOCOL))
    problems = {p.kind: p for p in inputs.problems}
    assert problems[ProblemKind.UNKNOWN_FINDING].where == ["row 7"]
    assert problems[ProblemKind.BAD_VALUE].where == ["row 9"]
    assert problems[ProblemKind.CONFLICTING_DUPLICATES].where == ["study 3 (rows 3, 4)"]
    assert problems[ProblemKind.DUPLICATE_ROWS].where == ["study 4 (rows 5, 6)"]
    assert problems[ProblemKind.NOT_IN_MANIFEST].where == ["study 8"]
    assert problems[ProblemKind.NOT_ANALYSED].where == ["study 3", "study 5"]
    assert problems[ProblemKind.NOT_ASSESSED].where == ["study 6"]
    assert set(problems) == set(ProblemKind)
    assert [(c.study_instance_uid, c.label, c.flagged) for c in inputs.cases] == [
        ("1", 1, 1),
        ("2", 0, 0),
        ("4", 0, 0),
    ]
    assert [row.study_instance_uid for row in inputs.not_analysed] == ["3", "5"]
    assert str(problems[ProblemKind.CONFLICTING_DUPLICATES]).startswith(
        "conflicting_duplicates (1): all ignored; the study counts as not analysed ["
    )


def test_a_fixed_threshold_recomputes_the_decision() -> None:
    manifest = [_study("1", 1), _study("2", 0)]
    predictions = [_prediction("1", "0.4", "0"), _prediction("2", "0.35", "0")]
    protocol = parse_protocol(PROTOCOL + "threshold: 0.38\n")
    inputs = join_inputs(predictions, manifest, protocol)
    assert [c.flagged for c in inputs.cases] == [1, 0]
    assert inputs.problems == []


def test_a_predictions_file_without_its_columns_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "preds.csv"
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["study_instance_uid", "finding", "probability"])
        writer.writerow(["1", "nodule", "0.5"])
    with pytest.raises(PredictionsError, match="missing column\\(s\\) threshold, flagged"):
        read_predictions(path)
    with pytest.raises(PredictionsError, match="cannot be read"):
        read_predictions(tmp_path / "absent.csv")
    binary = tmp_path / "image.dcm"  # a DICOM file given by mistake
    binary.write_bytes(b"\x00" * 128 + b"DICM" + bytes(range(128, 256)))
    with pytest.raises(PredictionsError, match=r"image\.dcm: is not a UTF-8 CSV file"):
        read_predictions(binary)
