"""Post-hoc calibration of one finding's logits: temperature, Platt and isotonic.

Every calibrator maps a model's logits to probabilities, is fitted on a held-out
calibration split (never on training data), and stores its parameters as a
JSON-ready mapping (``to_dict`` / :func:`calibrator_from_dict`) for the model
registry. Temperature and Platt scaling are strictly increasing, so they never
change the ranking of cases (AUROC is unchanged); isotonic regression is
non-decreasing and may tie cases.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, ClassVar, Self, TypeVar

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy.optimize import minimize, minimize_scalar
from scipy.special import expit
from sklearn.isotonic import IsotonicRegression
from sklearn.model_selection import StratifiedKFold

from medvision.calibration.metrics import (
    binary_scores_and_labels,
    brier_score,
    expected_calibration_error,
)
from medvision.choices import parse_choice

_T = TypeVar("_T")

#: Search range of the temperature (the fit is on log T within these bounds).
TEMPERATURE_BOUNDS: tuple[float, float] = (0.01, 100.0)
#: Smallest Platt slope: keeps the mapping strictly increasing (ranking preserved).
MINIMUM_PLATT_SLOPE = 1e-6


class CalibrationMethod(StrEnum):
    """The calibration methods, simplest first (the order :func:`fit_best_calibrator` uses)."""

    TEMPERATURE = "temperature"
    PLATT = "platt"
    ISOTONIC = "isotonic"

    @classmethod
    def parse(cls, text: str) -> CalibrationMethod:
        """Parse a calibration method name, with a "did you mean" hint for near misses.

        Raises
        ------
        ValueError
            If ``text`` names no calibration method.
        """
        return parse_choice(cls, text, "calibration method")


def _mean_nll(scores: NDArray[np.float64], labels: NDArray[np.int64]) -> float:
    """Return the mean binary negative log-likelihood of logits ``scores``."""
    return float(np.mean(np.logaddexp(0.0, scores) - labels * scores))


class Calibrator(ABC):
    """A fitted map from one finding's logits to calibrated probabilities."""

    #: Name stored under ``"method"`` in :meth:`to_dict`.
    method: ClassVar[CalibrationMethod]

    def fit(self, logits: ArrayLike, labels: ArrayLike) -> Self:
        """Fit the calibrator on held-out logits and 0/1 labels.

        Parameters
        ----------
        logits
            One finding's logits on the calibration split (never training data).
        labels
            0 or 1 per case.

        Returns
        -------
        Calibrator
            ``self``, fitted.

        Raises
        ------
        ValueError
            If the inputs fail :func:`~medvision.calibration.metrics.binary_scores_and_labels`.
        """
        self._fit(*binary_scores_and_labels(logits, labels, probabilities=False))
        return self

    @abstractmethod
    def _fit(self, logits: NDArray[np.float64], labels: NDArray[np.int64]) -> None:
        """Fit the parameters on checked logits and labels."""

    @abstractmethod
    def transform(self, logits: ArrayLike) -> NDArray[np.float64]:
        """Return calibrated probabilities of the positive class for ``logits``."""

    @abstractmethod
    def parameters(self) -> dict[str, Any]:
        """Return the fitted parameters as JSON-ready values (without the method)."""

    @classmethod
    @abstractmethod
    def from_parameters(cls, parameters: Mapping[str, Any]) -> Self:
        """Build a fitted calibrator from :meth:`parameters` output."""

    def to_dict(self) -> dict[str, Any]:
        """Return ``{"method": ..., **parameters}``, JSON-serialisable, for the registry."""
        return {"method": self.method.value, **self.parameters()}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Self:
        """Build a fitted calibrator of this class from :meth:`to_dict` output.

        Raises
        ------
        ValueError
            If ``data`` names another method or its parameters are malformed.
        """
        if data.get("method") != cls.method.value:
            raise ValueError(
                f"{cls.__name__} needs method '{cls.method.value}', got {data.get('method')!r}"
            )
        parameters = {key: value for key, value in data.items() if key != "method"}
        try:
            return cls.from_parameters(parameters)
        except KeyError as error:
            raise ValueError(f"{cls.method.value} calibration lacks {error}") from None
        except (TypeError, ValueError) as error:
            raise ValueError(f"malformed {cls.method.value} calibration: {error}") from None

    def _require(self, value: _T | None) -> _T:
        """Return a fitted parameter; raise if the calibrator is not fitted yet."""
        if value is None:
            raise RuntimeError(
                f"{type(self).__name__} is not fitted: call fit(logits, labels) "
                "or build it with from_dict()"
            )
        return value


