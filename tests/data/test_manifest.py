from pathlib import Path

import pytest

from medvision.data.manifest import (
    ManifestError,
    ManifestRow,
    manifest_columns,
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
