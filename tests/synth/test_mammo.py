"""Behaviour of the screening mammography phantom (``medvision.synth.mammo``)."""

from __future__ import annotations

import copy
import json
import shutil
import subprocess
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from numpy.typing import NDArray
from pydicom import Dataset
from pydicom.uid import DigitalMammographyXRayImageStorageForPresentation, ExplicitVRLittleEndian

from medvision.modality import FINDINGS, Modality
from medvision.synth import mammo
from medvision.synth.generator import SynthConfig, make_spec
from medvision.synth.mammo import plan_study
from medvision.synth.study import GeneratedStudy, StudySpec


def spec_for(tmp_path: Path, index: int, malignancy: float, seed: int = 0) -> StudySpec:
    config = SynthConfig(
        (Modality.MAMMO,), 40, seed, tmp_path, prevalence={"malignancy": malignancy}
    )
    return make_spec(config, Modality.MAMMO, index)


def presented(ds: Dataset) -> NDArray[np.float64]:
    """Pixel values with MONOCHROME1 undone: high is bright (dense) on every device."""
    pixels = ds.pixel_array.astype(np.float64)
    if ds.PhotometricInterpretation == "MONOCHROME1":
        return float(2 ** int(ds.BitsStored) - 1) - pixels
    return pixels


@pytest.fixture(scope="module")
def positives(tmp_path_factory: pytest.TempPathFactory) -> list[tuple[StudySpec, GeneratedStudy]]:
    out = tmp_path_factory.mktemp("mammo")
    specs = [spec_for(out, index, 1.0) for index in (0, 1, 4, 8)]
    return [(spec, mammo.generate_study(spec)) for spec in specs]


def test_positive_specs_cover_all_three_devices(
    positives: list[tuple[StudySpec, GeneratedStudy]],
) -> None:
    models = {spec.device.model for spec, _ in positives}
    assert models == {"Aquila Mammo S", "Borealis Tomo 2", "Delphin MG-1"}
    assert all(spec.prevalence == {"malignancy": 1.0} for spec, _ in positives)


def test_study_is_four_for_presentation_mammograms_rcc_lcc_rmlo_lmlo(
    positives: list[tuple[StudySpec, GeneratedStudy]],
) -> None:
    for spec, study in positives:
        instances = study.instances
        assert [ds.ImageLaterality for ds in instances] == ["R", "L", "R", "L"]
        assert [ds.ViewPosition for ds in instances] == ["CC", "CC", "MLO", "MLO"]
        assert [int(ds.InstanceNumber) for ds in instances] == [1, 2, 3, 4]
        assert len({ds.SeriesInstanceUID for ds in instances}) == 1
        for ds in instances:
            assert ds.SOPClassUID == DigitalMammographyXRayImageStorageForPresentation
            assert ds.Modality == "MG"
            assert ds.PresentationIntentType == "FOR PRESENTATION"
            assert (ds.Rows, ds.Columns) == (512, 384)
            assert ds.pixel_array.dtype == np.uint16
            assert int(ds.BitsStored) == spec.device.bits_stored
            assert int(ds.pixel_array.max()) < 2**spec.device.bits_stored
            assert ds.PhotometricInterpretation == spec.device.photometric
            inverse = spec.device.photometric == "MONOCHROME1"
            assert ds.PresentationLUTShape == ("INVERSE" if inverse else "IDENTITY")


def test_view_code_and_patient_orientation_follow_view_and_laterality(
    positives: list[tuple[StudySpec, GeneratedStudy]],
) -> None:
    expected_code = {
        "CC": ("399162004", "cranio-caudal"),
        "MLO": ("399368009", "medio-lateral oblique"),
    }
    expected_orientation = {
        ("R", "CC"): ["P", "L"],
        ("L", "CC"): ["A", "R"],
        ("R", "MLO"): ["P", "FL"],
        ("L", "MLO"): ["A", "FR"],
    }
    _, study = positives[0]
    for ds in study.instances:
        code = ds.ViewCodeSequence[0]
        assert (code.CodeValue, code.CodeMeaning) == expected_code[ds.ViewPosition]
        assert code.CodingSchemeDesignator == "SCT"
        assert ds.AnatomicRegionSequence[0].CodeValue == "76752008"
        assert (
            list(ds.PatientOrientation)
            == expected_orientation[(ds.ImageLaterality, ds.ViewPosition)]
        )


