"""Calibration: calibrated probabilities (temperature, Platt, isotonic), metrics, thresholds."""
