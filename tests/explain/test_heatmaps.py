"""Heatmaps of scored studies: on the DICOM grid, per finding and view, scores unchanged."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pydicom
import pytest
import torch
from torch import nn

from medvision.data.manifest import ManifestRow
from medvision.explain.heatmaps import (
    GRAD_CAM,
    HIRES_CAM,
    NO_EVIDENCE,
    StudyExplanation,
    explain_study,
)
from medvision.inference.scoring import PreparedStudy, Scorer, StudyScore, scorer_for
from medvision.modality import FINDINGS, Modality
from medvision.models.networks import EvidenceMapDenseNet, build_network
from medvision.models.registry import ModelEntry, Task
from medvision.transforms import default_chain
from medvision.transforms.loading import study_item
from tests.conftest import dicom_image_shapes, tiny_densenet, tiny_unet

CPU = torch.device("cpu")


def _entry(modality: Modality) -> ModelEntry:
    """A tiny untrained model of ``modality``: a classifier, or for CT a U-Net segmenter."""
    chain = default_chain(modality)
    input_size: tuple[int, ...]
    if modality == Modality.CT:
        network, task, input_size = tiny_unet(1), Task.SEGMENTATION, (32, 32, 32)
    else:
        outputs = 1 if modality == Modality.MAMMO else len(FINDINGS[modality])
        network, task = tiny_densenet(outputs, "evidence_densenet"), Task.CLASSIFICATION
        input_size = tuple(int(v) for v in getattr(chain, "input_size", ()))
    return ModelEntry(
        name=f"tiny-{modality.value}",
        version="0",
        modality=modality,
        findings=("nodule",) if modality == Modality.CT else FINDINGS[modality],
        task=task,
        network=network,
        transforms=chain.describe(),
        input_size=input_size,
    )


@dataclass(frozen=True)
class Scored:
    """A phantom study of one modality prepared and scored by a tiny untrained model."""

    folder: Path
    entry: ModelEntry
    network: nn.Module
    scorer: Scorer
    study: PreparedStudy
    score: StudyScore

    def explain(self, findings: list[str], score: StudyScore | None = None) -> StudyExplanation:
        transforms = self.scorer.transforms(self.entry)
        return explain_study(
            self.network, self.entry, self.study, score or self.score, transforms, findings
        )


def _scored(
    phantom_set: tuple[Path, list[ManifestRow]], modality: Modality, looks: int = 1
) -> Scored:
    """Score the set's first study of ``modality``; a classifier averages ``looks``."""
    folder, rows = phantom_set
    row = next(row for row in rows if row.modality == modality)
    entry = _entry(modality)
    torch.manual_seed(0)
    network = build_network(entry.network).eval()
    if looks != 1:
        assert isinstance(network, EvidenceMapDenseNet)
        network.test_time_looks = looks
    scorer = scorer_for(entry)
    study = scorer.prepare(entry, study_item(row, folder / "manifest.csv"))
    score = scorer.score(network, entry, [study], CPU)[0]
    return Scored(folder / row.path, entry, network, scorer, study, score)


def test_each_finding_gets_a_heatmap_on_the_source_image_grid(
    phantom_set: tuple[Path, list[ManifestRow]],
) -> None:
    scored = _scored(phantom_set, Modality.CXR)
    explanation = scored.explain(["nodule", "cardiomegaly"])
    assert explanation.notes == {}
    assert [h.finding for h in explanation.heatmaps] == ["nodule", "cardiomegaly"]
    ((sop_uid, shape),) = dicom_image_shapes(scored.folder).items()
    for heatmap in explanation.heatmaps:
        assert heatmap.referenced_uid == sop_uid
        assert heatmap.values.shape == shape
        assert heatmap.values.dtype == np.float32
        assert float(heatmap.values.min()) >= 0.0
        assert float(heatmap.values.max()) == pytest.approx(1.0)
        assert heatmap.values[heatmap.peak] == heatmap.values.max()
        assert heatmap.laterality == ""
        assert heatmap.method == GRAD_CAM == "Grad-CAM"
    # Explaining does not touch the score: scoring again gives the same logits.
    rescored = scored.scorer.score(scored.network, scored.entry, [scored.study], CPU)[0]
    assert rescored.logits == scored.score.logits


def test_a_score_that_the_explanation_does_not_reproduce_gets_a_note_not_a_heatmap(
    phantom_set: tuple[Path, list[ManifestRow]],
) -> None:
    scored = _scored(phantom_set, Modality.CXR)
    logits = scored.score.logits
    wrong = replace(scored.score, logits={**logits, "nodule": logits["nodule"] + 1.0})
    explanation = scored.explain(["nodule", "pneumothorax", "x"], wrong)
    assert [h.finding for h in explanation.heatmaps] == ["pneumothorax"]
    assert set(explanation.notes) == {"nodule", "x"}
    assert "the explanation's forward pass gave logit" in explanation.notes["nodule"]
    assert explanation.notes["x"] == "no heatmap: model tiny-cxr has no finding 'x'"


