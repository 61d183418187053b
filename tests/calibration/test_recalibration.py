import json
import shutil
from pathlib import Path

import pytest
import torch

from medvision.cli import main
from medvision.modality import Modality
from medvision.models.networks import build_network
from medvision.models.registry import ModelEntry, load_model, load_registry, save_model
from medvision.transforms.mammo import MammoTransforms
from tests.conftest import classifier_entry, save_untrained_cxr_model, tiny_densenet
from tests.pipeline.conftest import TINY_NETWORK, labelled_set


@pytest.fixture(scope="module")
def model_and_manifest(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, ModelEntry, Path]:
    """An untrained tiny cxr model (registered, not calibrated) and a labelled manifest."""
    root = tmp_path_factory.mktemp("recalibration")
    manifest = labelled_set(root / "data", Modality.CXR, per_class=1, seed=60)
    written, _ = save_untrained_cxr_model(root / "model", "cxr-tiny", TINY_NETWORK, seed=0)
    return root / "model", written, manifest


def _copy(model: Path, tmp_path: Path) -> Path:
    target = tmp_path / "model"
    shutil.copytree(model, target)
    return target


def test_calibrate_in_place_keeps_the_weights_and_the_registry_loadable(
    model_and_manifest: tuple[Path, ModelEntry, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    source, entry, manifest = model_and_manifest
    folder = _copy(source, tmp_path)
    status = main(
        [
            "calibrate",
            "--model",
            str(folder / "cxr-tiny.json"),
            "--manifest",
            str(manifest),
            "--device",
            "cpu",
            "--no-progress",
        ]
    )
    out = capsys.readouterr().out
    assert status == 0
    assert out.startswith("calibration (ECE and Brier on the calibration split")
    assert "operating points (threshold chosen on tune + calibration for sensitivity >= 0.9;" in out
    registry = load_registry(folder)
    assert list(registry) == ["cxr-tiny"]
    updated = registry["cxr-tiny"]
    assert updated.weights_sha256 == entry.weights_sha256
    assert set(updated.thresholds) == set(updated.calibration) == set(entry.findings)
    load_model(updated, folder)
    report = json.loads((folder / "reports" / "cxr-tiny" / "calibration_report.json").read_text())
    assert report["model"] == {
        "name": "cxr-tiny",
        "version": "0",
        "modality": "cxr",
        "weights_sha256": entry.weights_sha256,
    }
    assert (report["target_sensitivity"], report["per_site"]) == (0.9, False)
    assert set(report["findings"]) == set(entry.findings)
    for finding, values in report["findings"].items():
        assert values["threshold"] == updated.thresholds[finding]
        assert values["method"] == updated.calibration[finding]["method"]
        assert set(values["operating_point"]) >= {"sensitivity", "sensitivity_ci", "specificity_ci"}
        assert values["test"] is None and values["test_ece"] is None
    assert f"wrote {folder / 'cxr-tiny.json'} (weights sha256 {entry.weights_sha256}" in out


def test_calibrate_to_another_folder_copies_the_weights_unchanged(
    model_and_manifest: tuple[Path, ModelEntry, Path], tmp_path: Path
) -> None:
    source, entry, manifest = model_and_manifest
    folder = _copy(source, tmp_path)
    before = (folder / "cxr-tiny.json").read_text()
    status = main(
        [
            "calibrate",
            "--model",
            str(folder / "cxr-tiny.json"),
            "--manifest",
            str(manifest),
            "--out",
            str(tmp_path / "out"),
            "--device",
            "cpu",
            "--no-progress",
        ]
    )
    assert status == 0
    assert (folder / "cxr-tiny.json").read_text() == before
    weights = entry.weights_file
    assert (tmp_path / "out" / weights).read_bytes() == (folder / weights).read_bytes()
    updated = load_registry(tmp_path / "out")["cxr-tiny"]
    assert updated.weights_sha256 == entry.weights_sha256
    load_model(updated, tmp_path / "out")


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--model", "nowhere.json"], "--model: nowhere.json does not exist"),
        (["--target-sensitivity", "1.5"], "--target-sensitivity must be in (0, 1), got 1.5"),
        (
            ["--test-time-looks", "2"],
            "--test-time-looks: model cxr-tiny: test-time looks need an evidence-map network "
            "(evidence_densenet), not densenet",
        ),
    ],
)
def test_bad_calibrate_arguments_exit_2_with_one_line(
    model_and_manifest: tuple[Path, ModelEntry, Path],
    capsys: pytest.CaptureFixture[str],
    arguments: list[str],
    message: str,
) -> None:
    source, _, manifest = model_and_manifest
    defaults = {"--model": str(source / "cxr-tiny.json"), "--manifest": str(manifest)}
    for key, value in zip(arguments[::2], arguments[1::2], strict=True):
        defaults[key] = value
    status = main(["calibrate", *[part for pair in defaults.items() for part in pair]])
    assert status == 2
    assert capsys.readouterr().err == f"medvision calibrate: error: {message}\n"


@pytest.fixture(scope="module")
def mammo_model_and_manifest(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """An untrained tiny evidence-map mammography model "trained" on mirrored patches."""
    root = tmp_path_factory.mktemp("mammo-looks")
    # (seed 72: both breasts have a cancer in some tune and some calibration study)
    manifest = labelled_set(root / "data", Modality.MAMMO, per_class=2, seed=72)
    chain = MammoTransforms(input_size=(64, 48), patch_size=(32, 32), patch_symmetries=True)
    network = {**tiny_densenet(1, "evidence_densenet"), "sharpness": 1.0}
    torch.manual_seed(0)
    save_model(
        build_network(network),
        classifier_entry("mammo-tiny", Modality.MAMMO, network, chain),
        root / "model",
    )
    return root / "model", manifest


def _calibrate(model: Path, manifest: Path, out: Path, *extra: str) -> ModelEntry:
    arguments = ["--model", str(model), "--manifest", str(manifest), "--out", str(out)]
    assert main(["calibrate", *arguments, "--device", "cpu", "--no-progress", *extra]) == 0
    return load_registry(out)["mammo-tiny"]


def test_calibrate_with_test_time_looks_fits_the_averaged_logits(
    mammo_model_and_manifest: tuple[Path, Path], tmp_path: Path
) -> None:
    source, manifest = mammo_model_and_manifest
    entry_file = source / "mammo-tiny.json"
    looking = _calibrate(entry_file, manifest, tmp_path / "looks", "--test-time-looks", "4")
    assert looking.network["test_time_looks"] == 4
    assert getattr(load_model(looking, tmp_path / "looks"), "test_time_looks", None) == 4
    # The same as calibrating an entry that already averages four looks ...
    edited = tmp_path / "edited"
    shutil.copytree(source, edited)
    document = json.loads(entry_file.read_text())
    document["network"]["test_time_looks"] = 4
    (edited / "mammo-tiny.json").write_text(json.dumps(document))
    same = _calibrate(edited / "mammo-tiny.json", manifest, tmp_path / "same")
    assert (same.calibration, same.thresholds) == (looking.calibration, looking.thresholds)
    # ... and not the same as calibrating the one look.
    plain = _calibrate(entry_file, manifest, tmp_path / "plain")
    assert "test_time_looks" not in plain.network
    assert plain.calibration != looking.calibration
    # Back to one look: the key is removed and the one-look calibration comes back.
    back = _calibrate(
        tmp_path / "looks" / "mammo-tiny.json",
        manifest,
        tmp_path / "back",
        "--test-time-looks",
        "1",
    )
    assert back.network == plain.network
    assert (back.calibration, back.thresholds) == (plain.calibration, plain.thresholds)
