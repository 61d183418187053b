from pathlib import Path

import numpy as np
import pytest
import torch

from medvision.calibration.refit import calibrated_probabilities
from medvision.data.manifest import ManifestRow
from medvision.inference.scoring import scorer_for
from medvision.models.registry import RegistryError, load_model
from medvision.pipeline import NoModelError, ProblemKind, analyze
from medvision.pipeline.discovery import DiscoveredStudy
from tests.pipeline.conftest import TinyModel, copy_study, corrupt_pixel_data


@pytest.fixture(scope="module")
def incoming(
    tmp_path_factory: pytest.TempPathFactory, tiny_cxr_model: TinyModel, fundus_study: ManifestRow
) -> tuple[Path, list[ManifestRow], ManifestRow]:
    """Two good cxr studies, a text file, a fundus study and a cxr study with cut pixel data."""
    folder = tmp_path_factory.mktemp("incoming")
    good = tiny_cxr_model.rows[:2]
    for row in good:
        copy_study(row, folder / "good")
    corrupt = tiny_cxr_model.rows[2]
    corrupt_pixel_data(copy_study(corrupt, folder / "bad"))
    copy_study(fundus_study, folder / "fundus")
    (folder / "notes.txt").write_text("not an image\n")
    return folder, good, corrupt


def test_good_studies_are_analysed_and_each_bad_thing_is_one_problem(
    incoming: tuple[Path, list[ManifestRow], ManifestRow],
    tiny_cxr_model: TinyModel,
    fundus_study: ManifestRow,
) -> None:
    folder, good, corrupt = incoming
    run = analyze([folder], registry=tiny_cxr_model.registry, device="cpu", progress=False)
    assert sorted(r.study_instance_uid for r in run.results) == sorted(
        row.study_instance_uid for row in good
    )
    problems = {(p.kind, p.study_instance_uid, p.path) for p in run.problems}
    assert problems == {
        (ProblemKind.NOT_DICOM, "", folder / "notes.txt"),
        (ProblemKind.UNSERVED_MODALITY, fundus_study.study_instance_uid, None),
        (ProblemKind.UNLOADABLE_STUDY, corrupt.study_instance_uid, None),
    }
    assert len(run.problems) == 3
    reasons = {p.kind: p.reason for p in run.problems}
    assert "cannot be decoded" in reasons[ProblemKind.UNLOADABLE_STUDY]
    unloadable = next(p for p in run.problems if p.kind == ProblemKind.UNLOADABLE_STUDY)
    assert str(unloadable).startswith(f"study {corrupt.study_instance_uid} [unloadable_study]: ")
    assert not unloadable.reason.startswith("study ")
    assert "no fundus model in the registry" in reasons[ProblemKind.UNSERVED_MODALITY]


def test_results_carry_header_facts_and_the_model_identity(
    incoming: tuple[Path, list[ManifestRow], ManifestRow], tiny_cxr_model: TinyModel
) -> None:
    folder, good, _ = incoming
    run = analyze([folder / "good"], registry=tiny_cxr_model.registry, device="cpu", progress=False)
    entry = tiny_cxr_model.entry
    by_uid = {row.study_instance_uid: row for row in good}
    for result in run.results:
        row = by_uid[result.study_instance_uid]
        assert (result.site, result.manufacturer, result.manufacturer_model) == (
            row.site,
            row.manufacturer,
            row.manufacturer_model,
        )
        assert (result.sex, result.age) == (row.sex, row.age)
        assert [f.name for f in result.findings] == list(entry.findings)
        for finding in result.findings:
            assert finding.threshold == entry.thresholds[finding.name]
            assert finding.flagged == (finding.probability >= finding.threshold)
            assert (finding.model_name, finding.model_version, finding.weights_sha256) == (
                entry.name,
                entry.version,
                entry.weights_sha256,
            )
            assert finding.locations == []
            assert finding.mask is None
    assert run.problems == []


def test_probabilities_are_the_calibrated_scorer_logits(
    incoming: tuple[Path, list[ManifestRow], ManifestRow], tiny_cxr_model: TinyModel
) -> None:
    folder, _, _ = incoming
    entry = tiny_cxr_model.entry
    run = analyze(
        [folder / "good"],
        registry=tiny_cxr_model.registry,
        device="cpu",
        batch_size=1,
        progress=False,
    )
    scorer = scorer_for(entry)
    network = load_model(entry, tiny_cxr_model.registry)
    for result in run.results:
        study = DiscoveredStudy(
            result.study_instance_uid, result.modality, folder / "good", (), site=result.site
        )
        score = scorer.score(
            network, entry, [scorer.prepare(entry, study.item())], torch.device("cpu")
        )[0]
        logits = np.array([[score.logits[f] for f in entry.findings]])
        expected = calibrated_probabilities(entry, logits, [result.site])[0]
        np.testing.assert_allclose([f.probability for f in result.findings], expected, rtol=1e-6)


def test_a_file_given_directly_is_analysed(
    incoming: tuple[Path, list[ManifestRow], ManifestRow], tiny_cxr_model: TinyModel
) -> None:
    folder, good, _ = incoming
    file = next((folder / "good" / good[0].study_instance_uid).rglob("*.dcm"))
    run = analyze([file, file.parent], registry=tiny_cxr_model.registry, progress=False)
    assert [r.study_instance_uid for r in run.results] == [good[0].study_instance_uid]
    assert run.problems == []


def test_an_empty_registry_is_refused(tmp_path: Path) -> None:
    with pytest.raises(NoModelError, match="no model entry"):
        analyze([tmp_path], registry=tmp_path / "models", progress=False)


def test_a_missing_path_is_refused(tmp_path: Path, tiny_cxr_model: TinyModel) -> None:
    with pytest.raises(FileNotFoundError, match="does not exist"):
        analyze([tmp_path / "nowhere"], registry=tiny_cxr_model.registry, progress=False)


def test_tampered_weights_stop_the_run(
    incoming: tuple[Path, list[ManifestRow], ManifestRow],
    tiny_cxr_model: TinyModel,
    tmp_path: Path,
) -> None:
    folder, _, _ = incoming
    registry = tmp_path / "models"
    registry.mkdir()
    entry = tiny_cxr_model.entry
    (registry / f"{entry.name}.json").write_text(entry.to_json())
    weights = (tiny_cxr_model.registry / entry.weights_file).read_bytes()
    (registry / entry.weights_file).write_bytes(weights[:-1] + bytes([weights[-1] ^ 1]))
    with pytest.raises(RegistryError, match="refusing to load"):
        analyze([folder / "good"], registry=registry, progress=False)