class TemperatureScaling(Calibrator):
    """Temperature scaling: ``p = sigmoid(logit / T)`` with a single ``T > 0``.

    ``T`` minimises the mean negative log-likelihood of the labels; the search is
    over ``log T`` on :data:`TEMPERATURE_BOUNDS` with bounded Brent minimisation
    (deterministic). (Guo, Pleiss, Sun and Weinberger 2017, "On Calibration of
    Modern Neural Networks", ICML.)

    Parameters
    ----------
    temperature
        A known temperature (e.g. from the registry), or ``None`` until fitted.
    """

    method = CalibrationMethod.TEMPERATURE

    def __init__(self, temperature: float | None = None) -> None:
        if temperature is not None and not (math.isfinite(temperature) and temperature > 0.0):
            raise ValueError(f"temperature must be finite and positive, got {temperature}")
        self.temperature = temperature

    def _fit(self, logits: NDArray[np.float64], labels: NDArray[np.int64]) -> None:
        """Fit ``T`` by bounded minimisation of the NLL over ``log T``."""
        low, high = (math.log(bound) for bound in TEMPERATURE_BOUNDS)
        result = minimize_scalar(
            lambda log_t: _mean_nll(logits * math.exp(-log_t), labels),
            bounds=(low, high),
            method="bounded",
            options={"xatol": 1e-10},
        )
        self.temperature = math.exp(float(result.x))

    def transform(self, logits: ArrayLike) -> NDArray[np.float64]:
        """Return ``sigmoid(logits / T)``."""
        temperature = self._require(self.temperature)
        return expit(np.asarray(logits, dtype=np.float64) / temperature)

    def parameters(self) -> dict[str, Any]:
        """Return ``{"temperature": T}``."""
        return {"temperature": self._require(self.temperature)}

    @classmethod
    def from_parameters(cls, parameters: Mapping[str, Any]) -> Self:
        """Build from ``{"temperature": T}``."""
        return cls(temperature=float(parameters["temperature"]))


class PlattScaling(Calibrator):
    """Platt scaling: ``p = sigmoid(slope * logit + intercept)``.

    Slope and intercept minimise the mean negative log-likelihood (L-BFGS-B from
    slope 1, intercept 0; deterministic), with the slope kept at or above
    :data:`MINIMUM_PLATT_SLOPE` so the map stays strictly increasing. A slope at
    that bound means the logits carry no usable signal on the calibration data.
    Plain labels are used, without Platt's smoothed targets, as in Guo et al.
    2017. (Platt 1999, "Probabilistic outputs for support vector machines and
    comparisons to regularized likelihood methods".)

    Parameters
    ----------
    slope, intercept
        Known parameters (e.g. from the registry), or ``None`` until fitted.
    """

    method = CalibrationMethod.PLATT

    def __init__(self, slope: float | None = None, intercept: float | None = None) -> None:
        if (slope is None) != (intercept is None):
            raise ValueError("give both slope and intercept, or neither")
        if (
            slope is not None
            and intercept is not None
            and not (math.isfinite(slope) and slope > 0.0 and math.isfinite(intercept))
        ):
            raise ValueError(
                f"slope must be finite and positive and intercept finite, "
                f"got {slope} and {intercept}"
            )
        self.slope = slope
        self.intercept = intercept

    def _fit(self, logits: NDArray[np.float64], labels: NDArray[np.int64]) -> None:
        """Fit slope and intercept by L-BFGS-B on the NLL and its gradient."""

        def objective(params: NDArray[np.float64]) -> tuple[float, NDArray[np.float64]]:
            affine = params[0] * logits + params[1]
            residual = expit(affine) - labels
            gradient = np.array([np.mean(residual * logits), np.mean(residual)])
            return _mean_nll(affine, labels), gradient

        result = minimize(
            objective,
            x0=np.array([1.0, 0.0]),
            jac=True,
            method="L-BFGS-B",
            bounds=[(MINIMUM_PLATT_SLOPE, None), (None, None)],
            options={"ftol": 1e-14, "gtol": 1e-10},
        )
        self.slope, self.intercept = float(result.x[0]), float(result.x[1])

    def transform(self, logits: ArrayLike) -> NDArray[np.float64]:
        """Return ``sigmoid(slope * logits + intercept)``."""
        slope, intercept = self._require(self.slope), self._require(self.intercept)
        return expit(slope * np.asarray(logits, dtype=np.float64) + intercept)

    def parameters(self) -> dict[str, Any]:
        """Return ``{"slope": a, "intercept": b}``."""
        return {"slope": self._require(self.slope), "intercept": self._require(self.intercept)}

    @classmethod
    def from_parameters(cls, parameters: Mapping[str, Any]) -> Self:
        """Build from ``{"slope": a, "intercept": b}``."""
        return cls(slope=float(parameters["slope"]), intercept=float(parameters["intercept"]))


