"""Recalibrate a registered model on a manifest (``medvision calibrate``).

The weights are never changed: the model is loaded (SHA-256 verified), its
calibration and thresholds are refitted with
:func:`medvision.calibration.refit.calibrate_model`, and the updated entry is
written with the same weights hash. When the output folder is not the model's,
the weights file is copied there byte for byte (and its hash checked), so the
output folder is a complete registry. The report
(:mod:`medvision.calibration.report`) goes to
``<out>/reports/<model name>/calibration_report.json``: a registry folder may
hold no JSON file other than model entries.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from medvision.calibration.refit import CalibrationOutcome, calibrate_model
from medvision.calibration.report import calibration_report
from medvision.models.registry import (
    WeightsIntegrityError,
    load_model,
    read_entry,
    sha256_of,
    with_test_time_looks,
)
from medvision.training.loop import select_device

#: File name of the report.
REPORT_NAME = "calibration_report.json"


@dataclass(frozen=True)
class Recalibration:
    """What :func:`recalibrate` did and where it wrote it."""

    outcome: CalibrationOutcome
    entry_path: Path
    report_path: Path


def report_path_for(out: Path, model_name: str) -> Path:
    """Return where the report of ``model_name`` goes under the output folder ``out``."""
    return out / "reports" / model_name / REPORT_NAME


def _write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically (a reader never sees half an entry)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as stream:
            stream.write(text)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def recalibrate(
    entry_path: Path,
    manifest: Path,
    *,
    out: Path | None = None,
    target_sensitivity: float = 0.90,
    per_site: bool = False,
    min_site_cases: int = 50,
    device: str = "auto",
    progress: bool = True,
    test_time_looks: int | None = None,
) -> Recalibration:
    """Refit a registered model's calibration and thresholds; write the entry and report.

    Parameters
    ----------
    entry_path
        The model's registry entry (``<name>.json`` beside its weights).
    manifest
        Manifest with ``calibration`` and ``tune`` splits (``test`` optional) of
        the model's modality.
    out
        Folder for the updated entry (same file name), its weights and the
        report; default: the entry's own folder (updated in place).
    target_sensitivity
        Sensitivity each threshold must reach on ``tune`` and ``calibration`` together, in (0, 1).
    per_site, min_site_cases
        Also fit a calibrator per site with at least that many calibration cases.
    device
        ``auto``, ``cpu`` or ``cuda``.
    progress
        Show progress bars while scoring.
    test_time_looks
        Make the model average this many mirror images of each input when scoring
        (:func:`~medvision.models.registry.with_test_time_looks`), then fit the
        calibration and thresholds to those logits; ``None`` keeps the entry's.

    Raises
    ------
    ValueError
        For a target sensitivity outside (0, 1), an unknown device, a split that
        cannot calibrate (see :func:`~medvision.calibration.refit.calibrate_model`),
        or test-time looks the model cannot use.
    medvision.models.registry.RegistryError
        For a malformed entry, or weights failing the SHA-256 check
        (:class:`~medvision.models.registry.WeightsIntegrityError`).
    """
    if not 0.0 < target_sensitivity < 1.0:
        raise ValueError(f"target sensitivity must be in (0, 1), got {target_sensitivity}")
    torch_device = select_device(device)
    entry = read_entry(entry_path)
    if test_time_looks is not None:
        entry = with_test_time_looks(entry, test_time_looks)
    source = entry_path.parent
    network = load_model(entry, source)
    outcome = calibrate_model(
        network,
        entry,
        manifest,
        device=torch_device,
        target_sensitivity=target_sensitivity,
        per_site=per_site,
        min_site_cases=min_site_cases,
        progress=progress,
    )
    target = source if out is None else out
    target.mkdir(parents=True, exist_ok=True)
    if target.resolve() != source.resolve():
        copied = target / entry.weights_file
        shutil.copyfile(source / entry.weights_file, copied)
        if sha256_of(copied) != entry.weights_sha256:
            raise WeightsIntegrityError(
                f"model {entry.name}: the copy {copied} differs from its source"
            )
    written = target / entry_path.name
    _write_text(written, outcome.entry.to_json())
    report = report_path_for(target, entry.name)
    document = calibration_report(
        outcome, manifest=manifest, target_sensitivity=target_sensitivity, per_site=per_site
    )
    _write_text(report, json.dumps(document, indent=2, allow_nan=False) + "\n")
    return Recalibration(outcome=outcome, entry_path=written, report_path=report)
