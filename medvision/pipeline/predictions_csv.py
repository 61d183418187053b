"""The predictions CSV of ``medvision predict`` (one row per study and finding), and CT candidates.

The format is documented in ``docs/predictions.md``. Probabilities and
thresholds are written with Python's shortest round-trip ``repr``, so the
``flagged`` column can be recomputed exactly from the two.
"""

from __future__ import annotations

import csv
from pathlib import Path

from medvision.inference.scoring import Location
from medvision.pipeline.results import AnalysisRun

#: The columns, in order (``model_name`` to ``weights_sha256`` identify the model;
#: ``grade`` is the disease grade where the model grades the finding, else empty).
PREDICTION_COLUMNS: tuple[str, ...] = (
    "study_instance_uid",
    "finding",
    "probability",
    "threshold",
    "flagged",
    "site",
    "manufacturer",
    "manufacturer_model",
    "sex",
    "age",
    "model_name",
    "model_version",
    "weights_sha256",
    "grade",
)


def prediction_rows(run: AnalysisRun) -> list[dict[str, str]]:
    """Return the CSV cells: one row per analysed study and finding, in result order."""
    rows = []
    for result in run.results:
        for finding in result.findings:
            rows.append(
                {
                    "study_instance_uid": result.study_instance_uid,
                    "finding": finding.name,
                    "probability": repr(finding.probability),
                    "threshold": repr(finding.threshold),
                    "flagged": "1" if finding.flagged else "0",
                    "site": result.site,
                    "manufacturer": result.manufacturer,
                    "manufacturer_model": result.manufacturer_model,
                    "sex": result.sex,
                    "age": "" if result.age is None else str(result.age),
                    "model_name": finding.model_name,
                    "model_version": finding.model_version,
                    "weights_sha256": finding.weights_sha256,
                    "grade": "" if finding.grade is None else str(finding.grade.value),
                }
            )
    return rows


def write_predictions(run: AnalysisRun, path: Path) -> int:
    """Write the predictions CSV (creating its folder); return the number of rows written."""
    return write_rows(path, PREDICTION_COLUMNS, prediction_rows(run))


def write_rows(path: Path, columns: tuple[str, ...], rows: list[dict[str, str]]) -> int:
    """Write ``rows`` under a header of ``columns`` (creating the folder); return their count."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    return len(rows)


#: Columns of the nodule-candidates CSV (the LUNA16 format; Setio et al. 2017).
DETECTION_COLUMNS: tuple[str, ...] = ("seriesuid", "coordX", "coordY", "coordZ", "probability")


def _score(location: Location) -> float:
    if location.score is None:
        raise ValueError(f"a nodule candidate of series {location.referenced_uid} has no score")
    return float(location.score)


def write_detections(run: AnalysisRun, path: Path) -> int:
    """Write the CT nodule candidates of ``run`` in the LUNA16 format; return the rows written.

    One row per located CT finding component: the series, its centre in patient
    coordinates (LPS, mm) and its score. Only findings with a mask (the CT
    segmenter's) contribute; the header is written even when there is no candidate.

    Raises
    ------
    ValueError
        If a candidate has no score.
    """
    rows = [
        {
            "seriesuid": location.referenced_uid,
            "coordX": repr(float(location.centre[0])),
            "coordY": repr(float(location.centre[1])),
            "coordZ": repr(float(location.centre[2])),
            "probability": repr(_score(location)),
        }
        for result in run.results
        for finding in result.findings
        if finding.mask is not None
        for location in finding.locations
    ]
    return write_rows(path, DETECTION_COLUMNS, rows)
