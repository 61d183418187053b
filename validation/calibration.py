"""Calibration slope and intercept of predicted probabilities (logistic recalibration).

With ``lp = logit(p)`` the linear predictor of the model's probabilities, two
logistic regressions of the observed label on it (Cox 1958; as TRIPOD+AI asks):

- **calibration slope** ``b`` and its intercept ``a`` from ``logit P(y=1) = a + b lp``:
  ``b = 1`` when the predictions are neither too extreme (``b < 1``) nor too modest
  (``b > 1``);
- **calibration intercept** ("calibration in the large") ``a0`` from
  ``logit P(y=1) = a0 + lp`` (slope fixed at 1, ``lp`` an offset): ``a0 = 0`` when the
  predictions are neither too high (``a0 < 0``) nor too low on average.

Both are maximum-likelihood fits by Newton-Raphson. Probabilities are clipped to
``[1e-6, 1 - 1e-6]`` before the logit, so a calibrated 0 or 1 stays finite. The
tests cross-check both against statsmodels. The reliability curve, ECE and Brier
score come from :mod:`medvision.calibration.metrics`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy.special import expit

from medvision.calibration.metrics import binary_scores_and_labels

#: Probabilities are clipped to [CLIP, 1 - CLIP] before their logit is taken.
CLIP = 1e-6


@dataclass(frozen=True)
class CalibrationLine:
    """The two logistic recalibration fits (see the module docstring)."""

    slope: float
    slope_intercept: float
    intercept_in_the_large: float


def _newton(
    design: NDArray[np.float64],
    labels: NDArray[np.float64],
    offset: NDArray[np.float64],
    iterations: int = 100,
    tolerance: float = 1e-12,
) -> NDArray[np.float64]:
    coefficients = np.zeros(design.shape[1])
    for _ in range(iterations):
        eta = design @ coefficients + offset
        mean = expit(eta)  # no overflow warning for very confident predictions
        weights = mean * (1.0 - mean)
        gradient = design.T @ (labels - mean)
        hessian = design.T @ (design * weights[:, None])
        step = np.linalg.solve(hessian, gradient)
        coefficients = coefficients + step
        if np.max(np.abs(step)) < tolerance:
            return coefficients
    raise ValueError(
        "the calibration fit did not converge (the labels may be perfectly separated by the "
        "predictions)"
    )


def calibration_line(probabilities: ArrayLike, labels: ArrayLike) -> CalibrationLine:
    """Return the calibration slope, its intercept and the intercept in the large.

    Raises
    ------
    ValueError
        If probabilities are outside [0, 1], labels not 0/1, lengths differ, one
        class is absent, or the fit does not converge (perfect separation).
    """
    p, y = binary_scores_and_labels(probabilities, labels, probabilities=True)
    if y.min() == y.max():
        raise ValueError("calibration slope and intercept need cases with and without the finding")
    clipped = np.clip(p, CLIP, 1.0 - CLIP)
    predictor = np.log(clipped / (1.0 - clipped))
    target = y.astype(np.float64)
    ones = np.ones_like(predictor)
    intercept, slope = _newton(np.column_stack([ones, predictor]), target, np.zeros_like(target))
    (in_the_large,) = _newton(ones[:, None], target, predictor)
    return CalibrationLine(
        slope=float(slope),
        slope_intercept=float(intercept),
        intercept_in_the_large=float(in_the_large),
    )
