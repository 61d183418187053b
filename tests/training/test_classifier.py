import csv
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from medvision.calibration.refit import calibrated_probabilities
from medvision.data.manifest import ManifestRow
from medvision.grading import DR_GRADE, decode_grade, row_grades
from medvision.modality import Modality
from medvision.models.registry import load_model, load_registry
from medvision.pipeline import analyze, write_predictions
from medvision.synth.generator import SynthConfig, generate
from medvision.training.classifier import (
    LossKind,
    TrainOptions,
    initial_network,
    network_for_run,
    start_metrics_log,
    train_image_classifier,
    training_chain,
)
from medvision.transforms import chain_from_description, default_chain
from medvision.transforms.loading import study_item
from tests.conftest import save_untrained_cxr_model, tiny_densenet

TINY_NETWORK = tiny_densenet(4)


@pytest.mark.slow
def test_training_writes_a_verified_calibrated_model(tmp_path: Path) -> None:
    data = tmp_path / "data"
    generate(
        SynthConfig((Modality.CXR,), 48, 5, data, prevalence={"*": 0.5}, workers=1), progress=False
    )
    options = TrainOptions(
        modality=Modality.CXR,
        manifest=data / "manifest.csv",
        out=tmp_path / "model",
        epochs=1,
        batch_size=8,
        loss=LossKind.BCE,
        device="cpu",
        network=TINY_NETWORK,
    )
    result = train_image_classifier(options, progress=False)
    entry = result.entry
    assert load_registry(tmp_path / "model") == {entry.name: entry}
    assert set(entry.thresholds) == set(entry.calibration) == set(entry.findings)
    assert all(0.0 <= t <= 1.0 for t in entry.thresholds.values())
    assert set(result.calibration) == set(result.test_auroc) == set(entry.findings)
    assert {entry.calibration[f]["method"] for f in entry.findings} == {
        result.calibration[f].method for f in entry.findings
    }
    assert entry.transforms["name"] == "cxr"
    assert len(result.epochs) == 1
    lines = (tmp_path / "model" / f"{entry.name}.metrics.jsonl").read_text().splitlines()
    assert len(lines) == 2 and "kept_epoch" in lines[1]
    network = load_model(entry, tmp_path / "model")
    with torch.no_grad():
        logits = network(torch.zeros(2, 1, 256, 256)).numpy()
    probabilities = calibrated_probabilities(entry, logits)
    assert probabilities.shape == (2, 4)
    assert np.all((probabilities >= 0.0) & (probabilities <= 1.0))
    # Going on from that model, into the same folder: the log is the new run's alone.
    again = train_image_classifier(
        replace(options, init_from=tmp_path / "model" / f"{entry.name}.json"), progress=False
    )
    lines = (tmp_path / "model" / f"{entry.name}.metrics.jsonl").read_text().splitlines()
    assert len(lines) == 3
    assert json.loads(lines[0])["weights_sha256"] == entry.weights_sha256
    assert again.entry.network == entry.network


def test_options_refuse_an_unknown_loss(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="Did you mean 'focal'\\?"):
        TrainOptions(modality=Modality.CXR, manifest=tmp_path, out=tmp_path, loss="focall")  # type: ignore[arg-type]


def test_options_refuse_an_input_size_for_ct_and_negative_workers(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="--input-size applies to 2-D modalities"):
        TrainOptions(modality=Modality.CT, manifest=tmp_path, out=tmp_path, input_size=(64, 64))
    with pytest.raises(ValueError, match=r"--input-size takes two positive numbers"):
        TrainOptions(modality=Modality.CXR, manifest=tmp_path, out=tmp_path, input_size=(64, 0))
    with pytest.raises(ValueError, match="--workers must be 0 or more, got -1"):
        TrainOptions(modality=Modality.CXR, manifest=tmp_path, out=tmp_path, workers=-1)


@pytest.mark.parametrize("modality", [Modality.CXR, Modality.FUNDUS, Modality.MAMMO])
def test_the_training_chain_takes_the_input_size_of_the_options(
    modality: Modality, tmp_path: Path
) -> None:
    default = training_chain(TrainOptions(modality=modality, manifest=tmp_path, out=tmp_path))
    assert default == default_chain(modality)
    sized = training_chain(
        TrainOptions(modality=modality, manifest=tmp_path, out=tmp_path, input_size=(96, 80))
    )
    assert type(sized) is type(default)
    assert sized.describe()["parameters"]["input_size"] == [96, 80]
    assert sized.describe()["parameters"] | {"input_size": None} == default.describe()[
        "parameters"
    ] | {"input_size": None}


