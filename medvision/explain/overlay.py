"""Render a heatmap over its source image with a burned-in legend (RGB, 8 bits).

The picture a radiologist sees beside the study: the source image in grey (its
presentation values, windowed to their 0.5th-99.5th percentiles, colour fundus
images in colour), the heatmap in the ``inferno`` colour map blended in where it is
above :data:`SHOW_FROM` (opacity rising with the heat, so low values leave the
anatomy visible), a cross at the heatmap's peak, and a legend band at the bottom:

    <finding>: probability 0.87 (threshold 0.42) - FLAGGED
    DR grade 3: severe non-proliferative DR        (where the model grades the finding)
    AI result - not for primary diagnosis

The same rendering serves ``medvision explain`` (PNG files) and the DICOM
Secondary Capture objects (whose BurnedInAnnotation is YES because of the legend).
"""

from __future__ import annotations

import numpy as np
from matplotlib import colormaps, font_manager
from numpy.typing import NDArray
from PIL import Image, ImageDraw, ImageFont

from medvision.grading import Grade
from medvision.modality import finding_name

#: Heat below this is not drawn.
SHOW_FROM = 0.2
#: Opacity of the heatmap where it is 1.
MAX_OPACITY = 0.6
#: The warning every rendering carries.
NOT_FOR_DIAGNOSIS = "AI result - not for primary diagnosis"


def _grey(image: NDArray[np.floating]) -> NDArray[np.float64]:
    low, high = np.percentile(image, [0.5, 99.5])
    scale = high - low if high > low else 1.0
    return np.clip((image - low) / scale, 0.0, 1.0)


def _base_rgb(image: NDArray[np.floating]) -> NDArray[np.float64]:
    if image.ndim == 2:
        return np.repeat(_grey(image)[..., None], 3, axis=2)
    if image.ndim == 3 and image.shape[2] == 3:
        return _grey(image)
    raise ValueError(f"expected a (rows, columns) or (rows, columns, 3) image, got {image.shape}")


def _legend_font(lines: list[str], width: int, size: int) -> tuple[int, ImageFont.FreeTypeFont]:
    """Return the largest font size up to ``size`` whose lines fit ``width`` (at least 6)."""
    path = font_manager.findfont("DejaVu Sans")
    while True:
        font = ImageFont.truetype(path, size)
        if size <= 6 or all(font.getlength(line) <= width - size for line in lines):
            return size, font
        size -= 1


def legend_lines(
    finding: str, probability: float, threshold: float, grade: Grade | None = None
) -> list[str]:
    """Return the legend's lines for one finding, with its grade if it has one."""
    verdict = "FLAGGED" if probability >= threshold else "not flagged"
    name = finding_name(finding)
    graded = [] if grade is None else [str(grade)]
    return [
        f"{name}: probability {probability:.2f} (threshold {threshold:.2f}) - {verdict}",
        *graded,
        NOT_FOR_DIAGNOSIS,
    ]


def render_overlay(
    image: NDArray[np.floating],
    heatmap: NDArray[np.floating],
    lines: list[str],
    peak: tuple[int, int] | None = None,
) -> NDArray[np.uint8]:
    """Blend ``heatmap`` over ``image`` and add a legend band; return ``(rows', columns, 3)``.

    Parameters
    ----------
    image
        The source image, ``(rows, columns)`` grey or ``(rows, columns, 3)`` colour,
        in presentation values (any range).
    heatmap
        ``(rows, columns)`` in ``[0, 1]`` on the same grid.
    lines
        Legend text (e.g. :func:`legend_lines`); drawn in a black band added below
        the image, so no pixel of the image is hidden.
    peak
        ``(row, column)`` to mark with a cross, or ``None``.

    Raises
    ------
    ValueError
        If the heatmap's grid differs from the image's.
    """
    rows, columns = image.shape[:2]
    if heatmap.shape != (rows, columns):
        raise ValueError(f"heatmap {heatmap.shape} does not match the image's {(rows, columns)}")
    heat = np.clip(np.asarray(heatmap, dtype=np.float64), 0.0, 1.0)
    colours = colormaps["inferno"](heat)[..., :3]
    opacity = np.where(heat >= SHOW_FROM, MAX_OPACITY * heat, 0.0)[..., None]
    blended = (1.0 - opacity) * _base_rgb(np.asarray(image, dtype=np.float64)) + opacity * colours
    picture = Image.fromarray(np.round(blended * 255).astype(np.uint8), mode="RGB")
    size, font = _legend_font(lines, columns, max(10, min(rows, columns) // 28))
    band = (size + size // 2) * len(lines) + size
    canvas = Image.new("RGB", (columns, rows + band), (0, 0, 0))
    canvas.paste(picture, (0, 0))
    draw = ImageDraw.Draw(canvas)
    if peak is not None:
        row, column = peak
        arm = max(4, size // 2)
        draw.line([(column - arm, row), (column + arm, row)], fill=(0, 255, 255), width=2)
        draw.line([(column, row - arm), (column, row + arm)], fill=(0, 255, 255), width=2)
    for index, line in enumerate(lines):
        draw.text((size // 2, rows + size // 2 + index * (size + size // 2)), line, font=font)
    return np.asarray(canvas, dtype=np.uint8)
