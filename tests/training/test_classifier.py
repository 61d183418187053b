import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from medvision.calibration.refit import calibrated_probabilities
from medvision.modality import Modality
from medvision.models.registry import load_model, load_registry
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
from medvision.transforms import default_chain
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
def test_fundus_trains_its_maps_on_the_union_of_the_retinal_lesions(tmp_path: Path) -> None:
    data = tmp_path / "data"
    generate(
        SynthConfig((Modality.FUNDUS,), 48, 6, data, prevalence={"*": 0.5}, workers=1),
        progress=False,
    )
    options = TrainOptions(
        modality=Modality.FUNDUS,
        manifest=data / "manifest.csv",
        out=tmp_path / "model",
        epochs=1,
        batch_size=4,
        loss=LossKind.BCE,
        device="cpu",
        network={**tiny_densenet(1, "evidence_densenet"), "in_channels": 3},
        lesion_masks=True,  # referable DR has no mask of its own: its lesions' union
    )
    result = train_image_classifier(options, progress=False)
    assert result.entry.findings == ("referable_dr",)
    assert len(result.epochs) == 1 and np.isfinite(result.epochs[0].train_loss)


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