@pytest.mark.slow
def test_fundus_trains_its_maps_on_the_retinal_lesions_and_grades(tmp_path: Path) -> None:
    data = tmp_path / "data"
    rows = generate(
        SynthConfig((Modality.FUNDUS,), 48, 6, data, prevalence={"*": 0.5}, workers=1),
        progress=False,
    )
    plain = TrainOptions(
        modality=Modality.FUNDUS,
        manifest=data / "manifest.csv",
        out=tmp_path / "plain",
        epochs=1,
        batch_size=4,
        loss=LossKind.BCE,
        device="cpu",
        network={**tiny_densenet(1, "evidence_densenet"), "in_channels": 3},
        lesion_masks=True,  # referable DR has no mask of its own: its lesions' union
    )
    first = train_image_classifier(plain, progress=False).entry
    assert first.findings == ("referable_dr",) and first.grading == ""
    # The grade trained on the frozen model: referable DR stays exactly as it was.
    graded = replace(
        plain,
        out=tmp_path / "graded",
        network={},
        epochs=2,
        grade=True,
        grade_only=True,
        init_from=tmp_path / "plain" / f"{first.name}.json",
    )
    result = train_image_classifier(graded, progress=False)
    entry = result.entry
    assert entry.grading == "dr_grade" and entry.network["grade_outputs"] == 3
    assert list(result.epochs[0].tune_auroc) == ["referable_dr", *DR_GRADE.output_names()]
    assert (
        result.epochs[0].tune_auroc["referable_dr"] == result.epochs[1].tune_auroc["referable_dr"]
    )
    assert (entry.calibration, entry.thresholds) == (first.calibration, first.thresholds)
    assert set(entry.grade_thresholds) == set(DR_GRADE.output_names())
    assert result.grading is not None and result.grading.thresholds == entry.grade_thresholds
    best = max(result.epochs, key=lambda r: sum(r.tune_auroc[n] for n in DR_GRADE.output_names()))
    assert result.kept_epoch == best.epoch  # chosen on the cut points, the finding frozen
    before, network = load_model(first, tmp_path / "plain"), load_model(entry, tmp_path / "graded")
    items = {row.study_instance_uid: study_item(row, data / "manifest.csv") for row in rows}
    chain = chain_from_description(entry.transforms).build(training=False)
    images = torch.stack(
        [torch.as_tensor(np.asarray(chain(items[row.study_instance_uid])["image"])) for row in rows]
    )
    with torch.no_grad():
        logits, plain_logits = network(images).numpy(), before(images).numpy()
    assert logits.shape == (len(rows), 4)
    assert np.array_equal(logits[:, :1], plain_logits)
    # Served: each study's referable DR finding carries a grade that agrees with it,
    # decoded from the network's own outputs at the chosen thresholds; the CSV writes it.
    studies = [data / row.path for row in rows]
    run = analyze(studies, registry=tmp_path / "graded", device="cpu", progress=False)
    assert len(run.results) == len(rows) and not run.problems
    row_of = {row.study_instance_uid: index for index, row in enumerate(rows)}
    for study in run.results:
        (finding,) = study.findings
        assert finding.grade is not None
        own = logits[row_of[study.study_instance_uid]]
        expected = decode_grade(
            DR_GRADE, finding.flagged, finding.probability, own[1:], entry.cut_thresholds
        )
        assert finding.grade.value == expected.value
        assert finding.grade.at_least == pytest.approx(expected.at_least, abs=1e-6)  # batched
        assert (finding.grade.value >= 2) == finding.flagged
    written = tmp_path / "predictions.csv"
    write_predictions(run, written)
    with written.open(newline="") as handle:
        grades = {r["study_instance_uid"]: r["grade"] for r in csv.DictReader(handle)}
    assert grades == {
        r.study_instance_uid: str(r.findings[0].grade.value)  # type: ignore[union-attr]
        for r in run.results
    }


