"""Write the heatmaps of an analysis run as PNG overlays (``medvision explain``).

One file per heatmap: the source image as displayed (grayscale presentation
values, :func:`~medvision.dicom.reading.presentation_values`; colour images as
stored), the heatmap and the legend of :func:`medvision.explain.render_overlay`,
at ``OUT/<StudyInstanceUID>/<model>_<finding>[_<laterality>]_<n>.png``. File names
carry UIDs and model and finding names only, no patient data.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray
from PIL import Image
from pydicom import Dataset

from medvision.dicom.reading import (
    DicomReadError,
    iter_files,
    pixel_values,
    presentation_values,
    read_header,
    read_instance,
)
from medvision.explain.overlay import legend_lines, render_overlay
from medvision.pipeline.results import AnalysisRun


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


def instance_paths(paths: Sequence[Path]) -> dict[str, Path]:
    """Return the file of each SOPInstanceUID found below ``paths`` (non-DICOM files skipped)."""
    found: dict[str, Path] = {}
    for root in paths:
        for path in [root] if root.is_file() else iter_files(root):
            try:
                uid = str(read_header(path).get("SOPInstanceUID", ""))
            except DicomReadError:
                continue
            if uid:
                found.setdefault(uid, path)
    return found


def write_overlays(run: AnalysisRun, paths: Sequence[Path], out: Path) -> list[OverlayFile]:
    """Render every heatmap of ``run`` over its source image into ``out``.

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
    sources = instance_paths(paths)
    written: list[OverlayFile] = []
    for result in run.results:
        for finding in result.findings:
            for number, heatmap in enumerate(finding.heatmaps, start=1):
                if heatmap.referenced_uid not in sources:
                    raise DicomReadError(
                        f"study {result.study_instance_uid}: the image {heatmap.referenced_uid} "
                        "of a heatmap is not among the analysed files"
                    )
                image = display_image(read_instance(sources[heatmap.referenced_uid]))
                picture = render_overlay(
                    image,
                    heatmap.values,
                    legend_lines(finding.name, finding.probability, finding.threshold),
                    heatmap.peak,
                )
                side = f"_{heatmap.laterality}" if heatmap.laterality else ""
                folder = out / result.study_instance_uid
                folder.mkdir(parents=True, exist_ok=True)
                path = folder / f"{finding.model_name}_{finding.name}{side}_{number}.png"
                Image.fromarray(picture, mode="RGB").save(path)
                written.append(
                    OverlayFile(
                        path, result.study_instance_uid, finding.name, heatmap.referenced_uid
                    )
                )
    return written
