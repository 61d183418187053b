import json

import numpy as np
import pytest
from numpy.typing import NDArray
from scipy.special import expit
from sklearn.isotonic import IsotonicRegression
from sklearn.metrics import roc_auc_score

from medvision.calibration.scaling import (
    Calibrator,
    IsotonicCalibration,
    PlattScaling,
    TemperatureScaling,
    calibrator_from_dict,
    fit_best_calibrator,
)


def _labels_for(probabilities: NDArray[np.float64], seed: int) -> NDArray[np.int64]:
    rng = np.random.default_rng(seed)
    return (rng.random(probabilities.size) < probabilities).astype(np.int64)


def _logits(size: int, scale: float, seed: int) -> NDArray[np.float64]:
    return np.random.default_rng(seed).normal(0.0, scale, size)


def test_temperature_scaling_recovers_the_temperature_that_generated_the_labels() -> None:
    # 20 000 cases with P(y = 1) = sigmoid(logit / 2); the estimate's standard error is
    # about 0.02, so a tolerance of 0.1 is five of them.
    logits = _logits(20_000, 4.0, seed=1)
    calibrator = TemperatureScaling().fit(logits, _labels_for(expit(logits / 2.0), seed=2))
    assert calibrator.temperature == pytest.approx(2.0, abs=0.1)


def test_platt_scaling_recovers_the_slope_and_intercept_that_generated_the_labels() -> None:
    # P(y = 1) = sigmoid(1.5 * logit - 1); tolerance 0.1 on each (several standard errors).
    logits = _logits(20_000, 1.0, seed=3)
    calibrator = PlattScaling().fit(logits, _labels_for(expit(1.5 * logits - 1.0), seed=4))
    assert calibrator.slope == pytest.approx(1.5, abs=0.1)
    assert calibrator.intercept == pytest.approx(-1.0, abs=0.1)


@pytest.mark.parametrize("calibrator", [TemperatureScaling(), PlattScaling()])
def test_temperature_and_platt_scaling_never_change_the_ranking(calibrator: Calibrator) -> None:
    logits = _logits(2_000, 2.0, seed=5)
    labels = _labels_for(expit(0.7 * logits + 0.3), seed=6)
    probabilities = calibrator.fit(logits, labels).transform(logits)
    assert roc_auc_score(labels, probabilities) == roc_auc_score(labels, logits)


def test_platt_slope_stays_positive_when_logits_are_anti_correlated() -> None:
    logits = _logits(500, 1.0, seed=7)
    calibrator = PlattScaling().fit(logits, _labels_for(expit(-2.0 * logits), seed=8))
    assert calibrator.slope == 1e-6


@pytest.mark.parametrize(
    "calibrator", [TemperatureScaling(), PlattScaling(), IsotonicCalibration()]
)
def test_registry_round_trip_through_json_gives_identical_outputs(calibrator: Calibrator) -> None:
    logits = _logits(1_000, 2.0, seed=9)
    calibrator.fit(logits, _labels_for(expit(logits), seed=10))
    restored = calibrator_from_dict(json.loads(json.dumps(calibrator.to_dict())))
    assert type(restored) is type(calibrator)
    queries = _logits(300, 4.0, seed=11)
    assert np.array_equal(restored.transform(queries), calibrator.transform(queries))


def test_isotonic_calibration_matches_sklearn_and_clips_beyond_the_fitted_range() -> None:
    logits = _logits(1_000, 2.0, seed=12)
    labels = _labels_for(expit(logits), seed=13)
    calibrator = IsotonicCalibration().fit(logits, labels)
    reference = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip").fit(logits, labels)
    queries = _logits(300, 4.0, seed=14)
    assert np.allclose(calibrator.transform(queries), reference.predict(queries), atol=1e-12)
    ends = calibrator.transform([logits.min() - 100.0, logits.max() + 100.0])
    assert ends.tolist() == [reference.y_thresholds_[0], reference.y_thresholds_[-1]]


def test_unfitted_calibrator_says_how_to_fit_it() -> None:
    with pytest.raises(RuntimeError, match=r"TemperatureScaling is not fitted: call fit"):
        TemperatureScaling().transform([0.0])


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"method": "temprature", "temperature": 1.0}, "Did you mean 'temperature'"),
        ({"method": " Platt", "slope": 0.0, "intercept": 0.0}, "slope must be finite and positive"),
        ({"temperature": 1.0}, "calibration parameters have no 'method'"),
        ({"method": "temperature"}, "temperature calibration lacks 'temperature'"),
        ({"method": "temperature", "temperature": -1.0}, "must be finite and positive"),
        ({"method": "platt", "slope": 1.0}, "platt calibration lacks 'intercept'"),
        (
            {
                "method": "isotonic",
                "logit_thresholds": [1.0, 0.0],
                "probability_thresholds": [0, 1],
            },
            "logit thresholds must be finite and strictly increasing",
        ),
    ],
)
def test_malformed_registry_parameters_are_refused(data: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        calibrator_from_dict(data)


def test_from_dict_of_one_class_refuses_another_method() -> None:
    with pytest.raises(ValueError, match="PlattScaling needs method 'platt', got 'temperature'"):
        PlattScaling.from_dict({"method": "temperature", "temperature": 1.0})


def test_best_calibrator_keeps_temperature_when_the_data_follow_a_temperature() -> None:
    logits = _logits(2_000, 4.0, seed=20)
    selection = fit_best_calibrator(logits, _labels_for(expit(logits / 2.0), seed=21))
    assert isinstance(selection.calibrator, TemperatureScaling)
    assert set(selection.cross_validated_ece) == {"temperature", "platt", "isotonic"}


def test_best_calibrator_takes_platt_when_the_data_need_an_intercept() -> None:
    logits = _logits(2_000, 1.0, seed=22)
    selection = fit_best_calibrator(logits, _labels_for(expit(1.5 * logits - 1.0), seed=23))
    assert isinstance(selection.calibrator, PlattScaling)


def test_best_calibrator_takes_isotonic_when_the_data_follow_a_step() -> None:
    logits = _logits(2_000, 2.0, seed=24)
    steps = np.where(logits < 0.0, 0.2, 0.8)
    selection = fit_best_calibrator(logits, _labels_for(steps, seed=25))
    assert isinstance(selection.calibrator, IsotonicCalibration)
    ece = selection.cross_validated_ece
    assert ece["isotonic"] <= ece["platt"] - selection.margin


def test_best_calibrator_tries_only_the_methods_given() -> None:
    logits = _logits(200, 1.0, seed=26)
    selection = fit_best_calibrator(logits, _labels_for(expit(logits), seed=27), "isotonic")
    assert isinstance(selection.calibrator, IsotonicCalibration)
    assert list(selection.cross_validated_brier) == ["isotonic"]


def test_best_calibrator_needs_enough_cases_of_each_class_for_its_folds() -> None:
    with pytest.raises(ValueError, match="needs at least 5 positive and 5 negative cases"):
        fit_best_calibrator([0.1, 0.2, 0.3, 0.4, 0.5, 0.6], [1, 0, 0, 0, 0, 0])