@pytest.mark.parametrize("looks", [1, 4])
def test_a_breast_finding_gets_one_heatmap_per_view_of_that_breast(
    phantom_set: tuple[Path, list[ManifestRow]], looks: int
) -> None:
    scored = _scored(phantom_set, Modality.MAMMO, looks)
    explanation = scored.explain(["malignancy_left", "malignancy"])
    # With test-time looks too, the explanation's pass reproduces the averaged logit.
    assert explanation.notes == {}
    shapes = dicom_image_shapes(scored.folder)
    score = scored.score
    left = [h for h in explanation.heatmaps if h.finding == "malignancy_left"]
    assert [h.laterality for h in left] == ["L", "L"]
    worse = "L" if score.logits["malignancy_left"] >= score.logits["malignancy_right"] else "R"
    study_level = [h for h in explanation.heatmaps if h.finding == "malignancy"]
    assert [h.laterality for h in study_level] == [worse, worse]
    for heatmap in explanation.heatmaps:
        assert heatmap.values.shape == shapes[heatmap.referenced_uid]
    assert len({h.referenced_uid for h in left}) == 2


def test_a_ct_finding_gets_a_3d_heatmap_shown_on_its_peak_slice(
    phantom_set: tuple[Path, list[ManifestRow]],
) -> None:
    scored = _scored(phantom_set, Modality.CT)
    explanation = scored.explain(["nodule"])
    assert explanation.notes == {}
    (heatmap,) = explanation.heatmaps
    shapes = dicom_image_shapes(scored.folder)  # one slice per SOP instance
    assert heatmap.method == HIRES_CAM == "HiResCAM"
    volume = heatmap.volume
    assert volume is not None and volume.dtype == np.float32
    assert volume.shape == (len(shapes), *heatmap.values.shape)
    assert heatmap.values.shape == shapes[heatmap.referenced_uid]
    assert float(volume.max()) == pytest.approx(1.0) == float(heatmap.values.max())
    assert heatmap.values[heatmap.peak] == volume.max()
    # The slice shown is the referenced instance's: volume slices are in InstanceNumber order.
    numbers = {
        str(ds.SOPInstanceUID): int(ds.InstanceNumber)
        for ds in (pydicom.dcmread(f) for f in sorted(scored.folder.rglob("*")) if f.is_file())
    }
    ordered = sorted(numbers, key=numbers.__getitem__)
    assert np.array_equal(volume[ordered.index(heatmap.referenced_uid)], heatmap.values)
    # A score the explanation does not reproduce gets a note instead.
    wrong = replace(scored.score, logits={"nodule": scored.score.logits["nodule"] + 0.5})
    refused = scored.explain(["nodule"], wrong)
    assert refused.heatmaps == []
    assert "the explanation's forward pass gave logit" in refused.notes["nodule"]


def test_an_explanation_that_fails_is_a_note_not_an_exception(
    phantom_set: tuple[Path, list[ManifestRow]],
) -> None:
    scored = _scored(phantom_set, Modality.CXR)
    # A chest X-ray study and network handed over as a CT model's: explaining fails.
    other = replace(scored.entry, modality=Modality.CT, findings=("nodule",))
    transforms = scored.scorer.transforms(scored.entry)
    explanation = explain_study(
        scored.network, other, scored.study, scored.score, transforms, ["nodule"]
    )
    assert explanation.heatmaps == []
    assert explanation.notes["nodule"].startswith("no heatmap: ")


def test_a_map_that_is_zero_everywhere_is_a_note_not_an_empty_overlay(
    phantom_set: tuple[Path, list[ManifestRow]],
) -> None:
    folder, rows = phantom_set
    row = next(row for row in rows if row.modality == Modality.CXR)
    entry = _entry(Modality.CXR)
    network = build_network(entry.network).eval()
    assert isinstance(network, EvidenceMapDenseNet)
    with torch.no_grad():  # no feature moves any logit: Grad-CAM has nothing to show
        network.evidence.weight.zero_()
    scorer = scorer_for(entry)
    study = scorer.prepare(entry, study_item(row, folder / "manifest.csv"))
    score = scorer.score(network, entry, [study], CPU)[0]
    transforms = scorer.transforms(entry)
    explanation = explain_study(network, entry, study, score, transforms, ["nodule"])
    assert explanation.heatmaps == []
    assert explanation.notes == {"nodule": f"no heatmap: {NO_EVIDENCE}"}