def test_grading_is_refused_where_there_is_no_scale_or_no_grade(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="--grade: cxr has no grading scale"):
        TrainOptions(modality=Modality.CXR, manifest=tmp_path, out=tmp_path, grade=True)
    with pytest.raises(ValueError, match="--grade needs grade_outputs 3, got 0"):
        TrainOptions(
            modality=Modality.FUNDUS,
            manifest=tmp_path,
            out=tmp_path,
            grade=True,
            network={**tiny_densenet(1, "evidence_densenet"), "in_channels": 3},
        )
    with pytest.raises(ValueError, match="--grade-only trains the grade on a frozen model"):
        TrainOptions(modality=Modality.FUNDUS, manifest=tmp_path, out=tmp_path, grade_only=True)
    row = ManifestRow("1.2.3", Modality.FUNDUS, Path("a.dcm"), split="train")
    with pytest.raises(ValueError, match=r"train study 1\.2\.3 has none \(medvision synth"):
        row_grades([row], DR_GRADE, "train")
    with pytest.raises(ValueError, match=r"tune study 1\.2\.3: dr_grade must be 0 to 4, got 7"):
        row_grades([replace(row, extra={"dr_grade": "7"})], DR_GRADE, "tune")
    assert row_grades([replace(row, extra={"dr_grade": "3"})], DR_GRADE, "tune") == [3]


def _saved_cxr_model(directory: Path) -> tuple[Path, torch.nn.Module]:
    """A tiny untrained cxr network saved as a registry entry; returns its path and network."""
    _, network = save_untrained_cxr_model(directory, "cxr-start", TINY_NETWORK, seed=11)
    return directory / "cxr-start.json", network


def test_init_from_starts_the_network_from_the_entrys_verified_weights(tmp_path: Path) -> None:
    path, saved = _saved_cxr_model(tmp_path / "start")
    options = TrainOptions(
        modality=Modality.CXR, manifest=tmp_path, out=tmp_path / "out", init_from=path
    )
    description = network_for_run(options, {"architecture": "densenet", "other": 1})
    assert description == TINY_NETWORK
    network = initial_network(options, description)
    for key, value in saved.state_dict().items():
        loaded = network.state_dict()[key]
        expected = value.half().float() if value.is_floating_point() else value
        assert torch.equal(loaded, expected), key


def test_init_from_refuses_another_modality_another_network_or_altered_weights(
    tmp_path: Path,
) -> None:
    path, _ = _saved_cxr_model(tmp_path / "start")
    fundus = TrainOptions(modality=Modality.FUNDUS, manifest=tmp_path, out=tmp_path, init_from=path)
    with pytest.raises(ValueError, match="is a cxr model; this run trains fundus"):
        network_for_run(fundus, TINY_NETWORK)
    other = TrainOptions(
        modality=Modality.CXR,
        manifest=tmp_path,
        out=tmp_path,
        init_from=path,
        network=tiny_densenet(4, "evidence_densenet"),
    )
    with pytest.raises(ValueError, match="has another network than the one asked for"):
        network_for_run(other, TINY_NETWORK)
    weights = tmp_path / "start" / "cxr-start.pt"
    weights.write_bytes(weights.read_bytes() + b"\0")
    options = TrainOptions(modality=Modality.CXR, manifest=tmp_path, out=tmp_path, init_from=path)
    with pytest.raises(ValueError, match=r"--init-from: model cxr-start: .* refusing to load"):
        initial_network(options, TINY_NETWORK)
    missing = replace(options, init_from=tmp_path / "nowhere.json")
    with pytest.raises(ValueError, match=r"--init-from .*nowhere\.json"):
        network_for_run(missing, TINY_NETWORK)


def test_the_metrics_log_starts_afresh_and_names_the_starting_weights(tmp_path: Path) -> None:
    path, _ = _saved_cxr_model(tmp_path / "start")
    options = TrainOptions(modality=Modality.CXR, manifest=tmp_path, out=tmp_path / "out")
    log = tmp_path / "out" / "run.metrics.jsonl"
    log.parent.mkdir()
    log.write_text('{"epoch": 1}\n')
    assert start_metrics_log(options, "run") == log
    assert log.read_text() == ""
    start_metrics_log(replace(options, init_from=path), "run")
    sha = json.loads(path.read_text())["weights_sha256"]
    assert [json.loads(line) for line in log.read_text().splitlines()] == [
        {
            "initialised_from": str(path),
            "name": "cxr-start",
            "version": "0",
            "weights_sha256": sha,
        }
    ]
