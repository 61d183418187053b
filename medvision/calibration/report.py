"""The calibration report: what recalibrating a model did, as JSON data and as a table.

Per finding: the calibrator chosen, ECE and Brier score before (sigmoid of the
raw logit) and after calibration on the calibration split, the threshold chosen
on ``tune`` and ``calibration`` together with its sensitivity and specificity there
(JSON key ``operating_point``; Wilson 95 % intervals,
:func:`medvision.statistics.wilson_interval`), and, when the test split has both
classes, the calibrated ECE and Brier score and the threshold's sensitivity and
specificity on ``test``. A grading model adds ``grading``: its cut points'
thresholds and the quadratic weighted kappa they give
(:class:`~medvision.calibration.grade_thresholds.GradeCalibration`).
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

from medvision.calibration.operating_point import OperatingPoint
from medvision.calibration.refit import CalibrationOutcome

#: Version of the report's JSON layout (2: the threshold's own figures are under
#: ``operating_point``, measured on tune and calibration together; 1 had them under ``tune``).
REPORT_FORMAT_VERSION = 2


def _operating_point(point: OperatingPoint | None) -> dict[str, Any] | None:
    if point is None:
        return None
    document = asdict(point)
    document["sensitivity_ci"] = list(point.sensitivity_ci)
    document["specificity_ci"] = list(point.specificity_ci)
    return document


def calibration_report(
    outcome: CalibrationOutcome,
    *,
    manifest: Path,
    target_sensitivity: float,
    per_site: bool,
) -> dict[str, Any]:
    """Return the report as JSON-ready data (``calibration_report.json``).

    Parameters
    ----------
    outcome
        What :func:`medvision.calibration.refit.calibrate_model` returned.
    manifest
        The manifest it used.
    target_sensitivity, per_site
        The options it ran with.
    """
    entry = outcome.entry
    findings: dict[str, Any] = {}
    for name, finding in outcome.findings.items():
        findings[name] = {
            "method": finding.method,
            "calibration_auroc": finding.auroc,
            "discriminates": finding.discriminates,
            "ece_before": finding.ece_before,
            "ece_after": finding.ece_after,
            "brier_before": finding.brier_before,
            "brier_after": finding.brier_after,
            "threshold": finding.operating_point.threshold,
            "operating_point": _operating_point(finding.operating_point),
            "test_ece": finding.test_ece,
            "test_brier": finding.test_brier,
            "test": _operating_point(finding.test_operating_point),
            "sites_with_own_calibrator": list(finding.sites),
        }
    return {
        "format_version": REPORT_FORMAT_VERSION,
        "model": {
            "name": entry.name,
            "version": entry.version,
            "modality": entry.modality.value,
            "weights_sha256": entry.weights_sha256,
        },
        "manifest": str(manifest),
        "target_sensitivity": target_sensitivity,
        "per_site": per_site,
        "findings": findings,
        **({"grading": asdict(outcome.grading)} if outcome.grading is not None else {}),
    }


def _number(value: float | None, width: int) -> str:
    return f"{'-':>{width}}" if value is None else f"{value:>{width}.3f}"


def _proportion(value: float, interval: tuple[float, float]) -> str:
    return f"{value:.3f} [{interval[0]:.3f}, {interval[1]:.3f}]"


def format_calibration_table(outcome: CalibrationOutcome, target_sensitivity: float) -> str:
    """Return the report as two plain-text tables: calibration, then operating points."""
    width = max([len("finding"), *(len(name) for name in outcome.findings)]) + 2
    lines = [
        "calibration (ECE and Brier on the calibration split, then calibrated on test)",
        f"{'finding':<{width}}{'method':<13}{'ECE before':>11}{'ECE after':>11}"
        f"{'Brier before':>14}{'Brier after':>13}{'test ECE':>10}{'test Brier':>12}",
    ]
    for name, finding in outcome.findings.items():
        lines.append(
            f"{name:<{width}}{finding.method:<13}{_number(finding.ece_before, 11)}"
            f"{_number(finding.ece_after, 11)}{_number(finding.brier_before, 14)}"
            f"{_number(finding.brier_after, 13)}{_number(finding.test_ece, 10)}"
            f"{_number(finding.test_brier, 12)}"
        )
    column = 26
    lines += [
        "",
        f"operating points (threshold chosen on tune + calibration for sensitivity >= "
        f"{target_sensitivity:g}; Wilson 95 % intervals)",
        f"{'finding':<{width}}{'threshold':>10}  {'chosen-on sensitivity':<{column}}"
        f"{'chosen-on specificity':<{column}}{'test sensitivity':<{column}}test specificity",
    ]
    for name, finding in outcome.findings.items():
        tune = finding.operating_point
        test = finding.test_operating_point
        test_cells = (
            f"{_proportion(test.sensitivity, test.sensitivity_ci):<{column}}"
            f"{_proportion(test.specificity, test.specificity_ci)}"
            if test is not None
            else f"{'-':<{column}}-"
        )
        lines.append(
            f"{name:<{width}}{tune.threshold:>10.4f}  "
            f"{_proportion(tune.sensitivity, tune.sensitivity_ci):<{column}}"
            f"{_proportion(tune.specificity, tune.specificity_ci):<{column}}{test_cells}"
        )
    sites = {name: f.sites for name, f in outcome.findings.items() if f.sites}
    for name, names in sites.items():
        lines.append(f"{name}: own calibrator for {', '.join(names)}")
    for name, finding in outcome.findings.items():
        if not finding.discriminates:
            lines.append(
                f"warning: {name} does not discriminate on the calibration split (AUROC "
                f"{finding.auroc:.3f}); its calibrated probability carries no information"
            )
    grading = outcome.grading
    if grading is not None:
        chosen = ", ".join(f"{name} {value:.2f}" for name, value in grading.thresholds.items())
        on_test = "" if grading.test_kappa is None else f"; on test {grading.test_kappa:.3f}"
        lines += [
            "",
            f"{grading.scale}: cut-point thresholds {chosen} (chosen on tune + calibration, "
            f"{grading.cases} studies); quadratic weighted kappa there {grading.kappa:.3f} "
            f"(at one half {grading.kappa_at_half:.3f}){on_test}",
        ]
    return "\n".join(lines)
