"""What an analysis run produces: findings per study, and the problems met on the way.

Results are data first (these dataclasses); the CSV of ``medvision predict``
(:mod:`medvision.pipeline.predictions_csv`) and, later, DICOM SR objects are
renderings of them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from medvision.explain.heatmaps import Heatmap
from medvision.grading import Grade
from medvision.inference.scoring import Location
from medvision.modality import Modality


class ProblemKind(StrEnum):
    """Why a file or a study was not analysed.

    ``not_dicom``: a file that is not DICOM or lacks StudyInstanceUID.
    ``unserved_modality``: a study with no image of a modality a registry model serves.
    ``unloadable_study``: a study whose images cannot be read, decoded or transformed.
    ``scoring_failed``: a study the model failed on.
    """

    NOT_DICOM = "not_dicom"
    UNSERVED_MODALITY = "unserved_modality"
    UNLOADABLE_STUDY = "unloadable_study"
    SCORING_FAILED = "scoring_failed"


@dataclass(frozen=True)
class Problem:
    """A file or study that could not be analysed, and why (analysis goes on without it).

    Attributes
    ----------
    kind
        What went wrong.
    reason
        Why, in detail (the reader's or loader's message).
    path
        The file, for a file that is not usable DICOM; else ``None``.
    study_instance_uid
        The study, for a study-level problem; else empty.
    """

    kind: ProblemKind
    reason: str
    path: Path | None = None
    study_instance_uid: str = ""

    @property
    def subject(self) -> str:
        """What the problem is about: ``study <UID>`` or the file's path."""
        if self.study_instance_uid:
            return f"study {self.study_instance_uid}"
        return str(self.path) if self.path is not None else "?"

    def __str__(self) -> str:
        """Return the problem as one line: subject, kind, reason."""
        return f"{self.subject} [{self.kind.value}]: {' '.join(self.reason.split())}"


@dataclass(frozen=True)
class Finding:
    """One finding of one study, as a model reports it.

    Attributes
    ----------
    name
        The finding (e.g. ``pleural_effusion``).
    probability
        Calibrated probability that the finding is present.
    threshold
        The model's operating threshold for it.
    flagged
        ``probability >= threshold``: the finding is reported.
    locations
        Where the model places it (may be empty).
    model_name, model_version, weights_sha256
        The model that produced it (algorithm identification).
    mask
        A mask on the source grid where the model segments (CT), else ``None``.
    heatmaps
        Grad-CAM heatmaps on the source images, when explanations were asked for
        (one per image that shows the finding; :mod:`medvision.explain`).
    explanation_note
        Why an explanation that was asked for is missing (empty otherwise).
    grade
        The grade of the finding's disease, where the model grades it (the DR grade
        on ``referable_dr``; :mod:`medvision.grading`), else ``None``. It agrees
        with ``flagged``: a flagged finding's grade is at or above the finding's cut
        point, an unflagged one's below.
    """

    name: str
    probability: float
    threshold: float
    flagged: bool
    locations: list[Location]
    model_name: str
    model_version: str
    weights_sha256: str
    mask: Any = None
    heatmaps: list[Heatmap] = field(default_factory=list)
    explanation_note: str = ""
    grade: Grade | None = None


@dataclass(frozen=True)
class StudyResult:
    """The findings of one study and the facts subgroup analyses need.

    Attributes
    ----------
    study_instance_uid
        StudyInstanceUID (0020,000D).
    modality
        The medvision modality the study was analysed as.
    site
        InstitutionName (0008,0080), or empty.
    manufacturer, manufacturer_model
        Manufacturer (0008,0070) and ManufacturerModelName (0008,1090), or empty.
    sex
        PatientSex (0010,0040), or empty.
    age
        Age in whole years (PatientAge, else from the birth and study dates), or ``None``.
    findings
        Every finding of every model that serves the modality, in model order.
    """

    study_instance_uid: str
    modality: Modality
    site: str
    manufacturer: str
    manufacturer_model: str
    sex: str
    age: int | None
    findings: list[Finding] = field(default_factory=list)


@dataclass(frozen=True)
class AnalysisRun:
    """What :func:`medvision.pipeline.analyze` did.

    Attributes
    ----------
    results
        One per analysed study (and modality), in the order the files were found.
    problems
        Every file or study that was not analysed, with the reason.
    """

    results: list[StudyResult]
    problems: list[Problem]
