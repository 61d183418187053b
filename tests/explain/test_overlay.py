"""The overlay: the image untouched where there is no heat, the heat in colour, a legend below."""

from __future__ import annotations

import numpy as np
import pytest
from matplotlib import colormaps

from medvision.explain.overlay import (
    MAX_OPACITY,
    NOT_FOR_DIAGNOSIS,
    legend_lines,
    render_overlay,
)
from medvision.grading import DR_GRADE, decode_grade
from medvision.modality import FINDING_NAMES, all_findings


def _image_and_heat() -> tuple[np.ndarray, np.ndarray]:
    image = np.tile(np.linspace(0.0, 1000.0, 200, dtype=np.float32), (120, 1))
    heat = np.zeros((120, 200), dtype=np.float32)
    heat[40:60, 100:140] = 1.0
    return image, heat


def test_the_image_is_kept_where_there_is_no_heat_and_coloured_where_there_is() -> None:
    image, heat = _image_and_heat()
    picture = render_overlay(image, heat, legend_lines("nodule", 0.8, 0.5), peak=None)
    assert picture.dtype == np.uint8
    assert picture.shape[1:] == (200, 3)
    low, high = np.percentile(image, [0.5, 99.5])
    grey = np.round(np.clip((image - low) / (high - low), 0, 1) * 255).astype(np.uint8)
    untouched = picture[:120][heat == 0]
    assert np.array_equal(untouched, np.repeat(grey[heat == 0][:, None], 3, axis=1))
    hot = (1 - MAX_OPACITY) * (grey[50, 120] / 255.0) + MAX_OPACITY * np.array(
        colormaps["inferno"](1.0)[:3]
    )
    assert np.abs(picture[50, 120].astype(int) - np.round(hot * 255)).max() <= 1


def test_the_legend_is_a_band_below_the_image_and_names_the_decision() -> None:
    image, heat = _image_and_heat()
    lines = legend_lines("pleural_effusion", 0.873, 0.42)
    assert lines == [
        "pleural effusion: probability 0.87 (threshold 0.42) - FLAGGED",
        NOT_FOR_DIAGNOSIS,
    ]
    assert legend_lines("nodule", 0.1, 0.42)[0].endswith("- not flagged")
    grade = decode_grade(DR_GRADE, True, 0.9, (3.0, 2.0, -2.0))
    assert legend_lines("referable_dr", 0.9, 0.27, grade) == [
        "referable diabetic retinopathy: probability 0.90 (threshold 0.27) - FLAGGED",
        "DR grade 3: severe non-proliferative DR",
        NOT_FOR_DIAGNOSIS,
    ]
    picture = render_overlay(image, heat, lines, peak=(50, 120))
    band = picture[120:]
    assert band.shape[0] > 0
    assert band.any()  # the text
    assert (band == 0).mean() > 0.5  # on black


def test_colour_images_stay_in_colour_and_a_mismatched_heatmap_is_refused() -> None:
    colour = np.zeros((64, 80, 3), dtype=np.float32)
    colour[..., 0] = 200.0
    colour[0, 0] = (0.0, 0.0, 0.0)
    picture = render_overlay(colour, np.zeros((64, 80)), ["x"])
    assert tuple(picture[10, 10]) == (255, 0, 0)
    with pytest.raises(
        ValueError, match=r"heatmap \(64, 81\) does not match the image's \(64, 80\)"
    ):
        render_overlay(colour, np.zeros((64, 81)), ["x"])


def test_every_finding_has_a_readable_name_in_the_legend() -> None:
    assert legend_lines("referable_dr", 0.5, 0.2)[0].startswith("referable diabetic retinopathy:")
    assert legend_lines("malignancy_left", 0.5, 0.2)[0].startswith("malignancy, left breast:")
    assert set(FINDING_NAMES) == set(all_findings())
