from dataclasses import replace
from pathlib import Path

import numpy as np
import pydicom
import pytest
import torch

from medvision.inference.classifier import ImageClassifierScorer
from medvision.inference.scoring import scorer_for
from medvision.modality import FINDINGS, Modality
from medvision.models.networks import build_network
from medvision.models.registry import ModelEntry, Task
from medvision.synth.generator import SynthConfig, generate
from medvision.transforms import default_chain
from medvision.transforms.loading import StudyLoadError, study_item

CPU = torch.device("cpu")


def _entry(modality: Modality, channels: int) -> tuple[ModelEntry, torch.nn.Module]:
    findings = FINDINGS[modality]
    network = {
        "architecture": "densenet",
        "spatial_dims": 2,
        "in_channels": channels,
        "out_channels": len(findings),
        "init_features": 4,
        "growth_rate": 4,
        "block_config": [1, 1],
    }
    entry = ModelEntry(
        name=f"{modality.value}-tiny",
        version="0",
        modality=modality,
        findings=findings,
        task=Task.CLASSIFICATION,
        network=network,
        transforms=default_chain(modality).describe(),
        input_size=(256, 256),
    )
    torch.manual_seed(0)
    return entry, build_network(network).eval()


@pytest.fixture(scope="module")
def studies(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, object]]:
    """Items of three phantom cxr studies."""
    out = tmp_path_factory.mktemp("cxr")
    rows = generate(SynthConfig((Modality.CXR,), 3, 11, out, workers=1), progress=False)
    return [study_item(row, out / "manifest.csv") for row in rows]


@pytest.mark.parametrize("modality", [Modality.CXR, Modality.FUNDUS])
def test_single_image_classifiers_are_registered(modality: Modality) -> None:
    entry, _ = _entry(modality, 3 if modality == Modality.FUNDUS else 1)
    assert isinstance(scorer_for(entry), ImageClassifierScorer)


def test_prepare_gives_the_one_transformed_image(studies: list[dict[str, object]]) -> None:
    entry, _ = _entry(Modality.CXR, 1)
    prepared = ImageClassifierScorer().prepare(entry, studies[0])
    assert prepared.study_instance_uid == studies[0]["study_instance_uid"]
    assert len(prepared.inputs) == 1
    assert tuple(prepared.inputs[0]["image"].shape) == (1, 256, 256)


def test_a_batch_scores_like_the_network_on_each_image(studies: list[dict[str, object]]) -> None:
    entry, network = _entry(Modality.CXR, 1)
    scorer = ImageClassifierScorer()
    prepared = [scorer.prepare(entry, item) for item in studies]
    scores = scorer.score(network, entry, prepared, CPU)
    assert [s.study_instance_uid for s in scores] == [p.study_instance_uid for p in prepared]
    for study, score in zip(prepared, scores, strict=True):
        with torch.no_grad():
            expected = network(study.inputs[0]["image"].as_tensor()[None])[0].numpy()
        assert list(score.logits) == list(entry.findings)
        np.testing.assert_allclose(list(score.logits.values()), expected, rtol=1e-4, atol=1e-5)
        assert score.locations == {}
        assert score.masks == {}
    assert scorer.score(network, entry, [], CPU) == []


def test_a_missing_study_is_a_study_load_error(tmp_path: Path) -> None:
    entry, _ = _entry(Modality.CXR, 1)
    item = {"study": str(tmp_path), "study_instance_uid": "1.2.3"}
    with pytest.raises(StudyLoadError, match=r"^study 1\.2\.3: no DICOM file of this study"):
        ImageClassifierScorer().prepare(entry, item)


def test_corrupt_pixel_data_is_a_study_load_error(
    studies: list[dict[str, object]], tmp_path: Path
) -> None:
    entry, _ = _entry(Modality.CXR, 1)
    source = Path(str(studies[0]["study"]))
    path = next(source.rglob("*.dcm"))
    ds = pydicom.dcmread(path)
    ds.PixelData = ds.PixelData[:100]
    (tmp_path / "study").mkdir()
    ds.save_as(tmp_path / "study" / "0001.dcm")
    item = {
        "study": str(tmp_path / "study"),
        "study_instance_uid": studies[0]["study_instance_uid"],
    }
    with pytest.raises(StudyLoadError, match="cannot be decoded"):
        ImageClassifierScorer().prepare(entry, item)


def test_a_network_with_the_wrong_outputs_is_refused(studies: list[dict[str, object]]) -> None:
    entry, _ = _entry(Modality.CXR, 1)
    _, fundus_network = _entry(Modality.FUNDUS, 1)
    scorer = ImageClassifierScorer()
    prepared = [scorer.prepare(entry, studies[0])]
    with pytest.raises(ValueError, match="expected one logit per output \\(4: nodule, pleural"):
        scorer.score(fundus_network, entry, prepared, CPU)


def test_a_chain_of_another_modality_is_refused() -> None:
    entry, _ = _entry(Modality.CXR, 1)
    fundus_chain = replace(entry, transforms=default_chain(Modality.FUNDUS).describe())
    with pytest.raises(ValueError, match="chain 'fundus' does not prepare cxr images"):
        ImageClassifierScorer().transforms(fundus_chain)


def test_a_fundus_photograph_is_scored_in_colour(tmp_path: Path) -> None:
    rows = generate(SynthConfig((Modality.FUNDUS,), 1, 3, tmp_path, workers=1), progress=False)
    entry, network = _entry(Modality.FUNDUS, 3)
    scorer = ImageClassifierScorer()
    prepared = scorer.prepare(entry, study_item(rows[0], tmp_path / "manifest.csv"))
    assert tuple(prepared.inputs[0]["image"].shape) == (3, 256, 256)
    (score,) = scorer.score(network, entry, [prepared], CPU)
    assert list(score.logits) == ["referable_dr"]
