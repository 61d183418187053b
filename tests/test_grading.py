import numpy as np
import pytest

from medvision.calibration.grade_thresholds import fit_cut_thresholds
from medvision.grading import (
    DR_GRADE,
    GRADE_SCALES,
    cut_targets,
    decode_grade,
    grade_values,
    parse_grade,
    scale_named,
)
from medvision.modality import EXTRA_COLUMNS, FINDINGS, LESION_MASKS, Modality
from medvision.synth.fundus import LESION_TYPES, LesionCounts, dr_grade


def test_each_scale_fits_its_modality_tables() -> None:
    for modality, scale in GRADE_SCALES.items():
        assert scale.modality == modality
        assert scale.finding in FINDINGS[modality]
        assert scale.name in EXTRA_COLUMNS[modality]
        assert set(scale.cut_masks) == set(scale.cut_points)
    assert DR_GRADE.cut_points == (1, 3, 4)
    assert DR_GRADE.output_names() == ("dr_grade_ge_1", "dr_grade_ge_3", "dr_grade_ge_4")
    assert DR_GRADE.cut_masks[1] == LESION_MASKS[Modality.FUNDUS]["referable_dr"]
    assert {m for masks in DR_GRADE.cut_masks.values() for m in masks} <= set(LESION_TYPES)


def test_the_scale_cuts_where_the_phantoms_grade() -> None:
    # grade >= 3 is a count of haemorrhages, grade 4 any neovascularisation: the masks
    # the cut points are trained on are the lesions that raise a phantom to that grade.
    assert dr_grade(LesionCounts(haemorrhage=30)) == 3
    assert dr_grade(LesionCounts(neovascularisation=1)) == 4
    assert dr_grade(LesionCounts(microaneurysm=1)) == 1


def test_cut_targets_are_cumulative() -> None:
    targets = cut_targets([0, 1, 2, 3, 4], DR_GRADE)
    np.testing.assert_array_equal(targets, [[0, 0, 0], [1, 0, 0], [1, 0, 0], [1, 1, 0], [1, 1, 1]])
    assert targets.dtype == np.float32


@pytest.mark.parametrize(
    ("flagged", "probability", "logits", "grade"),
    [
        (False, 0.1, (-3.0, -3.0, -3.0), 0),
        (False, 0.1, (0.5, -3.0, -3.0), 1),
        # not flagged: below the finding's cut point whatever the higher cut points say
        (False, 0.6, (2.0, 3.0, 3.0), 1),
        (False, 0.6, (-2.0, 3.0, 3.0), 0),
        # flagged: at or above it, even where "grade >= 1" is unlikely
        (True, 0.3, (-3.0, -3.0, -3.0), 2),
        (True, 0.9, (3.0, 0.0, -3.0), 3),  # a logit of 0 is a probability of one half
        (True, 0.9, (3.0, -1.0, 1.0), 4),  # the highest cut point reaching one half
    ],
)
def test_the_grade_agrees_with_the_findings_decision(
    flagged: bool, probability: float, logits: tuple[float, float, float], grade: int
) -> None:
    result = decode_grade(DR_GRADE, flagged, probability, logits)
    assert result.value == grade
    assert result.level == DR_GRADE.levels[grade]
    assert result.scale == "dr_grade"
    assert str(result) == f"DR grade {grade}: {DR_GRADE.levels[grade]}"
    assert list(result.at_least) == [1, 2, 3, 4]
    assert result.at_least[2] == probability
    assert result.at_least[1] == pytest.approx(1.0 / (1.0 + np.exp(-logits[0])))


def test_decoding_needs_one_logit_per_further_cut_point() -> None:
    with pytest.raises(ValueError, match="expected 3 cut-point logits, got 2"):
        decode_grade(DR_GRADE, True, 0.9, (1.0, 2.0))


def test_grades_are_parsed_strictly() -> None:
    assert parse_grade("3", DR_GRADE) == 3
    with pytest.raises(ValueError, match="must be 0 to 4, got 5"):
        parse_grade("5", DR_GRADE)
    with pytest.raises(ValueError, match="must be a whole number, got 'two'"):
        parse_grade("two", DR_GRADE)


def test_only_fundus_has_a_scale() -> None:
    assert scale_named("dr_grade", Modality.FUNDUS) is DR_GRADE
    with pytest.raises(ValueError, match="cxr has no grading scale"):
        scale_named("dr_grade", Modality.CXR)
    with pytest.raises(ValueError, match="graded on 'dr_grade', not 'etdrs'"):
        scale_named("etdrs", Modality.FUNDUS)


def test_grade_values_use_each_cut_points_threshold_on_its_side_only() -> None:
    flagged = [False, False, True, True, True]
    cuts = [[0.4, 0.9, 0.9], [0.6, 0.0, 0.0], [0.9, 0.3, 0.1], [0.9, 0.3, 0.2], [0.0, 0.0, 0.6]]
    assert grade_values(DR_GRADE, flagged, cuts).tolist() == [0, 1, 2, 2, 4]
    # Lower thresholds at grade >= 1 and >= 4: the first study becomes mild; the fourth
    # proliferative (0.2 reaches 0.2), the third not (0.1 does not).
    lowered = grade_values(DR_GRADE, flagged, cuts, (0.35, 0.5, 0.2))
    assert lowered.tolist() == [1, 1, 2, 4, 4]
    with pytest.raises(ValueError, match="expected 3 cut-point probabilities and thresholds"):
        grade_values(DR_GRADE, flagged, cuts, (0.5, 0.5))


def test_cut_thresholds_are_chosen_for_the_best_kappa() -> None:
    # Proliferative eyes score 0.3 at "grade >= 4", severe ones 0.1: any threshold in
    # (0.1, 0.3] separates them, and the one nearest one half is 0.30. Moderate eyes
    # score 0.6 at "grade >= 3" and severe ones 0.8: (0.6, 0.8] separates them.
    truth = [2] * 10 + [3] * 10 + [4] * 10
    cuts = [[0.9, 0.6, 0.1]] * 10 + [[0.9, 0.8, 0.1]] * 10 + [[0.9, 0.8, 0.3]] * 10
    thresholds = fit_cut_thresholds(DR_GRADE, [True] * 30, cuts, truth)
    assert thresholds[1:] == (0.61, 0.3)
    assert grade_values(DR_GRADE, [True] * 30, cuts, thresholds).tolist() == truth
    # Unflagged studies only: nothing to learn at grade >= 3 and >= 4, which stay at 0.5.
    assert fit_cut_thresholds(DR_GRADE, [False] * 30, cuts, [0] * 30)[1:] == (0.5, 0.5)
