import shutil
from pathlib import Path

import pydicom
import pytest
import torch
from torch import nn

from medvision.data.manifest import ManifestRow
from medvision.inference.mammography import MammographyScorer, view_name
from medvision.inference.scoring import PreparedStudy, scorer_for
from medvision.modality import Modality
from medvision.synth.generator import SynthConfig, generate
from medvision.transforms.loading import StudyLoadError, study_item
from tests.conftest import classifier_entry

#: Per view, the constant its image is set to (dyadic, so every mean is exact in float32).
VIEW_VALUES = {"R-CC": 0.25, "R-MLO": 0.5, "L-CC": 0.625, "L-MLO": 0.875}


class MeanPixel(nn.Module):
    """A stub network: the logit of a view is the mean of its pixels."""

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return image.mean(dim=(1, 2, 3)).unsqueeze(1)


class TwoOutputs(nn.Module):
    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return torch.zeros(len(image), 2)


ENTRY = classifier_entry("stub-mammo", Modality.MAMMO, {})
CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def mammogram(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, ManifestRow]:
    out = tmp_path_factory.mktemp("mammo")
    rows = generate(SynthConfig((Modality.MAMMO,), 1, 3, out, workers=1), progress=False)
    return out / "manifest.csv", rows[0]


def _copy_without(
    mammogram: tuple[Path, ManifestRow], tmp_path: Path, views: set[str]
) -> dict[str, str]:
    """Copy the study, leaving out files of ``views`` (e.g. ``{"L-MLO"}``); return its item."""
    manifest, row = mammogram
    item = study_item(row, manifest)
    folder = tmp_path / "study"
    shutil.copytree(item["study"], folder)
    for path in folder.rglob("*.dcm"):
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        if f"{ds.ImageLaterality}-{ds.ViewPosition}" in views:
            path.unlink()
    return {"study": str(folder), "study_instance_uid": row.study_instance_uid}


def _set_view_values(study: PreparedStudy) -> None:
    for view in study.inputs:
        view["image"].fill_(VIEW_VALUES[view_name(view)])


def _sop_uids_by_laterality(folder: str) -> dict[str, set[str]]:
    uids: dict[str, set[str]] = {"R": set(), "L": set()}
    for path in Path(folder).rglob("*.dcm"):
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        uids[str(ds.ImageLaterality)].add(str(ds.SOPInstanceUID))
    return uids


def test_the_registry_serves_mammography_classifiers_with_this_scorer() -> None:
    assert isinstance(scorer_for(ENTRY), MammographyScorer)


def test_breast_logit_is_the_mean_of_its_views_and_the_study_logit_the_larger_breast(
    mammogram: tuple[Path, ManifestRow], tmp_path: Path
) -> None:
    scorer = MammographyScorer()
    study = scorer.prepare(ENTRY, _copy_without(mammogram, tmp_path, set()))
    assert [view_name(view) for view in study.inputs] == ["R-CC", "L-CC", "R-MLO", "L-MLO"]
    _set_view_values(study)
    (score,) = scorer.score(MeanPixel(), ENTRY, [study], CPU)
    assert score.study_instance_uid == mammogram[1].study_instance_uid
    assert score.logits == {
        "malignancy": 0.75,
        "malignancy_left": 0.75,
        "malignancy_right": 0.375,
    }


def test_each_breast_finding_is_located_on_the_views_of_that_breast(
    mammogram: tuple[Path, ManifestRow], tmp_path: Path
) -> None:
    item = _copy_without(mammogram, tmp_path, set())
    scorer = MammographyScorer()
    study = scorer.prepare(ENTRY, item)
    _set_view_values(study)
    (score,) = scorer.score(MeanPixel(), ENTRY, [study], CPU)
    uids = _sop_uids_by_laterality(item["study"])
    for laterality, finding in (("L", "malignancy_left"), ("R", "malignancy_right")):
        locations = score.locations[finding]
        assert {location.referenced_uid for location in locations} == uids[laterality]
        assert {location.laterality for location in locations} == {laterality}
    # The study's finding points at the breast that gave its logit (left here).
    assert score.locations["malignancy"] == score.locations["malignancy_left"]


def test_locations_lie_on_the_breast_in_the_source_image_whichever_scorer_scores(
    mammogram: tuple[Path, ManifestRow], tmp_path: Path
) -> None:
    study = MammographyScorer().prepare(ENTRY, _copy_without(mammogram, tmp_path, set()))
    (score,) = scorer_for(ENTRY).score(MeanPixel(), ENTRY, [study], CPU)
    rows, columns = study.inputs[0]["image"].meta["original_shape"]
    for finding in ("malignancy_left", "malignancy_right"):
        for location in score.locations[finding]:
            row, column = location.centre
            assert 0 <= row < rows
            # Left breasts are displayed with the chest wall on the left, right ones on the right.
            if location.laterality == "L":
                assert column < columns / 2
            else:
                assert column > columns / 2


def test_a_breast_with_one_view_is_scored_from_that_view(
    mammogram: tuple[Path, ManifestRow], tmp_path: Path
) -> None:
    scorer = MammographyScorer()
    study = scorer.prepare(ENTRY, _copy_without(mammogram, tmp_path, {"L-MLO"}))
    assert [view_name(view) for view in study.inputs] == ["R-CC", "L-CC", "R-MLO"]
    _set_view_values(study)
    (score,) = scorer.score(MeanPixel(), ENTRY, [study], CPU)
    assert score.logits["malignancy_left"] == 0.625
    assert score.logits["malignancy_right"] == 0.375
    assert len(score.locations["malignancy_left"]) == 1


def test_a_study_without_views_of_one_breast_is_refused_naming_that_breast(
    mammogram: tuple[Path, ManifestRow], tmp_path: Path
) -> None:
    item = _copy_without(mammogram, tmp_path, {"L-CC", "L-MLO"})
    with pytest.raises(
        StudyLoadError, match=r"no view of the left breast \(views found: R-CC, R-MLO\)"
    ):
        MammographyScorer().prepare(ENTRY, item)


def test_a_folder_without_the_study_is_refused_with_the_loaders_error(tmp_path: Path) -> None:
    item = {"study": str(tmp_path), "study_instance_uid": "1.2.3"}
    with pytest.raises(StudyLoadError, match=r"study 1\.2\.3: no DICOM file of this study"):
        MammographyScorer().prepare(ENTRY, item)


def test_a_network_with_more_than_one_output_is_refused(
    mammogram: tuple[Path, ManifestRow], tmp_path: Path
) -> None:
    scorer = MammographyScorer()
    study = scorer.prepare(ENTRY, _copy_without(mammogram, tmp_path, set()))
    with pytest.raises(ValueError, match=r"one logit per view, got output of shape \(4, 2\)"):
        scorer.score(TwoOutputs(), ENTRY, [study], CPU)


def test_studies_scored_together_keep_their_order_and_values(
    mammogram: tuple[Path, ManifestRow], tmp_path: Path
) -> None:
    scorer = MammographyScorer()
    full = scorer.prepare(ENTRY, _copy_without(mammogram, tmp_path / "a", set()))
    partial = scorer.prepare(ENTRY, _copy_without(mammogram, tmp_path / "b", {"R-CC"}))
    _set_view_values(full)
    _set_view_values(partial)
    scores = scorer.score(MeanPixel(), ENTRY, [partial, full], CPU)
    assert [s.logits["malignancy_right"] for s in scores] == [0.5, 0.375]
    assert [s.logits["malignancy_left"] for s in scores] == [0.75, 0.75]
