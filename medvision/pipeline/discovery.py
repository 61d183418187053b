"""Find the studies in files and folders: header-only reads, grouped by StudyInstanceUID.

Every file given, or found below a folder given, is read without its pixel data
(:func:`medvision.dicom.reading.scan_folder`). DICOM files are grouped by
StudyInstanceUID (0020,000D) and, within a study, by the medvision modality of
their DICOM Modality (0008,0060), so a study is analysed once per modality a
model serves. Everything else becomes a :class:`~medvision.pipeline.results.Problem`:
a file that is not DICOM (or lacks StudyInstanceUID), and a study with no image
of a modality a model serves. Objects of other modalities inside an analysed
study (SR, Secondary Capture, presentation states) are ignored silently: they
are not images to analyse.
"""

from __future__ import annotations

import os
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydicom import Dataset

from medvision.dicom.reading import DICOM_MODALITIES, age_in_years, modality_of, scan_folder
from medvision.modality import Modality
from medvision.pipeline.results import Problem, ProblemKind
from medvision.transforms.loading import STUDY_KEY, UID_KEY


@dataclass(frozen=True)
class DiscoveredStudy:
    """The images of one study of one modality, with what its headers say.

    Attributes
    ----------
    study_instance_uid
        The study.
    modality
        The medvision modality of these images.
    folder
        The narrowest folder holding all of them (what the loader reads).
    files
        The image files, in sorted order.
    site, manufacturer, manufacturer_model, sex, age
        From the first image's header: InstitutionName, Manufacturer,
        ManufacturerModelName, PatientSex, and the age in whole years
        (:func:`~medvision.dicom.reading.age_in_years`).
    """

    study_instance_uid: str
    modality: Modality
    folder: Path
    files: tuple[Path, ...]
    site: str = ""
    manufacturer: str = ""
    manufacturer_model: str = ""
    sex: str = ""
    age: int | None = None

    def item(self) -> dict[str, Any]:
        """Return the data item a scorer's ``prepare`` takes (study folder and UID)."""
        return {STUDY_KEY: str(self.folder), UID_KEY: self.study_instance_uid}


@dataclass
class Discovery:
    """Studies found, and the files and studies that cannot be analysed."""

    studies: list[DiscoveredStudy] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)


def _text(ds: Dataset, keyword: str) -> str:
    return str(ds.get(keyword, "") or "").strip()


def _study(uid: str, modality: Modality, headers: list[tuple[Path, Dataset]]) -> DiscoveredStudy:
    files = tuple(sorted(path for path, _ in headers))
    first = min(headers, key=lambda entry: entry[0])[1]
    folder = Path(os.path.commonpath([str(path.parent) for path in files]))
    return DiscoveredStudy(
        study_instance_uid=uid,
        modality=modality,
        folder=folder,
        files=files,
        site=_text(first, "InstitutionName"),
        manufacturer=_text(first, "Manufacturer"),
        manufacturer_model=_text(first, "ManufacturerModelName"),
        sex=_text(first, "PatientSex"),
        age=age_in_years(first),
    )


def discover(paths: Sequence[Path], served: Collection[Modality]) -> Discovery:
    """Group the DICOM files under ``paths`` into studies (see the module docstring).

    Parameters
    ----------
    paths
        Files and folders (searched recursively); a file reached twice counts once.
    served
        The modalities some model serves; studies of others become problems.

    Returns
    -------
    Discovery
        Studies in the order their first file was found, and the problems.
    """
    discovery = Discovery()
    seen: set[Path] = set()
    studies: dict[str, list[tuple[Path, Dataset]]] = {}
    for root in paths:
        scan = scan_folder(root)
        for path, reason in scan.rejected:
            if path.resolve() not in seen:
                seen.add(path.resolve())
                prefix = f"{path}: "
                detail = reason[len(prefix) :] if reason.startswith(prefix) else reason
                discovery.problems.append(Problem(ProblemKind.NOT_DICOM, detail, path=path))
        for uid, headers in scan.studies.items():
            for path, ds in headers:
                if path.resolve() not in seen:
                    seen.add(path.resolve())
                    studies.setdefault(uid, []).append((path, ds))
    for uid, headers in studies.items():
        by_modality: dict[Modality, list[tuple[Path, Dataset]]] = {}
        for path, ds in headers:
            modality = modality_of(ds)
            if modality is not None:
                by_modality.setdefault(modality, []).append((path, ds))
        if not by_modality:
            found = ", ".join(sorted({_text(ds, "Modality") or "?" for _, ds in headers}))
            served_codes = ", ".join(DICOM_MODALITIES)
            discovery.problems.append(
                Problem(
                    ProblemKind.UNSERVED_MODALITY,
                    f"DICOM Modality {found}; medvision analyses {served_codes} images",
                    study_instance_uid=uid,
                )
            )
            continue
        for modality in Modality:
            if modality not in by_modality:
                continue
            if modality in served:
                discovery.studies.append(_study(uid, modality, by_modality[modality]))
                continue
            codes = ", ".join(sorted({_text(ds, "Modality") for _, ds in by_modality[modality]}))
            discovery.problems.append(
                Problem(
                    ProblemKind.UNSERVED_MODALITY,
                    f"{modality.value} images (DICOM Modality {codes}) but no "
                    f"{modality.value} model in the registry",
                    study_instance_uid=uid,
                )
            )
    return discovery
