"""Write the heatmaps of an analysis run as PNG overlays or DICOM Secondary Capture images.

One file per heatmap: the source image as displayed (grayscale presentation
values, :func:`~medvision.dicom.reading.presentation_values`; colour images as
stored), the heatmap and the legend of :func:`medvision.explain.render_overlay`,
at ``OUT/<StudyInstanceUID>/<model>_<finding>[_<laterality>]_<n>.png``. File names
carry UIDs and model and finding names only, no patient data.

:func:`write_secondary_captures` writes the same pictures as DICOM Secondary Capture
images in the source study (``medvision predict --dicom-out``).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray
from PIL import Image
from pydicom import Dataset
from pydicom.uid import generate_uid

from medvision.dicom.reading import (
    DicomReadError,
    iter_files,
    pixel_values,
    presentation_values,
    read_header,
    read_instance,
)
from medvision.dicom.secondary_capture import heatmap_secondary_capture
from medvision.explain.heatmaps import Heatmap
from medvision.explain.overlay import legend_lines, render_overlay
from medvision.pipeline.results import AnalysisRun, Finding, StudyResult

#: SeriesNumber of the heatmap series medvision adds to a study.
HEATMAP_SERIES_NUMBER = 9001


@dataclass(frozen=True)
class OverlayFile:
    """One written overlay: where, and what it shows."""

    path: Path
    study_instance_uid: str
    finding: str
    referenced_uid: str


def display_image(ds: Dataset) -> NDArray[np.float32]:
    """Return an image as it is displayed: grayscale presentation values, or colour as stored.

    Raises
    ------
    DicomReadError
        If the pixel data cannot be decoded.
    """
    if int(ds.get("SamplesPerPixel", 1)) > 1:
        return pixel_values(ds)
    return presentation_values(ds)


def instance_headers(paths: Sequence[Path]) -> dict[str, tuple[Path, Dataset]]:
    """Return the file and header of each SOPInstanceUID below ``paths`` (non-DICOM skipped)."""
    found: dict[str, tuple[Path, Dataset]] = {}
    for root in paths:
        for path in [root] if root.is_file() else iter_files(root):
            try:
                header = read_header(path)
            except DicomReadError:
                continue
            uid = str(header.get("SOPInstanceUID", ""))
            if uid:
                found.setdefault(uid, (path, header))
    return found


@dataclass(frozen=True)
class RenderedHeatmap:
    """One heatmap of a run, rendered over its source image."""

    result: StudyResult
    finding: Finding
    heatmap: Heatmap
    number: int
    source: Dataset
    picture: NDArray[np.uint8]


def rendered_heatmaps(run: AnalysisRun, paths: Sequence[Path]) -> Iterator[RenderedHeatmap]:
    """Yield every heatmap of ``run`` rendered over its source image (result order).

    ``number`` counts the heatmaps of one finding from 1 (mammography has one per view).

    Raises
    ------
    DicomReadError
        If a source image named by a heatmap cannot be found or decoded.
    """
    sources = instance_headers(paths)
    for result in run.results:
        for finding in result.findings:
            for number, heatmap in enumerate(finding.heatmaps, start=1):
                if heatmap.referenced_uid not in sources:
                    raise DicomReadError(
                        f"study {result.study_instance_uid}: the image {heatmap.referenced_uid} "
                        "of a heatmap is not among the analysed files"
                    )
                source = read_instance(sources[heatmap.referenced_uid][0])
                picture = render_overlay(
                    display_image(source),
                    heatmap.values,
                    legend_lines(
                        finding.name, finding.probability, finding.threshold, finding.grade
                    ),
                    heatmap.peak,
                )
                yield RenderedHeatmap(result, finding, heatmap, number, source, picture)


def write_overlays(run: AnalysisRun, paths: Sequence[Path], out: Path) -> list[OverlayFile]:
    """Render every heatmap of ``run`` over its source image into ``out`` as PNG.

    Parameters
    ----------
    run
        An analysis run made with explanations (``analyze(..., explain=...)``).
    paths
        The files and folders the run analysed (to find the source images).
    out
        Folder for the PNG files (created).

    Returns
    -------
    list of OverlayFile
        What was written, in result order.

    Raises
    ------
    DicomReadError
        If a source image named by a heatmap cannot be found or decoded.
    """
    written: list[OverlayFile] = []
    for item in rendered_heatmaps(run, paths):
        uid, finding, heatmap = item.result.study_instance_uid, item.finding, item.heatmap
        side = f"_{heatmap.laterality}" if heatmap.laterality else ""
        folder = out / uid
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{finding.model_name}_{finding.name}{side}_{item.number}.png"
        Image.fromarray(item.picture, mode="RGB").save(path)
        written.append(OverlayFile(path, uid, finding.name, heatmap.referenced_uid))
    return written


def write_secondary_captures(
    run: AnalysisRun, paths: Sequence[Path], out: Path
) -> list[OverlayFile]:
    """Write every heatmap of ``run`` as a DICOM Secondary Capture image into ``out``.

    One new series per study (:data:`HEATMAP_SERIES_NUMBER`), files at
    ``out/<StudyInstanceUID>/SC_<SOPInstanceUID>.dcm``
    (:func:`medvision.dicom.secondary_capture.heatmap_secondary_capture`).

    Raises
    ------
    DicomReadError
        If a source image named by a heatmap cannot be found or decoded.
    """
    series: dict[str, str] = {}
    counts: dict[str, int] = {}
    written: list[OverlayFile] = []
    for item in rendered_heatmaps(run, paths):
        uid, finding = item.result.study_instance_uid, item.finding
        counts[uid] = counts.get(uid, 0) + 1
        image = heatmap_secondary_capture(
            item.source,
            item.picture,
            finding=finding.name,
            probability=finding.probability,
            threshold=finding.threshold,
            model_name=finding.model_name,
            model_version=finding.model_version,
            weights_sha256=finding.weights_sha256,
            series_instance_uid=series.setdefault(uid, generate_uid()),
            series_number=HEATMAP_SERIES_NUMBER,
            instance_number=counts[uid],
            method=item.heatmap.method,
        )
        folder = out / uid
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"SC_{image.SOPInstanceUID}.dcm"
        image.save_as(path, enforce_file_format=True)
        written.append(OverlayFile(path, uid, finding.name, item.heatmap.referenced_uid))
    return written
