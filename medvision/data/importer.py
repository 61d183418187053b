"""Build a manifest from a hospital's folder of DICOM studies and a CSV of labels."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from medvision.data.manifest import ManifestRow, iter_study_cells
from medvision.dicom.reading import age_in_years, modality_of, scan_folder
from medvision.modality import EXTRA_COLUMNS, FINDINGS, Modality


@dataclass
class ImportReport:
    """What an import did, so that nothing is dropped silently.

    Attributes
    ----------
    rows
        The manifest rows written.
    rejected_files
        Files that are not usable DICOM, with the reason.
    unlabelled_studies
        Studies found in the folder with no row in the labels CSV (written with
        empty labels, i.e. not assessed).
    labels_without_images
        Labels CSV rows whose study is not in the folder (not written).
    unserved_studies
        Studies of a DICOM modality no medvision model serves (not written), with it.
    """

    rows: list[ManifestRow] = field(default_factory=list)
    rejected_files: list[tuple[Path, str]] = field(default_factory=list)
    unlabelled_studies: list[str] = field(default_factory=list)
    labels_without_images: list[str] = field(default_factory=list)
    unserved_studies: list[tuple[str, str]] = field(default_factory=list)


def read_labels(path: Path) -> dict[str, dict[str, str]]:
    """Read a labels CSV keyed by ``study_instance_uid``.

    Raises
    ------
    ManifestError
        If the column ``study_instance_uid`` is missing, a study appears twice,
        or a finding cell is not 0, 1 or empty.
    """
    return {uid: cells for _, uid, cells, _ in iter_study_cells(path, ("study_instance_uid",))}


def _relative(path: Path, start: Path) -> Path:
    try:
        return Path(os.path.relpath(path.resolve(), start.resolve()))
    except ValueError:  # another drive on Windows
        return path.resolve()


def build_manifest(dicom_folder: Path, labels_csv: Path, manifest_path: Path) -> ImportReport:
    """Scan ``dicom_folder``, join it with ``labels_csv`` and return the manifest rows.

    Site, device and demographic columns come from each study's DICOM header
    (``InstitutionName``, ``Manufacturer``, ``ManufacturerModelName``,
    ``PatientSex``, ``PatientAge``, ``EthnicGroup``, ``PatientID``); labels,
    ``split`` and any extra ground-truth columns come from the CSV. ``path`` is
    the folder that holds the study's files, relative to the manifest.

    Raises
    ------
    ManifestError
        If the labels CSV is malformed.
    """
    labels = read_labels(labels_csv)
    scan = scan_folder(dicom_folder)
    report = ImportReport(rejected_files=scan.rejected)
    for uid, files in scan.studies.items():
        header = files[0][1]
        modality = modality_of(header)
        label_cells = labels.get(uid)
        if label_cells and label_cells.get("modality"):
            modality = Modality.parse(label_cells["modality"])
        if modality is None:
            report.unserved_studies.append((uid, str(header.get("Modality", ""))))
            continue
        if label_cells is None:
            report.unlabelled_studies.append(uid)
            label_cells = {}
        folders = {path.parent for path, _ in files}
        common = Path(os.path.commonpath([str(f) for f in folders]))
        row_labels = {
            name: int(label_cells[name])
            for name in FINDINGS[modality]
            if label_cells.get(name, "") != ""
        }
        extra = {
            name: label_cells[name]
            for name in EXTRA_COLUMNS[modality]
            if label_cells.get(name, "") != ""
        }
        report.rows.append(
            ManifestRow(
                study_instance_uid=uid,
                modality=modality,
                path=_relative(common, manifest_path.parent),
                site=str(header.get("InstitutionName", "")),
                manufacturer=str(header.get("Manufacturer", "")),
                manufacturer_model=str(header.get("ManufacturerModelName", "")),
                sex=str(header.get("PatientSex", "")),
                age=age_in_years(header),
                ethnicity=str(header.get("EthnicGroup", "")),
                split=label_cells.get("split", ""),
                patient_id=label_cells.get("patient_id") or str(header.get("PatientID", "")),
                labels=row_labels,
                extra=extra,
            )
        )
    report.labels_without_images = sorted(set(labels) - set(scan.studies))
    report.rows.sort(key=lambda row: (row.modality.value, row.study_instance_uid))
    return report
