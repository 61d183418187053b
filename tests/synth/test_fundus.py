from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from pydicom.uid import OphthalmicPhotography8BitImageStorage
from scipy import ndimage

from medvision.modality import Modality
from medvision.synth import fundus
from medvision.synth.conspicuity import contrast_to_noise
from medvision.synth.fundus import (
    COLUMNS,
    FOV_EDGE_PX,
    FOV_RADIUS_FRACTION,
    LESION_TYPES,
    MILD_MAX_MICROANEURYSMS,
    ROWS,
    SEVERE_MIN_HAEMORRHAGES,
    LesionCounts,
    dr_grade,
)
from medvision.synth.generator import SynthConfig, make_spec
from medvision.synth.study import GeneratedStudy, StudySpec


def _spec(out: Path, index: int, prevalence: float | None = None, seed: int = 11) -> StudySpec:
    chosen = {} if prevalence is None else {"referable_dr": prevalence}
    config = SynthConfig((Modality.FUNDUS,), index + 1, seed, out, prevalence=chosen)
    return make_spec(config, Modality.FUNDUS, index)


def _pixels(study: GeneratedStudy) -> np.ndarray:
    return np.asarray(study.instances[0].pixel_array)


@pytest.mark.parametrize(
    ("counts", "grade"),
    [
        (LesionCounts(), 0),
        (LesionCounts(microaneurysm=1), 1),
        (LesionCounts(microaneurysm=MILD_MAX_MICROANEURYSMS), 1),
        (LesionCounts(microaneurysm=MILD_MAX_MICROANEURYSMS + 1), 2),
        (LesionCounts(haemorrhage=1), 2),
        (LesionCounts(hard_exudate=1), 2),
        (LesionCounts(microaneurysm=3, haemorrhage=SEVERE_MIN_HAEMORRHAGES - 1), 2),
        (LesionCounts(haemorrhage=SEVERE_MIN_HAEMORRHAGES), 3),
        (LesionCounts(neovascularisation=1), 4),
        (LesionCounts(microaneurysm=9, haemorrhage=40, hard_exudate=9, neovascularisation=2), 4),
    ],
)
def test_dr_grade_follows_the_rule_at_each_boundary(counts: LesionCounts, grade: int) -> None:
    assert dr_grade(counts) == grade


def test_same_spec_gives_identical_pixels_masks_and_annotations(tmp_path: Path) -> None:
    spec = _spec(tmp_path, 3, prevalence=1.0)
    first = fundus.generate_study(spec)
    second = fundus.generate_study(spec)
    assert first.instances[0].PixelData == second.instances[0].PixelData
    assert first.instances[0].SOPInstanceUID == second.instances[0].SOPInstanceUID
    assert first.masks.keys() == second.masks.keys()
    for key, mask in first.masks.items():
        assert np.array_equal(mask, second.masks[key])
    assert first.annotations == second.annotations
    assert (first.labels, first.extra_columns) == (second.labels, second.extra_columns)


def test_annotations_are_json_serialisable(tmp_path: Path) -> None:
    study = fundus.generate_study(_spec(tmp_path, 3, prevalence=1.0))
    assert json.loads(json.dumps(study.annotations)) == study.annotations


def test_instance_is_an_8_bit_rgb_ophthalmic_photograph(tmp_path: Path) -> None:
    study = fundus.generate_study(_spec(tmp_path, 0))
    assert len(study.instances) == 1
    ds = study.instances[0]
    assert ds.SOPClassUID == OphthalmicPhotography8BitImageStorage
    assert ds.Modality == "OP"
    assert (ds.Rows, ds.Columns, ds.SamplesPerPixel) == (ROWS, COLUMNS, 3)
    assert (ds.BitsAllocated, ds.BitsStored, ds.PhotometricInterpretation) == (8, 8, "RGB")
    assert ds.ImageLaterality == study.annotations["images"][0]["laterality"]
    assert _pixels(study).dtype == np.uint8


