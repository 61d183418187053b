"""Phantom studies on a chosen device, for the transform tests."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from numpy.typing import NDArray

from medvision.data.manifest import ManifestRow, resolve
from medvision.modality import Modality
from medvision.synth.catalogue import SITES, devices_for
from medvision.synth.generator import SynthConfig, generate

#: Seed of every phantom here: the same seed on two devices gives the same patient.
SEED = 7

#: A study: its manifest file and row.
Study = tuple[Path, ManifestRow]
MakeStudy = Callable[[Modality, str], Study]


def generate_on_device(out: Path, modality: Modality, model: str) -> Study:
    """Write one positive phantom study acquired on device ``model`` into ``out``.

    Only the device differs between calls with the same modality: one site whose
    device mix is that device, the same seed and study index, so the same patient
    and lesions.
    """
    site = replace(SITES[0], device_weights={model: 1.0})
    config = SynthConfig((modality,), 1, SEED, out, sites=(site,), workers=1, prevalence={"*": 1.0})
    rows = generate(config, progress=False)
    assert rows[0].manufacturer_model == model
    return out / "manifest.csv", rows[0]


def device_models(modality: Modality) -> list[str]:
    """Return the phantom device models of ``modality``."""
    return [device.model for device in devices_for(modality)]


def ground_truth_masks(study: Study) -> dict[str, NDArray[np.uint8]]:
    """Return the study's ground-truth masks by NPZ key."""
    manifest, row = study
    assert row.masks is not None
    with np.load(resolve(manifest, row.masks)) as npz:
        return {key: npz[key] for key in npz.files}


def dice(a: NDArray[np.bool_], b: NDArray[np.bool_]) -> float:
    """Return the Dice coefficient of two boolean masks."""
    return float(2.0 * np.logical_and(a, b).sum() / (a.sum() + b.sum()))


def pearson(a: NDArray[np.floating], b: NDArray[np.floating]) -> float:
    """Return Pearson's r of two arrays of one shape."""
    return float(np.corrcoef(np.ravel(a), np.ravel(b))[0, 1])


@pytest.fixture(scope="session")
def phantom_on_device(tmp_path_factory: pytest.TempPathFactory) -> MakeStudy:
    """Return a function that generates (once per session) a study on a device."""
    made: dict[tuple[Modality, str], Study] = {}

    def make(modality: Modality, model: str) -> Study:
        if (modality, model) not in made:
            out = tmp_path_factory.mktemp(f"{modality.value}-{model.replace(' ', '_')}")
            made[modality, model] = generate_on_device(out, modality, model)
        return made[modality, model]

    return make
