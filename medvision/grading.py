"""Ordinal grading scales a model can report beside a finding: the DR grade of fundus images.

A grade is not one more binary finding: it orders a disease's stages, and one of
its cut points is a finding already (``referable_dr`` is DR grade 2 or more). A
model that grades has, after its findings' outputs, one output per further cut
point of the scale: the logit of "grade ≥ k" (an ordinal, cumulative-link
decomposition, as in Frank & Hall 2001 and Cao et al. 2020, "Rank consistent
ordinal regression"). The finding's output is the cut point at the finding, so the
grade and the finding come from one network and one forward pass.

The reported grade is decoded so that it always agrees with the finding's
decision (:func:`decode_grade`): a flagged study is graded at or above the
finding's cut point, an unflagged one below it; within each side the grade is the
highest cut point whose probability reaches that cut point's threshold (one half
unless calibration chose another: ``ModelEntry.grade_thresholds``,
:mod:`medvision.calibration.grade_thresholds`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy.special import expit

from medvision.data.manifest import ManifestRow
from medvision.modality import LESION_MASKS, Modality


@dataclass(frozen=True)
class GradeScale:
    """An ordinal scale whose cut point at ``finding_from`` is the binary ``finding``.

    Attributes
    ----------
    name
        The scale's name, also its manifest column (e.g. ``dr_grade``).
    title
        How people name a grade of the scale (``DR grade``).
    modality
        The modality it grades.
    levels
        Readable name of each grade, from grade 0 up.
    finding
        The binary finding that is "grade ≥ ``finding_from``".
    finding_from
        The grade from which ``finding`` is present.
    cut_masks
        Per further cut point (``k`` other than ``finding_from``), the phantom masks
        whose union shows the evidence of "grade ≥ k" in an image of that grade.
    """

    name: str
    title: str
    modality: Modality
    levels: tuple[str, ...]
    finding: str
    finding_from: int
    cut_masks: Mapping[int, tuple[str, ...]]

    @property
    def cut_points(self) -> tuple[int, ...]:
        """The cut points with an output of their own (every ``k ≥ 1`` but ``finding_from``)."""
        return tuple(k for k in range(1, len(self.levels)) if k != self.finding_from)

    def output_names(self) -> tuple[str, ...]:
        """Names of the further outputs, in order (``dr_grade_ge_1`` …)."""
        return tuple(f"{self.name}_ge_{k}" for k in self.cut_points)

    def level_name(self, grade: int) -> str:
        """Return the readable name of ``grade``."""
        return self.levels[grade]


#: The International Clinical Diabetic Retinopathy Severity Scale (Wilkinson et al.
#: 2003), as the phantoms grade it (:func:`medvision.synth.fundus.dr_grade`).
DR_GRADE = GradeScale(
    name="dr_grade",
    title="DR grade",
    modality=Modality.FUNDUS,
    levels=(
        "no apparent retinopathy",
        "mild non-proliferative DR",
        "moderate non-proliferative DR",
        "severe non-proliferative DR",
        "proliferative DR",
    ),
    finding="referable_dr",
    finding_from=2,
    cut_masks={
        1: LESION_MASKS[Modality.FUNDUS]["referable_dr"],
        3: ("haemorrhage",),
        4: ("neovascularisation",),
    },
)

#: The grading scale of each modality that has one.
GRADE_SCALES: dict[Modality, GradeScale] = {Modality.FUNDUS: DR_GRADE}


def scale_named(name: str, modality: Modality) -> GradeScale:
    """Return the grading scale ``name`` of ``modality``.

    Raises
    ------
    ValueError
        If the modality has no grading scale, or another one.
    """
    scale = GRADE_SCALES.get(modality)
    if scale is None:
        raise ValueError(f"{modality.value} has no grading scale (only fundus: dr_grade)")
    if name != scale.name:
        raise ValueError(f"{modality.value} is graded on '{scale.name}', not '{name}'")
    return scale


def parse_grade(text: str, scale: GradeScale) -> int:
    """Parse a manifest cell of ``scale``'s column into a grade.

    Raises
    ------
    ValueError
        If the cell is empty, not a whole number, or outside the scale.
    """
    try:
        grade = int(text)
    except ValueError:
        raise ValueError(f"{scale.name} must be a whole number, got '{text}'") from None
    if not 0 <= grade < len(scale.levels):
        raise ValueError(f"{scale.name} must be 0 to {len(scale.levels) - 1}, got {grade}")
    return grade


def row_grades(rows: Sequence[ManifestRow], scale: GradeScale, split: str) -> list[int]:
    """Return each row's grade on ``scale`` (its manifest column).

    Raises
    ------
    ValueError
        If a row has no grade or an invalid one (naming the study and the split).
    """
    grades = []
    for row in rows:
        text = row.extra.get(scale.name, "")
        if not text:
            raise ValueError(
                f"--grade needs the manifest column '{scale.name}': {split} study "
                f"{row.study_instance_uid} has none (medvision synth writes it)"
            )
        try:
            grades.append(parse_grade(text, scale))
        except ValueError as error:
            raise ValueError(f"{split} study {row.study_instance_uid}: {error}") from None
    return grades


def cut_targets(grades: Sequence[int], scale: GradeScale) -> NDArray[np.float32]:
    """Return the targets of the further outputs: ``(studies, cut points)`` of 0 and 1.

    Column ``j`` is 1 where the grade is at least ``scale.cut_points[j]``.
    """
    values = np.asarray(grades, dtype=np.int64).reshape(-1, 1)
    return (values >= np.asarray(scale.cut_points)[None, :]).astype(np.float32)


@dataclass(frozen=True)
class Grade:
    """The grade a model gives one study.

    Attributes
    ----------
    scale
        The scale's name (``dr_grade``).
    value
        The grade (0 up).
    level
        Its readable name.
    title
        How people name a grade of the scale (``DR grade``).
    at_least
        Per cut point ``k`` (1 up), the probability that the grade is ``k`` or more:
        the finding's calibrated probability at ``finding_from``, the network's
        sigmoid output (not calibrated) at the others, which are judged against
        their own thresholds.
    """

    scale: str
    value: int
    level: str
    title: str
    at_least: dict[int, float]

    def __str__(self) -> str:
        """Return the grade as people read it: ``DR grade 3: severe non-proliferative DR``."""
        return f"{self.title} {self.value}: {self.level}"


def grade_values(
    scale: GradeScale,
    flagged: ArrayLike,
    cut_probabilities: ArrayLike,
    thresholds: Sequence[float] | None = None,
) -> NDArray[np.int64]:
    """Return the grades that agree with the finding's decisions (the module docstring's rule).

    Parameters
    ----------
    scale
        The grading scale.
    flagged
        Per case, whether the finding was flagged.
    cut_probabilities
        ``(cases, cut points)``: the further outputs' probabilities, in
        ``scale.cut_points`` order.
    thresholds
        Each further cut point's threshold, in the same order (default one half each).

    Raises
    ------
    ValueError
        If the shapes do not fit the scale.
    """
    decided = np.asarray(flagged, dtype=bool).reshape(-1)
    cuts = np.asarray(cut_probabilities, dtype=np.float64).reshape(decided.size, -1)
    limits = np.full(len(scale.cut_points), 0.5) if thresholds is None else np.asarray(thresholds)
    if cuts.shape[1] != len(scale.cut_points) or limits.shape != (len(scale.cut_points),):
        raise ValueError(
            f"{scale.name}: expected {len(scale.cut_points)} cut-point probabilities and "
            f"thresholds, got {cuts.shape[1]} and {limits.size}"
        )
    values = np.where(decided, scale.finding_from, 0).astype(np.int64)
    for column, k in enumerate(scale.cut_points):
        side = decided if k > scale.finding_from else ~decided
        values = np.where(side & (cuts[:, column] >= limits[column]), k, values)
    return values


def decode_grade(
    scale: GradeScale,
    flagged: bool,
    finding_probability: float,
    cut_logits: Sequence[float],
    thresholds: Sequence[float] | None = None,
) -> Grade:
    """Return the grade that agrees with the finding's decision (see the module docstring).

    Parameters
    ----------
    scale
        The grading scale.
    flagged
        Whether the finding was flagged at its threshold.
    finding_probability
        The finding's calibrated probability ("grade ≥ ``finding_from``").
    cut_logits
        The further outputs' logits, in ``scale.cut_points`` order.
    thresholds
        The further cut points' thresholds, in that order (default one half each).

    Raises
    ------
    ValueError
        If the number of logits or thresholds is not the number of further cut points.
    """
    if len(cut_logits) != len(scale.cut_points):
        raise ValueError(
            f"{scale.name}: expected {len(scale.cut_points)} cut-point logits, "
            f"got {len(cut_logits)}"
        )
    probabilities = [float(expit(float(logit))) for logit in cut_logits]
    at_least = dict(zip(scale.cut_points, probabilities, strict=True))
    at_least[scale.finding_from] = float(finding_probability)
    at_least = dict(sorted(at_least.items()))
    value = int(grade_values(scale, [flagged], [probabilities], thresholds)[0])
    return Grade(
        scale=scale.name,
        value=value,
        level=scale.level_name(value),
        title=scale.title,
        at_least=at_least,
    )
