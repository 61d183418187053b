import json
import shutil
from pathlib import Path

import pytest

from medvision.cli import main
from medvision.modality import Modality
from medvision.models.registry import ModelEntry, load_model, load_registry
from tests.conftest import save_untrained_cxr_model
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
