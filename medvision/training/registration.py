"""Register a trained network: save, reload what is served, calibrate, save again.

Every trainer ends the same way, so the calibration always sees exactly the
served weights (fp16 as written, SHA-256 verified on reload):

1. write the fp16 weights and the uncalibrated entry
   (:func:`~medvision.models.registry.save_model`);
2. reload them with :func:`~medvision.models.registry.load_model`;
3. score the ``calibration``, ``tune`` and ``test`` rows through the model's
   registered scorer (:func:`~medvision.calibration.refit.score_rows`), unless
   scores are given;
4. fit calibration and thresholds
   (:func:`~medvision.calibration.refit.calibrate_model`) and write the entry
   again (same weights, same hash).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from medvision.calibration.refit import (
    CalibrationOutcome,
    SplitScores,
    calibrate_model,
    score_rows,
)
from medvision.data.manifest import ManifestRow
from medvision.models.registry import ModelEntry, load_model, save_model

#: The splits scored for calibration, thresholds and held-out figures.
SCORED_SPLITS = ("calibration", "tune", "test")


@dataclass(frozen=True)
class RegisteredModel:
    """A registered, calibrated model and the scores it was calibrated with.

    Attributes
    ----------
    entry
        The entry as written (calibration, thresholds, SHA-256).
    network
        The served network (the reloaded fp16 weights, in float32, on the device).
    scores
        Raw scores of each split in :data:`SCORED_SPLITS`.
    outcome
        What calibration did per finding.
    """

    entry: ModelEntry
    network: nn.Module
    scores: dict[str, SplitScores]
    outcome: CalibrationOutcome


def register_calibrated(
    network: nn.Module,
    entry: ModelEntry,
    *,
    out: Path,
    manifest: Path,
    splits: Mapping[str, Sequence[ManifestRow]],
    device: torch.device,
    target_sensitivity: float,
    progress: bool = True,
    keep_studies: Sequence[str] = (),
) -> RegisteredModel:
    """Save, reload, score, calibrate and save ``network`` (see the module docstring).

    Parameters
    ----------
    network
        The trained network (moved to the CPU to be written).
    entry
        Its entry without calibration or thresholds.
    out
        Folder for the weights and the entry.
    manifest
        The manifest the split rows come from.
    splits
        Rows of each split in :data:`SCORED_SPLITS` (``test`` may be empty).
    device
        Where the served network scores.
    target_sensitivity
        Sensitivity each threshold reaches on ``tune`` and ``calibration`` together.
    progress
        Show progress bars while scoring.
    keep_studies
        Splits whose full scorer outputs (locations, masks) are kept in the scores.
    """
    registered = save_model(network.to("cpu"), entry, out)
    served = load_model(registered, out).to(device)
    scored = {
        split: score_rows(
            served,
            registered,
            splits.get(split, []),
            manifest,
            device,
            progress=progress,
            description=split,
            keep_studies=split in keep_studies,
        )
        for split in SCORED_SPLITS
    }
    outcome = calibrate_model(
        served,
        registered,
        manifest,
        device=device,
        target_sensitivity=target_sensitivity,
        progress=progress,
        splits=scored,
    )
    written = save_model(served.to("cpu"), outcome.entry, out)
    return RegisteredModel(entry=written, network=served, scores=scored, outcome=outcome)
