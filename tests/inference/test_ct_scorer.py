"""Tests of the CT nodule segmenter's scorer."""

from __future__ import annotations

import math
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from medvision.data.manifest import ManifestRow, resolve
from medvision.evaluation.ct_detection import dice_coefficient, load_ground_truth, match_nodules
from medvision.inference.ct import (
    CtSegmenterScorer,
    equivalent_diameter_mm,
    find_nodules,
    study_score_from_logits,
)
from medvision.inference.scoring import scorer_for
from medvision.modality import Modality
from medvision.models.registry import ModelEntry, Task
from medvision.synth.generator import SynthConfig, generate
from medvision.transforms.ct import CtTransforms
from medvision.transforms.loading import StudyLoadError, study_item

#: Seed of a positive phantom with two nodules of 10.3 and 11.5 mm (Cygnus LD-16, 53 slices).
SEED = 14

Study = tuple[Path, ManifestRow]


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory) -> Study:
    out = tmp_path_factory.mktemp("ct-scorer")
    config = SynthConfig((Modality.CT,), 1, SEED, out, prevalence={"*": 1.0}, workers=1)
    rows = generate(config, progress=False)
    return out / "manifest.csv", rows[0]


class ConstantLogit(nn.Module):
    """A stand-in network whose every voxel has the same logit."""

    def __init__(self, logit: float) -> None:
        super().__init__()
        self.logit = nn.Parameter(torch.tensor(logit))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.zeros_like(x) + self.logit


class ConstantShift(nn.Module):
    """Add a constant to the input."""

    def __init__(self, shift: float) -> None:
        super().__init__()
        self.shift = shift

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.shift


def _entry() -> ModelEntry:
    return ModelEntry(
        name="ct-test",
        version="0",
        modality=Modality.CT,
        findings=("nodule",),
        task=Task.SEGMENTATION,
        network={"architecture": "unet"},
        transforms=CtTransforms().describe(),
        input_size=(96, 96, 64),
    )


def test_find_nodules_measures_a_cube_and_drops_a_lone_voxel() -> None:
    logits = np.full((6, 6, 6), -4.0, dtype=np.float32)
    logits[1:3, 1:3, 1:3] = 2.0  # 8 voxels of 8 mm^3: 64 mm^3
    logits[1, 1, 1] = 3.0
    logits[5, 5, 5] = 9.0  # one voxel, 8 mm^3: below a 3 mm sphere (14.1 mm^3)
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    affine[:3, 3] = [10.0, 20.0, 30.0]  # RAS origin
    labels, nodules = find_nodules(logits, affine)
    assert len(nodules) == 1
    nodule = nodules[0]
    assert nodule.voxels == 8
    assert nodule.volume_mm3 == pytest.approx(64.0)
    assert nodule.diameter_mm == pytest.approx((6.0 * 64.0 / math.pi) ** (1 / 3))
    # Centroid index (1.5, 1.5, 1.5) is RAS (13, 23, 33) mm, LPS (-13, -23, 33).
    assert nodule.centre_mm == (-13.0, -23.0, 33.0)
    assert nodule.logit == 3.0
    assert nodule.probability == pytest.approx(1.0 / (1.0 + math.exp(-3.0)))
    assert int(labels.sum()) == 8 and labels[5, 5, 5] == 0


def test_equivalent_diameter_of_a_sphere_volume_is_its_diameter() -> None:
    assert equivalent_diameter_mm(math.pi / 6.0 * 10.0**3) == pytest.approx(10.0)


def test_ground_truth_mask_maps_back_onto_the_dicom_grid_and_the_nodules(study: Study) -> None:
    manifest, row = study
    chain = CtTransforms().build(False, mask_key="label")
    item = chain(study_item(row, manifest))
    logits = np.where(item["label"].numpy() > 0.5, 10.0, -10.0)
    score = study_score_from_logits(logits, item, chain, ("nodule",))
    truth, truth_mask = load_ground_truth(row, manifest)
    mask = score.masks["nodule"]
    assert mask.dtype == np.uint8
    assert mask.shape == truth_mask.shape == (53, 160, 160)
    assert dice_coefficient(mask, truth_mask) > 0.95
    locations = score.locations["nodule"]
    assert len(locations) == len(truth) == 2
    hits = match_nodules(
        [loc.centre for loc in locations],
        [n.centre_mm for n in truth],
        [n.diameter_mm for n in truth],
    )
    assert hits.sum(axis=0).tolist() == [1, 1]
    for location, column in zip(locations, hits.argmax(axis=1), strict=True):
        nodule = truth[column]
        assert np.linalg.norm(np.subtract(nodule.centre_mm, location.centre)) < 2.0
        assert location.diameter_mm == pytest.approx(nodule.diameter_mm, rel=0.15)
        assert location.referenced_uid == item["image"].meta["series_instance_uid"]
    assert score.logits == {"nodule": 10.0}


