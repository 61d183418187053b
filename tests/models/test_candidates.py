"""The committed candidate models load, verify and fit their chains; serving never reads them."""

from __future__ import annotations

from pathlib import Path

import pytest

from medvision.inference.ct import ct_chain
from medvision.modality import Modality
from medvision.models.registry import BUNDLED_WEIGHTS, load_model, load_registry

CANDIDATES = Path(__file__).resolve().parents[2] / "candidates"
FOLDERS = sorted(path for path in CANDIDATES.iterdir() if path.is_dir())


def test_candidates_are_kept_apart_from_the_bundled_weights() -> None:
    assert FOLDERS
    assert CANDIDATES not in BUNDLED_WEIGHTS.parents
    bundled = {entry.weights_sha256 for entry in load_registry().values()}
    candidates = {e.weights_sha256 for f in FOLDERS for e in load_registry(f).values()}
    assert not bundled & candidates


@pytest.mark.parametrize("folder", FOLDERS, ids=[folder.name for folder in FOLDERS])
def test_each_candidate_verifies_its_weights_and_fits_its_chain(folder: Path) -> None:
    entries = load_registry(folder)
    assert len(entries) == 1
    [entry] = entries.values()
    network = load_model(entry, folder)  # verifies the SHA-256
    assert not network.training
    if entry.modality == Modality.CT:
        assert ct_chain(entry).channels == entry.network["in_channels"]
    if entry.modality == Modality.MAMMO:  # the looks it was calibrated with are served
        looks = entry.network.get("test_time_looks", 1)
        assert getattr(network, "test_time_looks", None) == looks
