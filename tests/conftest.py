"""Shared fixtures: one small phantom set per test session (per xdist worker)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pydicom
import pytest
import torch

from medvision.data.manifest import ManifestRow
from medvision.modality import FINDINGS, Modality
from medvision.models.networks import build_network
from medvision.models.registry import ModelEntry, Task, save_model
from medvision.synth.generator import SynthConfig, generate
from medvision.transforms import default_chain
from medvision.transforms.chain import TransformChain

#: Studies per modality in the shared set: enough for every device of every modality.
SHARED_STUDIES = 9
SHARED_SEED = 2


@pytest.fixture(scope="session")
def phantom_set(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[ManifestRow]]:
    """A phantom set of every modality, written once; returns (folder, manifest rows)."""
    out = tmp_path_factory.mktemp("phantoms")
    config = SynthConfig(tuple(Modality), SHARED_STUDIES, SHARED_SEED, out, workers=1)
    rows = generate(config, progress=False)
    return out, rows


def tiny_densenet(out_channels: int, architecture: str = "densenet") -> dict[str, object]:
    """Return the description of a tiny 2-D DenseNet (one input channel) for fast tests."""
    return {
        "architecture": architecture,
        "spatial_dims": 2,
        "in_channels": 1,
        "out_channels": out_channels,
        "init_features": 4,
        "growth_rate": 4,
        "block_config": [1, 1],
    }


def classifier_entry(
    name: str, modality: Modality, network: dict[str, Any], chain: TransformChain | None = None
) -> ModelEntry:
    """Return an uncalibrated classifier entry of ``modality`` (default: its default chain)."""
    chain = chain if chain is not None else default_chain(modality)
    description = chain.describe()
    return ModelEntry(
        name=name,
        version="0",
        modality=modality,
        findings=FINDINGS[modality],
        task=Task.CLASSIFICATION,
        network=network,
        transforms=description,
        input_size=tuple(description["parameters"]["input_size"]),
    )


def save_untrained_cxr_model(
    directory: Path, name: str, network: dict[str, Any], seed: int
) -> tuple[ModelEntry, torch.nn.Module]:
    """Save an untrained cxr network of description ``network`` (seeded) as entry ``name``.

    Returns the entry as written (weights file and hash filled in) and the network.
    """
    torch.manual_seed(seed)
    module = build_network(network)
    entry = classifier_entry(name, Modality.CXR, network)
    return save_model(module, entry, directory), module


def tiny_unet(residual_units: int = 0) -> dict[str, object]:
    """Return the description of a tiny 3-D U-Net (one channel in, one out) for fast tests."""
    return {
        "architecture": "unet",
        "spatial_dims": 3,
        "in_channels": 1,
        "out_channels": 1,
        "channels": [4, 8],
        "strides": [2],
        "num_res_units": residual_units,
    }


def dicom_image_shapes(folder: Path) -> dict[str, tuple[int, int]]:
    """Return ``(Rows, Columns)`` of every DICOM file below ``folder``, by SOPInstanceUID."""
    shapes = {}
    for path in folder.rglob("*.dcm"):
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        shapes[str(ds.SOPInstanceUID)] = (int(ds.Rows), int(ds.Columns))
    return shapes


#: Skip marker for tests that run dicom3tools' validator.
needs_dciodvfy = pytest.mark.skipif(
    shutil.which("dciodvfy") is None, reason="needs dicom3tools (scripts/setup.sh)"
)


def dciodvfy_errors(path: Path) -> list[str]:
    """Return the ``Error`` lines dicom3tools' ``dciodvfy`` reports for one file."""
    result = subprocess.run(
        ["dciodvfy", str(path)], capture_output=True, text=True, timeout=60, check=False
    )
    return [line for line in result.stderr.splitlines() if line.startswith("Error")]