def test_chest_wall_edge_is_brighter_than_the_opposite_edge(
    positives: list[tuple[StudySpec, GeneratedStudy]],
) -> None:
    photometrics = set()
    for spec, study in positives:
        photometrics.add(spec.device.photometric)
        for ds in study.instances:
            pixels = presented(ds)
            left, right = pixels[:, :40].mean(), pixels[:, -40:].mean()
            if ds.ImageLaterality == "L":
                assert left > right + 0.1 * pixels.max()
            else:
                assert right > left + 0.1 * pixels.max()
    assert photometrics == {"MONOCHROME1", "MONOCHROME2"}


def test_same_spec_gives_identical_pixels_labels_and_masks(tmp_path: Path) -> None:
    spec = spec_for(tmp_path, 1, 1.0)
    first, second = mammo.generate_study(spec), mammo.generate_study(spec)
    for a, b in zip(first.instances, second.instances, strict=True):
        np.testing.assert_array_equal(a.pixel_array, b.pixel_array)
    assert first.labels == second.labels
    assert first.extra_columns == second.extra_columns
    for a_mask, b_mask in zip(first.masks.values(), second.masks.values(), strict=True):
        np.testing.assert_array_equal(a_mask, b_mask)
    lesions = [
        {k: v for k, v in les.items() if k != "per_view"} for les in first.annotations["lesions"]
    ]
    assert lesions == [
        {k: v for k, v in les.items() if k != "per_view"} for les in second.annotations["lesions"]
    ]


def test_malignancy_labels_are_one_exactly_where_malignant_masks_are_nonzero(
    positives: list[tuple[StudySpec, GeneratedStudy]], tmp_path: Path
) -> None:
    negatives = [mammo.generate_study(spec_for(tmp_path, index, 0.0)) for index in range(2)]
    studies = [study for _, study in positives] + negatives
    for study in studies:
        assert set(study.labels) == set(FINDINGS[Modality.MAMMO])
        for side, finding in (("L", "malignancy_left"), ("R", "malignancy_right")):
            views = [ds for ds in study.instances if ds.ImageLaterality == side]
            present = [bool(study.masks[f"{ds.SOPInstanceUID}/malignancy"].any()) for ds in views]
            assert present == [bool(study.labels[finding])] * 2
        either = max(study.labels["malignancy_left"], study.labels["malignancy_right"])
        assert study.labels["malignancy"] == either
    assert [study.labels["malignancy"] for study in studies] == [1, 1, 1, 1, 0, 0]


def test_forced_positives_put_cancer_in_one_breast_or_rarely_both(
    positives: list[tuple[StudySpec, GeneratedStudy]],
) -> None:
    assert [
        (study.labels["malignancy_left"], study.labels["malignancy_right"])
        for _, study in positives
    ] == [
        (1, 0),
        (1, 0),
        (1, 1),
        (0, 1),
    ]


def test_benign_lesions_do_not_make_a_study_positive(tmp_path: Path) -> None:
    study = mammo.generate_study(spec_for(tmp_path, 4, 0.0, seed=7))
    benign = [les for les in study.annotations["lesions"] if not les["malignant"]]
    assert study.labels == {"malignancy": 0, "malignancy_left": 0, "malignancy_right": 0}
    assert [(les["kind"], les["morphology"]) for les in benign] == [("mass", "round")]
    assert sum(int(mask.any()) for key, mask in study.masks.items() if key.endswith("/benign")) == 2
    assert not any(mask.any() for key, mask in study.masks.items() if key.endswith("/malignancy"))


