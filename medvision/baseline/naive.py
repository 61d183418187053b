"""The naive baseline: logistic regression on 32x32 down-sampled pixels.

A model that cannot see small lesions — it exists to show that the phantoms are
hard enough that a real (convolutional) model is needed, and to give every
modality a floor to beat.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from numpy.typing import NDArray
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from tqdm import tqdm

from medvision import __version__
from medvision.data.manifest import ManifestRow, resolve
from medvision.dicom.reading import iter_files, pixel_values, read_instance
from medvision.modality import FINDINGS, Modality, mammography_view_rank
from medvision.pipeline.predictions_csv import PREDICTION_COLUMNS, write_rows

#: Side of the down-sampled image (and of the CT volume).
SIDE = 32
#: Inverse regularisation strength of the logistic regression.
REGULARISATION_C = 0.05


@dataclass(frozen=True)
class BaselineResult:
    """Held-out performance of the naive baseline for one finding."""

    modality: Modality
    finding: str
    auroc: float
    train_studies: int
    test_studies: int
    test_positives: int
    test_scores: dict[str, float] = field(default_factory=dict)  # by StudyInstanceUID


def _normalise(values: NDArray[np.float32]) -> NDArray[np.float32]:
    low, high = np.percentile(values, [1.0, 99.0])
    return np.clip((values - low) / max(float(high - low), 1e-6), 0.0, 1.0).astype(np.float32)


def _pool(values: NDArray[np.float32]) -> NDArray[np.float32]:
    tensor = torch.from_numpy(np.ascontiguousarray(values))[None, None]
    if values.ndim == 3:
        pooled = torch.nn.functional.adaptive_avg_pool3d(tensor, SIDE)
    else:
        pooled = torch.nn.functional.adaptive_avg_pool2d(tensor, SIDE)
    return pooled.numpy().ravel()


def study_features(row: ManifestRow, manifest_path: Path) -> NDArray[np.float32]:
    """Return the baseline's feature vector of one study.

    Each image is normalised to its 1st–99th percentile and average-pooled to
    32x32 (colour channels kept); a CT series becomes a 32x32x32 volume of HU
    clipped to the lung window; mammography views are concatenated in
    R-CC, L-CC, R-MLO, L-MLO order.
    """
    datasets = [read_instance(p) for p in iter_files(resolve(manifest_path, row.path))]
    datasets = [ds for ds in datasets if ds.StudyInstanceUID == row.study_instance_uid]
    if row.modality == Modality.CT:
        datasets.sort(key=lambda ds: int(ds.InstanceNumber))
        volume = np.stack([pixel_values(ds) for ds in datasets])
        return _pool(np.clip((volume + 1000.0) / 1400.0, 0.0, 1.0).astype(np.float32))
    if row.modality == Modality.MAMMO:
        datasets.sort(key=mammography_view_rank)
    parts: list[NDArray[np.float32]] = []
    for ds in datasets:
        values = _normalise(pixel_values(ds))
        if values.ndim == 3:
            parts.extend(_pool(values[..., channel]) for channel in range(values.shape[-1]))
        else:
            parts.append(_pool(values))
    return np.concatenate(parts).astype(np.float32)


def evaluate_naive_baseline(
    rows: Sequence[ManifestRow], manifest_path: Path, progress: bool = True
) -> list[BaselineResult]:
    """Train on the train/tune/calibration splits and report AUROC on the test split.

    Parameters
    ----------
    rows
        Manifest rows (any modalities).
    manifest_path
        The manifest's path (paths in rows are relative to its folder).
    progress
        Show a progress bar while reading studies.

    Returns
    -------
    list of BaselineResult
        One per modality and finding with both classes present in train and test.

    Raises
    ------
    ValueError
        If there is no study in the test split, or none outside it.
    """
    results: list[BaselineResult] = []
    features: dict[str, NDArray[np.float32]] = {}
    for row in tqdm(rows, desc="baseline", unit="study", disable=not progress):
        features[row.study_instance_uid] = study_features(row, manifest_path)
    for modality in Modality:
        subset = [row for row in rows if row.modality == modality]
        if not subset:
            continue
        train = [row for row in subset if row.split != "test"]
        test = [row for row in subset if row.split == "test"]
        if not train or not test:
            raise ValueError(
                f"{modality.value}: the baseline needs studies in the test split and outside it"
            )
        for finding in FINDINGS[modality]:
            train_rows = [row for row in train if finding in row.labels]
            test_rows = [row for row in test if finding in row.labels]
            y_train = np.array([row.labels[finding] for row in train_rows])
            y_test = np.array([row.labels[finding] for row in test_rows])
            if len(set(y_train)) < 2 or len(set(y_test)) < 2:
                continue
            x_train = np.stack([features[row.study_instance_uid] for row in train_rows])
            x_test = np.stack([features[row.study_instance_uid] for row in test_rows])
            model = make_pipeline(
                StandardScaler(),
                LogisticRegression(C=REGULARISATION_C, class_weight="balanced", max_iter=5000),
            )
            model.fit(x_train, y_train)
            scores = model.predict_proba(x_test)[:, 1]
            results.append(
                BaselineResult(
                    modality=modality,
                    finding=finding,
                    auroc=float(roc_auc_score(y_test, scores)),
                    train_studies=len(train_rows),
                    test_studies=len(test_rows),
                    test_positives=int(y_test.sum()),
                    test_scores={
                        row.study_instance_uid: float(score)
                        for row, score in zip(test_rows, scores, strict=True)
                    },
                )
            )
    return results


def format_baseline(results: Sequence[BaselineResult]) -> str:
    """Render baseline results as a plain-text table."""
    lines = [f"{'modality':<8} {'finding':<18} {'AUROC':>6} {'train':>6} {'test':>5} {'test+':>5}"]
    for r in results:
        lines.append(
            f"{r.modality.value:<8} {r.finding:<18} {r.auroc:>6.3f} {r.train_studies:>6} "
            f"{r.test_studies:>5} {r.test_positives:>5}"
        )
    return "\n".join(lines)


#: Model name of the baseline's rows in a predictions CSV.
BASELINE_NAME = "naive-baseline"
#: The baseline's decision threshold on its (uncalibrated) score.
BASELINE_THRESHOLD = 0.5


def write_baseline_predictions(
    results: Sequence[BaselineResult], rows: Sequence[ManifestRow], path: Path
) -> int:
    """Write the baseline's test-split scores as a predictions CSV; return the rows written.

    The format is ``medvision predict``'s (``docs/predictions.md``), so that
    ``medvision validate`` judges the baseline like any model. The score is the
    class-balanced logistic regression's output, not a calibrated probability;
    ``flagged`` is ``score >= 0.5``; the weights column is empty (the baseline is
    refitted on every run and not stored).
    """
    by_uid = {row.study_instance_uid: row for row in rows}
    cells = []
    for result in results:
        for uid, score in result.test_scores.items():
            row = by_uid[uid]
            cells.append(
                {
                    "study_instance_uid": uid,
                    "finding": result.finding,
                    "probability": repr(score),
                    "threshold": repr(BASELINE_THRESHOLD),
                    "flagged": "1" if score >= BASELINE_THRESHOLD else "0",
                    "site": row.site,
                    "manufacturer": row.manufacturer,
                    "manufacturer_model": row.manufacturer_model,
                    "sex": row.sex,
                    "age": "" if row.age is None else str(row.age),
                    "model_name": BASELINE_NAME,
                    "model_version": __version__,
                    "weights_sha256": "",
                }
            )
    return write_rows(path, PREDICTION_COLUMNS, cells)