@pytest.mark.parametrize("index", range(8))
def test_label_and_masks_agree_with_lesion_counts(tmp_path: Path, index: int) -> None:
    study = fundus.generate_study(_spec(tmp_path, index, prevalence=0.5))
    counts = LesionCounts(**study.annotations["lesion_counts"])
    grade = dr_grade(counts)
    sop_uid = study.instances[0].SOPInstanceUID
    assert study.annotations["dr_grade"] == grade
    assert study.extra_columns == {"dr_grade": grade}
    assert study.labels == {"referable_dr": int(grade >= 2)}
    assert set(study.masks) == {f"{sop_uid}/{kind}" for kind in LESION_TYPES}
    for kind in LESION_TYPES:
        mask = study.masks[f"{sop_uid}/{kind}"]
        assert mask.shape == (ROWS, COLUMNS)
        assert mask.dtype == np.uint8
        count = getattr(counts, kind)
        records = [r for r in study.annotations["lesions"] if r["type"] == kind]
        assert len(records) == count
        assert bool(mask.any()) == (count > 0)
        for record in records:
            r0, c0, r1, c1 = record["box"]
            assert mask[r0 : r1 + 1, c0 : c1 + 1].any()
            assert record["sop_instance_uid"] == sop_uid


def test_prevalence_one_makes_every_study_referable(tmp_path: Path) -> None:
    grades = [
        fundus.generate_study(_spec(tmp_path, i, prevalence=1.0)).annotations["dr_grade"]
        for i in range(4)
    ]
    assert all(g >= 2 for g in grades)


def test_prevalence_zero_makes_no_study_referable(tmp_path: Path) -> None:
    labels = [
        fundus.generate_study(_spec(tmp_path, i, prevalence=0.0)).labels["referable_dr"]
        for i in range(4)
    ]
    assert labels == [0, 0, 0, 0]


def test_low_conspicuity_device_shows_the_same_lesions_with_less_contrast(
    tmp_path: Path,
) -> None:
    spec = _spec(tmp_path, 2, prevalence=1.0)
    faint = replace(spec, device=spec.device.with_conspicuity(0.5))
    clear_study = fundus.generate_study(spec)
    faint_study = fundus.generate_study(faint)
    assert clear_study.annotations["lesions"] == faint_study.annotations["lesions"]
    faint_cnr = contrast_to_noise(faint_study, Modality.FUNDUS)
    assert 0 < faint_cnr < 0.75 * contrast_to_noise(clear_study, Modality.FUNDUS)


def test_pixels_are_zero_outside_the_field_of_view(tmp_path: Path) -> None:
    pixels = _pixels(fundus.generate_study(_spec(tmp_path, 1, prevalence=1.0)))
    rr, cc = np.mgrid[0:ROWS, 0:COLUMNS]
    radius = np.hypot(rr - (ROWS - 1) / 2, cc - (COLUMNS - 1) / 2)
    outside = radius > FOV_RADIUS_FRACTION * COLUMNS + 4 * FOV_EDGE_PX
    inside = radius < FOV_RADIUS_FRACTION * COLUMNS - 4 * FOV_EDGE_PX
    assert not pixels[outside].any()
    assert (pixels[inside][:, 0] > 0).mean() > 0.99


def test_optic_disc_is_on_the_nasal_side_for_each_eye(tmp_path: Path) -> None:
    seen = set()
    for index in range(6):
        study = fundus.generate_study(_spec(tmp_path, index, prevalence=0.0))
        image = study.annotations["images"][0]
        laterality = image["laterality"]
        seen.add(laterality)
        disc_col = image["optic_disc"]["centre_rc"][1]
        fovea_col = image["fovea_rc"][1]
        # Right eye: the disc (nasal) is on the right of the image; left eye: mirrored.
        assert (disc_col > COLUMNS / 2) == (laterality == "R")
        assert (disc_col > fovea_col) == (laterality == "R")
        green = ndimage.gaussian_filter(_pixels(study)[..., 1].astype(float), 8.0)
        r, c = np.unravel_index(int(np.argmax(green)), green.shape)
        assert (
            np.hypot(r - image["optic_disc"]["centre_rc"][0], c - disc_col)
            < (image["optic_disc"]["radius_px"])
        )
    assert seen == {"R", "L"}
