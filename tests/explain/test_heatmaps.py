"""Heatmaps of scored studies: on the DICOM grid, per finding and view, scores unchanged."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from medvision.data.manifest import ManifestRow
from medvision.explain.heatmaps import StudyExplanation, explain_study
from medvision.inference.scoring import PreparedStudy, Scorer, StudyScore, scorer_for
from medvision.modality import FINDINGS, Modality
from medvision.models.networks import build_network
from medvision.models.registry import ModelEntry, Task
from medvision.transforms import default_chain
from medvision.transforms.loading import study_item
from tests.conftest import dicom_image_shapes, tiny_densenet

CPU = torch.device("cpu")


def _entry(modality: Modality, outputs: int) -> ModelEntry:
    chain = default_chain(modality)
    return ModelEntry(
        name=f"tiny-{modality.value}",
        version="0",
        modality=modality,
        findings=FINDINGS[modality],
        task=Task.CLASSIFICATION,
        network=tiny_densenet(outputs, "evidence_densenet"),
        transforms=chain.describe(),
        input_size=tuple(int(v) for v in getattr(chain, "input_size", ())),
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


def _scored(phantom_set: tuple[Path, list[ManifestRow]], modality: Modality) -> Scored:
    folder, rows = phantom_set
    row = next(row for row in rows if row.modality == modality)
    entry = _entry(modality, 1 if modality == Modality.MAMMO else len(FINDINGS[modality]))
    torch.manual_seed(0)
    network = build_network(entry.network)
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


def test_a_breast_finding_gets_one_heatmap_per_view_of_that_breast(
    phantom_set: tuple[Path, list[ManifestRow]],
) -> None:
    scored = _scored(phantom_set, Modality.MAMMO)
    explanation = scored.explain(["malignancy_left", "malignancy"])
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


def test_a_ct_model_is_noted_as_not_explained_by_grad_cam(
    phantom_set: tuple[Path, list[ManifestRow]],
) -> None:
    scored = _scored(phantom_set, Modality.CXR)
    ct_entry = replace(scored.entry, modality=Modality.CT, findings=("nodule",))
    transforms = scored.scorer.transforms(scored.entry)
    explanation = explain_study(
        scored.network, ct_entry, scored.study, scored.score, transforms, ["nodule"]
    )
    assert explanation.heatmaps == []
    assert explanation.notes["nodule"].startswith(
        "no heatmap: Grad-CAM explains 2-D classifiers (chest X-ray, fundus, mammography)"
    )