def test_scorer_is_registered_and_gives_a_mask_of_the_series_shape(study: Study) -> None:
    manifest, row = study
    entry = _entry()
    scorer = scorer_for(entry)
    assert isinstance(scorer, CtSegmenterScorer)
    prepared = scorer.prepare(entry, study_item(row, manifest))
    [score] = scorer.score(ConstantLogit(-5.0), entry, [prepared], torch.device("cpu"))
    assert score.study_instance_uid == row.study_instance_uid
    assert score.masks["nodule"].shape == (53, 160, 160)
    assert not score.masks["nodule"].any()
    assert score.locations == {"nodule": []}
    # No nodule: the study logit is the volume's highest logit.
    assert score.logits["nodule"] == pytest.approx(-5.0)


def test_prepare_refuses_a_study_with_a_corrupt_slice(study: Study, tmp_path: Path) -> None:
    manifest, row = study
    folder = tmp_path / "study"
    shutil.copytree(resolve(manifest, row.path), folder)
    slices = sorted(folder.rglob("*.dcm"))
    slices[len(slices) // 2].write_bytes(b"not a DICOM file")
    item = {**study_item(row, manifest), "study": str(folder)}
    with pytest.raises(StudyLoadError, match="unevenly spaced"):
        CtSegmenterScorer().prepare(_entry(), item)


def test_prepare_refuses_a_folder_without_the_study(study: Study, tmp_path: Path) -> None:
    manifest, row = study
    item = {**study_item(row, manifest), "study": str(tmp_path)}
    with pytest.raises(StudyLoadError, match="no DICOM file of this study"):
        CtSegmenterScorer().prepare(_entry(), item)


def test_with_the_dot_filter_the_network_gets_it_as_a_second_channel(study: Study) -> None:
    manifest, row = study
    plain = _entry()
    dotted = replace(
        plain,
        transforms=CtTransforms(dot_enhancement=True).describe(),
        network={"architecture": "unet", "in_channels": 2},
    )
    scorer = CtSegmenterScorer()
    item = study_item(row, manifest)
    image = scorer.prepare(dotted, item).inputs[0]["item"]["image"]
    assert image.shape[0] == 2
    assert torch.equal(image[0], scorer.prepare(plain, item).inputs[0]["item"]["image"][0])
    # A network that reads the dot filter alone: logit = 4 (filter - 0.5).
    weights = nn.Conv3d(2, 1, kernel_size=1, bias=False)
    with torch.no_grad():
        weights.weight.copy_(torch.tensor([0.0, 4.0]).reshape(1, 2, 1, 1, 1))
    reader = nn.Sequential(weights, ConstantShift(-2.0))
    prepared = scorer.prepare(dotted, item)
    [score] = scorer.score(reader, dotted, [prepared], torch.device("cpu"))
    nodules, _ = load_ground_truth(row, manifest)
    found = score.locations["nodule"]
    hits = match_nodules(
        [n.centre for n in found], [n.centre_mm for n in nodules], [n.diameter_mm for n in nodules]
    )
    # With no learning at all, the filter marks the 10.3 mm nodule (and, at this low
    # threshold, many vessel branchings: the network's job is to tell them apart).
    assert [n.diameter_mm for n in nodules] == [11.5, 10.3]
    assert hits[:, 1].any()
    assert len(found) > 10


def test_a_network_whose_input_channels_differ_from_the_chain_is_refused(study: Study) -> None:
    manifest, row = study
    entry = replace(
        _entry(),
        transforms=CtTransforms(dot_enhancement=True).describe(),
        network={"architecture": "unet", "in_channels": 1},
    )
    with pytest.raises(
        ValueError, match=r"its network takes 1 input channel\(s\), its CT chain gives 2"
    ):
        CtSegmenterScorer().prepare(entry, study_item(row, manifest))
