"""Calibration slope and intercepts against statsmodels' logistic regressions."""

from __future__ import annotations

import numpy as np
import pytest
import statsmodels.api as sm

from validation.calibration import CLIP, calibration_line


def _predictions(seed: int, temperature: float, shift: float) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    truth_logit = rng.normal(0.0, 1.5, 2000)
    labels = (rng.random(2000) < 1 / (1 + np.exp(-truth_logit))).astype(int)
    predicted = 1 / (1 + np.exp(-(truth_logit / temperature + shift)))
    return predicted, labels


@pytest.mark.parametrize(("temperature", "shift"), [(1.0, 0.0), (0.5, 0.0), (2.0, -0.7)])
def test_the_fits_equal_statsmodels(temperature: float, shift: float) -> None:
    probabilities, labels = _predictions(0, temperature, shift)
    line = calibration_line(probabilities, labels)
    predictor = np.log(
        np.clip(probabilities, CLIP, 1 - CLIP) / (1 - np.clip(probabilities, CLIP, 1 - CLIP))
    )
    full = sm.Logit(labels, sm.add_constant(predictor)).fit(disp=0, tol=1e-12)
    assert line.slope_intercept == pytest.approx(full.params[0], abs=1e-6)
    assert line.slope == pytest.approx(full.params[1], abs=1e-6)
    offset = sm.GLM(
        labels, np.ones((labels.size, 1)), family=sm.families.Binomial(), offset=predictor
    ).fit(tol=1e-12)
    assert line.intercept_in_the_large == pytest.approx(offset.params[0], abs=1e-6)


def test_too_extreme_predictions_give_a_low_slope_too_high_a_negative_intercept() -> None:
    confident = calibration_line(*_predictions(1, 0.5, 0.0))  # logits doubled: too extreme
    assert confident.slope == pytest.approx(0.5, abs=0.06)
    high = calibration_line(*_predictions(2, 1.0, 1.0))  # every logit one too high
    assert high.intercept_in_the_large == pytest.approx(-1.0, abs=0.15)
    assert high.slope == pytest.approx(1.0, abs=0.1)


def test_one_class_or_bad_probabilities_are_refused() -> None:
    with pytest.raises(ValueError, match="need cases with and without the finding"):
        calibration_line([0.2, 0.4], [1, 1])
    with pytest.raises(ValueError):
        calibration_line([0.2, 1.4], [0, 1])
