"""A tiny trained chest X-ray model and phantom studies for the pipeline's tests."""

from __future__ import annotations

import shutil
from dataclasses import dataclass, replace
from pathlib import Path

import pydicom
import pytest

from medvision.data.manifest import ManifestRow, read_manifest, resolve, write_manifest
from medvision.modality import Modality
from medvision.models.registry import ModelEntry
from medvision.synth.generator import SynthConfig, generate
from medvision.training.classifier import LossKind, TrainOptions, train_image_classifier
from tests.conftest import tiny_densenet

TINY_NETWORK = tiny_densenet(4)


@dataclass(frozen=True)
class TinyModel:
    """A registry folder with one trained cxr model, and the labelled studies behind it."""

    registry: Path
    entry: ModelEntry
    rows: list[ManifestRow]


def _absolute(row: ManifestRow, manifest: Path) -> ManifestRow:
    return replace(
        row,
        path=resolve(manifest, row.path),
        annotations=None if row.annotations is None else resolve(manifest, row.annotations),
        masks=None if row.masks is None else resolve(manifest, row.masks),
    )


def labelled_set(root: Path, modality: Modality, per_class: int, seed: int) -> Path:
    """Write a manifest whose train, tune and calibration splits each hold ``per_class``
    studies with every finding and ``per_class`` with none (so every split has both
    classes of every finding); return its path."""
    rows: list[ManifestRow] = []
    for offset, split in enumerate(("train", "tune", "calibration")):
        for prevalence in (0.0, 1.0):
            out = root / f"{split}-{int(prevalence)}"
            config = SynthConfig(
                (modality,),
                per_class,
                seed + 2 * offset + int(prevalence),
                out,
                prevalence={"*": prevalence},
                split=split,
                workers=1,
            )
            rows += [_absolute(row, out / "manifest.csv") for row in generate(config, False)]
    manifest = root / "labelled.csv"
    write_manifest(rows, manifest)
    return manifest


@pytest.fixture(scope="session")
def tiny_cxr_model(tmp_path_factory: pytest.TempPathFactory) -> TinyModel:
    """A 1-epoch tiny DenseNet trained, calibrated and registered on 6 phantom studies."""
    root = tmp_path_factory.mktemp("tiny-cxr")
    manifest = labelled_set(root / "data", Modality.CXR, per_class=1, seed=40)
    options = TrainOptions(
        modality=Modality.CXR,
        manifest=manifest,
        out=root / "models",
        epochs=1,
        batch_size=4,
        loss=LossKind.BCE,
        device="cpu",
        network=TINY_NETWORK,
    )
    result = train_image_classifier(options, progress=False)
    return TinyModel(registry=root / "models", entry=result.entry, rows=read_manifest(manifest))


def copy_study(row: ManifestRow, destination: Path) -> Path:
    """Copy a study's folder to ``destination/<UID>``; return the copy."""
    target = destination / row.study_instance_uid
    shutil.copytree(row.path, target)
    return target


def two_studies_and_a_text_file(tiny_cxr_model: TinyModel, folder: Path) -> Path:
    """Copy the tiny model's first two cxr studies into ``folder``, beside a text file."""
    for row in tiny_cxr_model.rows[:2]:
        copy_study(row, folder)
    (folder / "readme.txt").write_text("hello\n")
    return folder


def corrupt_pixel_data(folder: Path) -> None:
    """Cut the pixel data of every DICOM file below ``folder`` to 100 bytes."""
    for path in sorted(folder.rglob("*.dcm")):
        ds = pydicom.dcmread(path)
        ds.PixelData = ds.PixelData[:100]
        ds.save_as(path)


@pytest.fixture(scope="session")
def fundus_study(tmp_path_factory: pytest.TempPathFactory) -> ManifestRow:
    """One phantom fundus study (no model in the tiny registry serves fundus)."""
    out = tmp_path_factory.mktemp("fundus")
    rows = generate(SynthConfig((Modality.FUNDUS,), 1, 7, out, workers=1), progress=False)
    return _absolute(rows[0], out / "manifest.csv")