class IsotonicCalibration(Calibrator):
    """Isotonic regression of the labels on the logits (non-decreasing, piecewise linear).

    Fitted with :class:`sklearn.isotonic.IsotonicRegression`
    (``out_of_bounds="clip"``, outputs in [0, 1]); the fitted thresholds are
    stored, and :meth:`transform` always interpolates linearly between them with
    ``numpy.interp`` (constant beyond the ends, as "clip"), so a calibrator
    restored from the registry gives bit-identical outputs. Flexible, so it needs
    more calibration data than the parametric methods. (Zadrozny and Elkan 2002,
    "Transforming classifier scores into accurate multiclass probability
    estimates", KDD.)

    Parameters
    ----------
    logit_thresholds, probability_thresholds
        Known thresholds (increasing logits, non-decreasing probabilities in
        [0, 1], equally long), or ``None`` until fitted.
    """

    method = CalibrationMethod.ISOTONIC

    def __init__(
        self,
        logit_thresholds: Sequence[float] | None = None,
        probability_thresholds: Sequence[float] | None = None,
    ) -> None:
        self.logit_thresholds: NDArray[np.float64] | None = None
        self.probability_thresholds: NDArray[np.float64] | None = None
        if (logit_thresholds is None) != (probability_thresholds is None):
            raise ValueError("give both logit and probability thresholds, or neither")
        if logit_thresholds is not None and probability_thresholds is not None:
            x = np.asarray(logit_thresholds, dtype=np.float64)
            y = np.asarray(probability_thresholds, dtype=np.float64)
            if x.ndim != 1 or x.shape != y.shape or x.size == 0:
                raise ValueError(
                    "logit and probability thresholds must be non-empty and equally long"
                )
            if not (np.isfinite(x).all() and (np.diff(x) > 0).all()):
                raise ValueError("logit thresholds must be finite and strictly increasing")
            if not ((y >= 0.0) & (y <= 1.0)).all() or (np.diff(y) < 0).any():
                raise ValueError("probability thresholds must be non-decreasing and in [0, 1]")
            self.logit_thresholds, self.probability_thresholds = x, y

    def _fit(self, logits: NDArray[np.float64], labels: NDArray[np.int64]) -> None:
        """Fit the isotonic regression and keep its thresholds."""
        regression = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip")
        regression.fit(logits, labels.astype(np.float64))
        self.logit_thresholds = np.asarray(regression.X_thresholds_, dtype=np.float64)
        self.probability_thresholds = np.asarray(regression.y_thresholds_, dtype=np.float64)

    def transform(self, logits: ArrayLike) -> NDArray[np.float64]:
        """Return the interpolated probabilities (end values beyond the fitted range)."""
        return np.interp(
            np.asarray(logits, dtype=np.float64),
            self._require(self.logit_thresholds),
            self._require(self.probability_thresholds),
        )

    def parameters(self) -> dict[str, Any]:
        """Return ``{"logit_thresholds": [...], "probability_thresholds": [...]}``."""
        return {
            "logit_thresholds": [float(v) for v in self._require(self.logit_thresholds)],
            "probability_thresholds": [
                float(v) for v in self._require(self.probability_thresholds)
            ],
        }

    @classmethod
    def from_parameters(cls, parameters: Mapping[str, Any]) -> Self:
        """Build from the stored thresholds."""
        return cls(
            logit_thresholds=[float(v) for v in parameters["logit_thresholds"]],
            probability_thresholds=[float(v) for v in parameters["probability_thresholds"]],
        )


#: The calibrator class of each method.
CALIBRATORS: dict[CalibrationMethod, type[Calibrator]] = {
    CalibrationMethod.TEMPERATURE: TemperatureScaling,
    CalibrationMethod.PLATT: PlattScaling,
    CalibrationMethod.ISOTONIC: IsotonicCalibration,
}


def calibrator_from_dict(data: Mapping[str, Any]) -> Calibrator:
    """Return the fitted calibrator that :meth:`Calibrator.to_dict` described.

    Raises
    ------
    ValueError
        If ``"method"`` is missing or unknown, or the parameters are malformed.
    """
    if "method" not in data:
        raise ValueError("calibration parameters have no 'method'")
    method = CalibrationMethod.parse(str(data["method"]))
    return CALIBRATORS[method].from_dict({**data, "method": method.value})


