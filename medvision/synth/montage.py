"""Render a montage of studies from a manifest, for people who want to look at a set."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from numpy.typing import NDArray
from pydicom import Dataset

from medvision.data.manifest import ManifestRow, resolve
from medvision.dicom.reading import iter_files, pixel_values, read_instance
from medvision.modality import Modality, mammography_view_rank

#: CT lung window (centre, width) in HU.
LUNG_WINDOW = (-600.0, 1500.0)


def display_image(ds: Dataset) -> NDArray[np.float32]:
    """Return an image scaled to ``[0, 1]`` for display (percentile window, RGB unchanged)."""
    values = pixel_values(ds)
    if values.ndim == 3:
        return np.clip(values / 255.0, 0.0, 1.0).astype(np.float32)
    low, high = np.percentile(values, [0.5, 99.5])
    return np.clip((values - low) / max(float(high - low), 1e-6), 0.0, 1.0).astype(np.float32)


def _ct_slice(datasets: list[Dataset], annotations: dict[str, object]) -> NDArray[np.float32]:
    ordered = sorted(datasets, key=lambda ds: int(ds.InstanceNumber))
    nodules = annotations.get("nodules") or []
    index = len(ordered) // 2
    if isinstance(nodules, list) and nodules:
        largest = max(nodules, key=lambda n: float(n["diameter_mm"]))
        index = int(largest["centre_voxel_zyx"][0])
    centre, width = LUNG_WINDOW
    hu = pixel_values(ordered[index])
    return np.clip((hu - (centre - width / 2)) / width, 0.0, 1.0).astype(np.float32)


def study_picture(row: ManifestRow, manifest_path: Path) -> NDArray[np.float32]:
    """Return one picture of a study: the image, four mammography views, or a CT slice.

    CT shows the axial slice through the largest nodule (the middle slice when
    there is none) in the lung window.
    """
    datasets = [read_instance(p) for p in iter_files(resolve(manifest_path, row.path))]
    datasets = [ds for ds in datasets if ds.StudyInstanceUID == row.study_instance_uid]
    annotations: dict[str, object] = {}
    if row.annotations is not None:
        annotations = json.loads(resolve(manifest_path, row.annotations).read_text())
    if row.modality == Modality.CT:
        return _ct_slice(datasets, annotations)
    if row.modality == Modality.MAMMO:
        datasets.sort(key=mammography_view_rank)
        return np.concatenate([display_image(ds) for ds in datasets], axis=1)
    return display_image(datasets[0])


def render_montage(
    rows: Sequence[ManifestRow], manifest_path: Path, out: Path, columns: int = 3
) -> None:
    """Render ``rows`` as a captioned grid (device and positive findings) to a PNG file."""
    count = len(rows)
    grid_rows = max(1, -(-count // columns))
    first = study_picture(rows[0], manifest_path)
    aspect = first.shape[1] / first.shape[0]
    figure, axes = plt.subplots(
        grid_rows,
        columns,
        figsize=(columns * 3.2 * min(aspect, 2.5), grid_rows * 3.6),
        squeeze=False,
    )
    for axis in axes.ravel():
        axis.axis("off")
    for axis, row in zip(axes.ravel(), rows, strict=False):
        picture = first if row is rows[0] else study_picture(row, manifest_path)
        axis.imshow(picture, cmap=None if picture.ndim == 3 else "gray", vmin=0.0, vmax=1.0)
        positives = [name for name, value in row.labels.items() if value == 1]
        extra = ", ".join(f"{k} {v}" for k, v in row.extra.items())
        caption = f"{row.manufacturer_model}\n{', '.join(positives) or 'no finding'}"
        axis.set_title(caption + (f"; {extra}" if extra else ""), fontsize=8)
    figure.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out, dpi=110)
    plt.close(figure)
