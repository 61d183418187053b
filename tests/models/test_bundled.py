"""The bundled weights: every entry loads with a verified hash and is complete."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from medvision.inference.scoring import scorer_for
from medvision.models.registry import BUNDLED_WEIGHTS, ModelEntry, load_model, load_registry

ENTRIES = sorted(load_registry(BUNDLED_WEIGHTS).values(), key=lambda entry: entry.name)
DOCS = Path(__file__).resolve().parents[2] / "docs"


@pytest.mark.parametrize("entry", ENTRIES, ids=[entry.name for entry in ENTRIES])
def test_bundled_model_loads_verified_and_is_calibrated(entry: ModelEntry) -> None:
    network = load_model(entry)
    assert not network.training
    assert set(entry.thresholds) == set(entry.findings) == set(entry.calibration)
    assert all(0.0 < entry.thresholds[f] <= 1.0 for f in entry.findings)
    scale = entry.grade_scale
    if scale is not None:  # a grading model has every cut point's threshold chosen
        assert set(entry.grade_thresholds) == set(scale.output_names())
    assert (BUNDLED_WEIGHTS / entry.weights_file).stat().st_size < 8 * 1024 * 1024
    state = torch.load(BUNDLED_WEIGHTS / entry.weights_file, weights_only=True)
    assert all(v.dtype == torch.float16 for v in state.values() if v.is_floating_point())
    scorer_for(entry)
    assert (DOCS / entry.model_card).is_file(), f"model card {entry.model_card} missing"


def test_every_modality_has_at_most_one_bundled_model() -> None:
    modalities = [entry.modality for entry in ENTRIES]
    assert len(modalities) == len(set(modalities))