def test_lesion_lies_at_the_same_distance_from_the_nipple_in_cc_and_mlo(
    positives: list[tuple[StudySpec, GeneratedStudy]],
) -> None:
    for _, study in positives:
        nipples = {
            image["sop_instance_uid"]: image["nipple_rc"] for image in study.annotations["images"]
        }
        for lesion in study.annotations["lesions"]:
            assert len(lesion["per_view"]) == 2
            distances = [
                abs(nipples[view["sop_instance_uid"]][1] - view["centre_rc"][1])
                for view in lesion["per_view"]
            ]
            expected = lesion["nipple_distance_mm"] / 0.5
            assert distances == pytest.approx([expected, expected], abs=0.2)


def test_every_lesion_fits_inside_the_image_and_off_the_pectoral_over_300_plans(
    tmp_path: Path,
) -> None:
    plans = [plan_study(spec_for(tmp_path, index, 1.0, seed=3)) for index in range(300)]
    for plan in plans:
        for lesion in plan.lesions:
            for view, geometry in plan.breasts[lesion.laterality].items():
                centre = geometry.position(lesion.nipple_distance_mm / 0.5, lesion.offsets[view])
                radius_px = lesion.size_mm / 0.5 / 2
                assert geometry.fits(*centre, radius_px), (lesion, view)
    sides = Counter(
        (plan.labels["malignancy_left"], plan.labels["malignancy_right"]) for plan in plans
    )
    # Cancer in one breast, left or right alike, rarely both (BILATERAL_SHARE = 4 %).
    assert sorted(sides.items()) == [((0, 1), 150), ((1, 0), 141), ((1, 1), 9)]


def test_annotations_are_json_with_boxes_around_lesion_centres(
    positives: list[tuple[StudySpec, GeneratedStudy]],
) -> None:
    for _, study in positives:
        document = json.loads(json.dumps(study.annotations))
        assert document["breast_density"] == study.extra_columns["breast_density"]
        sops = {str(ds.SOPInstanceUID) for ds in study.instances}
        assert {key.rsplit("/", 1)[0] for key in study.masks} == sops
        findings = sorted(key.rsplit("/", 1)[1] for key in study.masks)
        assert findings == ["benign"] * 4 + ["malignancy"] * 4
        for mask in study.masks.values():
            assert mask.dtype == np.uint8
            assert mask.shape == (512, 384)
        for lesion in document["lesions"]:
            for view in lesion["per_view"]:
                assert view["sop_instance_uid"] in sops
                r0, c0, r1, c1 = view["box"]
                row, column = view["centre_rc"]
                assert 0 <= r0 <= row <= r1 < 512
                assert 0 <= c0 <= column <= c1 < 384


def test_breast_density_follows_bi_rads_shares_over_40_specs(tmp_path: Path) -> None:
    densities = [plan_study(spec_for(tmp_path, index, 0.04)).breast_density for index in range(40)]
    assert sorted(Counter(densities).items()) == [("A", 2), ("B", 15), ("C", 18), ("D", 5)]


def test_breast_density_column_matches_the_anatomy_drawn(
    positives: list[tuple[StudySpec, GeneratedStudy]],
) -> None:
    for spec, study in positives:
        assert study.extra_columns == {"breast_density": plan_study(spec).breast_density}


@pytest.mark.integration
@pytest.mark.skipif(shutil.which("dciodvfy") is None, reason="dciodvfy (dicom3tools) not installed")
def test_dciodvfy_finds_no_errors_on_any_device_or_transfer_syntax(
    positives: list[tuple[StudySpec, GeneratedStudy]], tmp_path: Path
) -> None:
    syntaxes = set()
    for spec, study in positives:
        for ds in study.instances:
            if spec.device.transfer_syntax != ExplicitVRLittleEndian:
                ds = copy.deepcopy(ds)
                ds.compress(spec.device.transfer_syntax, generate_instance_uid=False)
            syntaxes.add(ds.file_meta.TransferSyntaxUID)
            path = tmp_path / f"{ds.SOPInstanceUID}.dcm"
            ds.save_as(path, enforce_file_format=True)
            result = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True)
            errors = [line for line in result.stderr.splitlines() if line.startswith("Error")]
            assert errors == []
    assert len(syntaxes) == 3