@dataclass(frozen=True)
class CalibratorSelection:
    """The calibrator :func:`fit_best_calibrator` chose, and the evidence for it.

    Attributes
    ----------
    calibrator
        The chosen method, refitted on all the data given.
    cross_validated_ece
        Per method tried, the ECE of its out-of-fold probabilities.
    cross_validated_brier
        Per method tried, the Brier score of its out-of-fold probabilities.
    margin
        The ECE improvement a more complex method needed to be chosen (with a
        Brier score no higher).
    """

    calibrator: Calibrator
    cross_validated_ece: dict[str, float]
    cross_validated_brier: dict[str, float]
    margin: float


def fit_best_calibrator(
    logits: ArrayLike,
    labels: ArrayLike,
    methods: Sequence[str] = ("temperature", "platt", "isotonic"),
    *,
    margin: float = 0.01,
    folds: int = 5,
    bins: int = 10,
) -> CalibratorSelection:
    """Choose and fit a calibrator; prefer the simplest unless another is clearly better.

    Rule: each method is scored by the ECE (``bins`` equal-width bins) of its
    out-of-fold probabilities under stratified ``folds``-fold cross-validation
    (shuffled with a fixed seed, so deterministic), so a flexible method gains
    nothing from fitting the very cases it is scored on. Methods are visited
    simplest first (temperature, Platt, isotonic); the simplest is the initial
    choice, and a more complex method replaces the current choice only if its
    ECE is lower by at least ``margin`` (absolute) *and* its Brier score is no
    higher. The Brier condition guards against binned ECE's known preference
    for piecewise-constant maps such as isotonic regression: the Brier score is
    a proper scoring rule, so a method that lowers ECE by binning noise but
    predicts worse is not chosen. The chosen method is then refitted on all the
    data.

    Parameters
    ----------
    logits
        Held-out logits of one finding (the calibration split).
    labels
        0 or 1 per case.
    methods
        Names of the methods to try (any order; duplicates ignored); a single
        name is accepted too.
    margin
        ECE improvement, absolute and non-negative, that justifies a more
        complex method.
    folds
        Number of cross-validation folds, at least 2.
    bins
        Number of ECE bins.

    Returns
    -------
    CalibratorSelection
        The fitted calibrator and every method's cross-validated ECE and Brier score.

    Raises
    ------
    ValueError
        If no method is given or one is unknown, ``margin`` is negative,
        ``folds`` is below 2, either class has fewer than ``folds`` cases, or
        the inputs fail :func:`~medvision.calibration.metrics.binary_scores_and_labels`.
    """
    scores, targets = binary_scores_and_labels(logits, labels, probabilities=False)
    names = (methods,) if isinstance(methods, str) else methods
    chosen_methods = sorted(
        {CalibrationMethod.parse(name) for name in names}, key=list(CalibrationMethod).index
    )
    if not chosen_methods:
        raise ValueError("give at least one calibration method")
    if margin < 0.0:
        raise ValueError(f"margin must be zero or more, got {margin}")
    if folds < 2:
        raise ValueError(f"folds must be at least 2, got {folds}")
    positives = int(targets.sum())
    negatives = targets.size - positives
    if min(positives, negatives) < folds:
        raise ValueError(
            f"{folds}-fold selection needs at least {folds} positive and {folds} negative "
            f"cases, got {positives} positive and {negatives} negative; fit a single method "
            "instead"
        )
    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=0)
    splits = list(splitter.split(scores, targets))
    ece: dict[str, float] = {}
    brier: dict[str, float] = {}
    for method in chosen_methods:
        out_of_fold = np.empty_like(scores)
        for fit_index, score_index in splits:
            calibrator = CALIBRATORS[method]().fit(scores[fit_index], targets[fit_index])
            out_of_fold[score_index] = calibrator.transform(scores[score_index])
        ece[method.value] = expected_calibration_error(out_of_fold, targets, bins)
        brier[method.value] = brier_score(out_of_fold, targets)
    best = chosen_methods[0]
    for method in chosen_methods[1:]:
        if (
            ece[method.value] <= ece[best.value] - margin
            and brier[method.value] <= brier[best.value]
        ):
            best = method
    return CalibratorSelection(
        calibrator=CALIBRATORS[best]().fit(scores, targets),
        cross_validated_ece=ece,
        cross_validated_brier=brier,
        margin=margin,
    )
