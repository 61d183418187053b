"""Write an analysis run's findings as DICOM SR and SEG objects (``predict --dicom-out``).

One TID 1500 Comprehensive 3D SR per analysed study
(:func:`medvision.dicom.structured_report.study_report`), at
``OUT/<StudyInstanceUID>/SR_<SOPInstanceUID>.dcm``; and for each finding with a
segmentation mask (CT nodules), a binary SEG of its series
(:func:`medvision.dicom.segmentation.nodule_segmentation`) at
``OUT/<StudyInstanceUID>/SEG_<SOPInstanceUID>.dcm``. When ``OUT/<StudyInstanceUID>``
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
from medvision.dicom.segmentation import nodule_segmentation
from medvision.dicom.structured_report import study_report
from medvision.pipeline.overlays import OverlayFile, instance_headers
from medvision.pipeline.results import AnalysisRun

#: File-name prefix of the SR documents.
SR_PREFIX = "SR_"


def study_headers(paths: Sequence[Path]) -> dict[str, list[Dataset]]:
    """Return the headers of the DICOM images below ``paths``, by StudyInstanceUID."""
    by_study: dict[str, list[Dataset]] = {}
    for _, header in instance_headers(paths).values():
        by_study.setdefault(str(header.get("StudyInstanceUID", "")), []).append(header)
    return by_study


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
    by_study = study_headers(paths)
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


def _mask_series(headers: Sequence[Dataset], mask_shape: tuple[int, ...]) -> list[Dataset]:
    """Return the CT slices of the one series whose (slices, rows, columns) fit the mask."""
    series: dict[str, list[Dataset]] = {}
    for header in headers:
        if str(header.get("Modality", "")) == "CT":
            series.setdefault(str(header.SeriesInstanceUID), []).append(header)
    fitting = [
        slices
        for slices in series.values()
        if (len(slices), int(slices[0].Rows), int(slices[0].Columns)) == mask_shape
    ]
    if len(fitting) != 1:
        raise ValueError(
            f"{len(fitting)} CT series of the study fit a mask of shape {mask_shape}; need one"
        )
    return fitting[0]


def write_segmentations(run: AnalysisRun, paths: Sequence[Path], out: Path) -> list[OverlayFile]:
    """Write a binary SEG for each finding of ``run`` that has a mask; return what was written.

    Raises
    ------
    ValueError
        If a mask does not fit exactly one CT series of its study.
    """
    by_study = study_headers(paths)
    written: list[OverlayFile] = []
    for result in run.results:
        for finding in result.findings:
            if finding.mask is None:
                continue
            mask = finding.mask
            slices = _mask_series(by_study.get(result.study_instance_uid, []), tuple(mask.shape))
            segmentation = nodule_segmentation(
                slices,
                mask,
                model_name=finding.model_name,
                model_version=finding.model_version,
                weights_sha256=finding.weights_sha256,
                series_instance_uid=generate_uid(),
            )
            folder = out / result.study_instance_uid
            folder.mkdir(parents=True, exist_ok=True)
            path = folder / f"SEG_{segmentation.SOPInstanceUID}.dcm"
            segmentation.save_as(path, enforce_file_format=True)
            uids = (result.study_instance_uid, finding.name, str(segmentation.SOPInstanceUID))
            written.append(OverlayFile(path, *uids))
    return written
