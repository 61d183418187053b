"""Scoring studies with a registered model: the interface every model family implements.

A *scorer* turns prepared studies into per-finding raw scores (logits, before
calibration) and, where the model can say, where each finding is. The pipeline
(:mod:`medvision.pipeline`) loads studies, calls the scorer of the model that
serves the study's modality, then applies the registry's calibration and
thresholds. Training uses the same scorers, so what is calibrated is exactly
what is served.
"""

from medvision.inference.scoring import (
    Location,
    PreparedStudy,
    Scorer,
    StudyScore,
    register_scorer,
    scorer_for,
)

__all__ = [
    "Location",
    "PreparedStudy",
    "Scorer",
    "StudyScore",
    "register_scorer",
    "scorer_for",
]
