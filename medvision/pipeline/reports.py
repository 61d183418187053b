"""Write an analysis run's findings as DICOM SR documents (``medvision predict --dicom-out``).

One TID 1500 Comprehensive 3D SR per analysed study
(:func:`medvision.dicom.structured_report.study_report`), at
``OUT/<StudyInstanceUID>/SR_<SOPInstanceUID>.dcm``. When ``OUT/<StudyInstanceUID>``
already holds medvision SR documents of the study (an earlier analysis written to the
same place), the new document supersedes them: it lists them in its Predecessor
Documents Sequence, and they are left in place, so nothing is lost.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from pydicom import Dataset
from pydicom.uid import generate_uid

from medvision.dicom.reading import read_header
from medvision.dicom.structured_report import study_report
from medvision.pipeline.overlays import OverlayFile, instance_headers
from medvision.pipeline.results import AnalysisRun

#: File-name prefix of the SR documents.
SR_PREFIX = "SR_"


def earlier_reports(folder: Path) -> list[Dataset]:
    """Return the medvision SR documents already in a study's output folder (oldest name first)."""
    return [read_header(path) for path in sorted(folder.glob(f"{SR_PREFIX}*.dcm"))]


def write_structured_reports(
    run: AnalysisRun, paths: Sequence[Path], out: Path
) -> list[OverlayFile]:
    """Write one SR document per analysed study of ``run`` into ``out``; return what was written.

    Parameters
    ----------
    run
        The analysis run (with explanations, the flagged findings get points).
    paths
        The files and folders the run analysed (the source images, as evidence).
    out
        Output folder (created); one sub-folder per study.

    Returns
    -------
    list of OverlayFile
        One per document (``finding`` empty, ``referenced_uid`` the document's UID).
    """
    by_study: dict[str, list[Dataset]] = {}
    for _, header in instance_headers(paths).values():
        by_study.setdefault(str(header.get("StudyInstanceUID", "")), []).append(header)
    written: list[OverlayFile] = []
    for result in run.results:
        uid = result.study_instance_uid
        folder = out / uid
        supersedes = earlier_reports(folder) if folder.is_dir() else []
        document = study_report(
            result,
            by_study.get(uid, []),
            series_instance_uid=generate_uid(),
            supersedes=supersedes,
        )
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{SR_PREFIX}{document.SOPInstanceUID}.dcm"
        document.save_as(path, enforce_file_format=True)
        written.append(OverlayFile(path, uid, "", str(document.SOPInstanceUID)))
    return written
