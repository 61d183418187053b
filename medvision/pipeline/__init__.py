"""The analysis pipeline: DICOM studies in, calibrated and thresholded findings out.

- :mod:`~medvision.pipeline.discovery`: files and folders to studies (header-only reads);
- :mod:`~medvision.pipeline.analyze`: :func:`analyze`, scoring with every model of a
  study's modality, calibration and thresholds;
- :mod:`~medvision.pipeline.results`: :class:`Finding`, :class:`StudyResult`,
  :class:`Problem`, :class:`AnalysisRun`;
- :mod:`~medvision.pipeline.predictions_csv`: the CSV of ``medvision predict``.
"""

from medvision.pipeline.analyze import NoModelError, analyze
from medvision.pipeline.predictions_csv import PREDICTION_COLUMNS, write_predictions
from medvision.pipeline.results import AnalysisRun, Finding, Problem, ProblemKind, StudyResult

__all__ = [
    "PREDICTION_COLUMNS",
    "AnalysisRun",
    "Finding",
    "NoModelError",
    "Problem",
    "ProblemKind",
    "StudyResult",
    "analyze",
    "write_predictions",
]
