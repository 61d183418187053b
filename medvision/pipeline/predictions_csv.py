"""The predictions CSV of ``medvision predict``: one row per study and finding.

The format is documented in ``docs/predictions.md``. Probabilities and
thresholds are written with Python's shortest round-trip ``repr``, so the
``flagged`` column can be recomputed exactly from the two.
"""

from __future__ import annotations

import csv
from pathlib import Path

from medvision.pipeline.results import AnalysisRun

#: The columns, in order (the last three identify the model).
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
                }
            )
    return rows


def write_predictions(run: AnalysisRun, path: Path) -> int:
    """Write the predictions CSV (creating its folder); return the number of rows written."""
    rows = prediction_rows(run)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=PREDICTION_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    return len(rows)
