import csv
import shutil
from pathlib import Path

import pytest

from medvision.cli import main
from medvision.data.importer import build_manifest
from medvision.data.manifest import ManifestError, ManifestRow, read_manifest

PhantomSet = tuple[Path, list[ManifestRow]]


def _hospital_folder(tmp_path: Path, phantom_set: PhantomSet) -> tuple[Path, list[ManifestRow]]:
    """Copy three chest X-ray studies into a 'hospital' folder with a stray non-DICOM file."""
    out, rows = phantom_set
    chosen = [row for row in rows if row.modality.value == "cxr"][:3]
    folder = tmp_path / "hospital"
    for number, row in enumerate(chosen):
        shutil.copytree(out / row.path, folder / f"patient{number}")
    (folder / "notes.txt").write_text("not an image")
    return folder, chosen


def _labels(path: Path, rows: list[ManifestRow], extra_uid: str | None = None) -> Path:
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["study_instance_uid", "nodule", "pneumothorax", "split"])
        for row in rows:
            writer.writerow(
                [row.study_instance_uid, row.labels["nodule"], row.labels["pneumothorax"], "test"]
            )
        if extra_uid:
            writer.writerow([extra_uid, 1, 0, "test"])
    return path


def test_import_reads_headers_joins_labels_and_reports_the_rest(
    tmp_path: Path, phantom_set: PhantomSet
) -> None:
    folder, chosen = _hospital_folder(tmp_path, phantom_set)
    labels = _labels(tmp_path / "labels.csv", chosen[:2], extra_uid="9.9.9")
    report = build_manifest(folder, labels, tmp_path / "manifest.csv")
    assert [path for path, _ in report.rejected_files] == [folder / "notes.txt"]
    assert report.unlabelled_studies == [chosen[2].study_instance_uid]
    assert report.labels_without_images == ["9.9.9"]
    by_uid = {row.study_instance_uid: row for row in report.rows}
    assert set(by_uid) == {row.study_instance_uid for row in chosen}
    for row in chosen[:2]:
        imported = by_uid[row.study_instance_uid]
        assert imported.labels == {
            "nodule": row.labels["nodule"],
            "pneumothorax": row.labels["pneumothorax"],
        }
        assert (
            imported.site,
            imported.manufacturer_model,
            imported.sex,
            imported.age,
            imported.ethnicity,
            imported.split,
        ) == (row.site, row.manufacturer_model, row.sex, row.age, row.ethnicity, "test")
    assert by_uid[chosen[2].study_instance_uid].labels == {}


def test_manifest_command_writes_a_manifest_that_reads_back(
    tmp_path: Path, phantom_set: PhantomSet, capsys: pytest.CaptureFixture[str]
) -> None:
    folder, chosen = _hospital_folder(tmp_path, phantom_set)
    labels = _labels(tmp_path / "labels.csv", chosen)
    manifest = tmp_path / "out" / "manifest.csv"
    status = main(
        ["manifest", "--dicom", str(folder), "--labels", str(labels), "--out", str(manifest)]
    )
    assert status == 0
    captured = capsys.readouterr()
    assert "skipped file:" in captured.err and "notes.txt" in captured.err
    rows = read_manifest(manifest)
    assert len(rows) == 3
    for row in rows:
        assert (manifest.parent / row.path).is_dir()


def test_labels_outside_zero_one_are_rejected(tmp_path: Path, phantom_set: PhantomSet) -> None:
    folder, _ = _hospital_folder(tmp_path, phantom_set)
    labels = tmp_path / "labels.csv"
    labels.write_text("study_instance_uid,nodule\n1.2.3,yes\n")
    with pytest.raises(ManifestError, match="line 2: column 'nodule' must be 0 or 1"):
        build_manifest(folder, labels, tmp_path / "manifest.csv")
