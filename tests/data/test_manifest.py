from pathlib import Path

import pytest

from medvision.data.manifest import (
    ManifestError,
    ManifestRow,
    manifest_columns,
    merge_manifests,
    read_manifest,
    write_manifest,
)
from medvision.modality import Modality

HEADER = "study_instance_uid,modality,path,nodule,pleural_effusion\n"


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "manifest.csv"
    path.write_text(text)
    return path


def test_round_trip_preserves_every_field(tmp_path: Path) -> None:
    rows = [
        ManifestRow(
            study_instance_uid="1.2.3",
            modality=Modality.FUNDUS,
            path=Path("fundus/1.2.3"),
            site="Site A",
            manufacturer="Maker",
            manufacturer_model="Model 1",
            sex="F",
            age=54,
            ethnicity="Asian",
            split="test",
            patient_id="P1",
            labels={"referable_dr": 1},
            annotations=Path("annotations/1.2.3.json"),
            masks=Path("annotations/1.2.3.npz"),
            extra={"dr_grade": "3"},
        ),
        ManifestRow(
            study_instance_uid="1.2.4",
            modality=Modality.CXR,
            path=Path("/data/cxr/1.2.4"),
            labels={"nodule": 0, "cardiomegaly": 1},
        ),
    ]
    path = tmp_path / "manifest.csv"
    write_manifest(rows, path)
    assert read_manifest(path) == rows


def test_columns_are_base_then_findings_then_extra() -> None:
    row = ManifestRow("1", Modality.MAMMO, Path("x"), labels={"malignancy": 0})
    assert manifest_columns([row])[-4:] == [
        "malignancy",
        "malignancy_left",
        "malignancy_right",
        "breast_density",
    ]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("1.2,cxr,a,2,0\n", "line 2: column 'nodule' must be 0 or 1 (or empty), got '2'"),
        ("1.2,cxr,a,1,0\n1.2,cxr,b,0,0\n", "line 3: study 1.2 already on line 2"),
        ("1.2,xray,a,1,0\n", "line 2: unknown modality 'xray'"),
        (",cxr,a,1,0\n", "line 2: empty study_instance_uid"),
    ],
)
def test_bad_rows_are_reported_with_their_line(tmp_path: Path, body: str, message: str) -> None:
    with pytest.raises(ManifestError, match=message.replace("(", r"\(").replace(")", r"\)")):
        read_manifest(_write(tmp_path, HEADER + body))


def test_missing_required_column_is_reported(tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match="missing required column"):
        read_manifest(_write(tmp_path, "study_instance_uid,modality\n1,cxr\n"))


def test_empty_finding_cell_means_not_assessed(tmp_path: Path) -> None:
    rows = read_manifest(_write(tmp_path, HEADER + "1.2,cxr,a,,1\n"))
    assert rows[0].labels == {"pleural_effusion": 1}


def _set(folder: Path, uid: str, patient: str, split: str) -> Path:
    row = ManifestRow(
        study_instance_uid=uid,
        modality=Modality.FUNDUS,
        path=Path(f"fundus/{uid}"),
        split=split,
        patient_id=patient,
        labels={"referable_dr": 1},
        masks=Path(f"annotations/{uid}.npz"),
    )
    path = folder / "manifest.csv"
    write_manifest([row], path)
    return path


def test_merged_manifest_keeps_rows_and_makes_paths_absolute(tmp_path: Path) -> None:
    first = _set(tmp_path / "a", "1.1", "P1", "calibration")
    second = _set(tmp_path / "b", "1.2", "P2", "tune")
    out = tmp_path / "merged" / "manifest.csv"
    merge_manifests([first, second], out)
    rows = read_manifest(out)
    assert [(r.study_instance_uid, r.split, r.labels) for r in rows] == [
        ("1.1", "calibration", {"referable_dr": 1}),
        ("1.2", "tune", {"referable_dr": 1}),
    ]
    assert rows[0].path == (tmp_path / "a" / "fundus" / "1.1").resolve()
    assert rows[1].masks == (tmp_path / "b" / "annotations" / "1.2.npz").resolve()
    assert rows[0].annotations is None


@pytest.mark.parametrize(
    ("second_uid", "second_patient", "message"),
    [("1.1", "P2", "study 1.1 is in both"), ("1.2", "P1", "patient P1 is in both")],
)
def test_merging_sets_that_share_a_study_or_patient_is_refused(
    tmp_path: Path, second_uid: str, second_patient: str, message: str
) -> None:
    first = _set(tmp_path / "a", "1.1", "P1", "calibration")
    second = _set(tmp_path / "b", second_uid, second_patient, "tune")
    out = tmp_path / "merged.csv"
    with pytest.raises(ManifestError, match=message):
        merge_manifests([first, second], out)
    assert not out.exists()


def test_merging_nothing_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match="no manifest"):
        merge_manifests([], tmp_path / "merged.csv")
