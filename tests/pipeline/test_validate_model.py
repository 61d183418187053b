"""``medvision validate --model --data``: inference first, then a cached re-run that skips it."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from medvision.cli import main
from medvision.data.manifest import write_manifest
from tests.pipeline.conftest import TinyModel, two_studies_and_a_text_file

PROTOCOL = """
name: tiny
modality: cxr
finding: nodule
minimum_subgroup_size: 1
acceptance: {sensitivity_lower_ci_min: 0.0}
"""


def test_the_model_runs_once_and_the_second_validation_reuses_its_predictions(
    tiny_cxr_model: TinyModel,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    data = two_studies_and_a_text_file(tiny_cxr_model, tmp_path / "data")
    manifest = tmp_path / "manifest.csv"
    write_manifest([replace(row, split="test") for row in tiny_cxr_model.rows], manifest)
    protocol = tmp_path / "protocol.yaml"
    protocol.write_text(PROTOCOL)
    arguments = ["validate", "--model", tiny_cxr_model.entry.name, "--data", str(data)]
    arguments += ["--models", str(tiny_cxr_model.registry), "--manifest", str(manifest)]
    arguments += ["--protocol", str(protocol), "--out", str(tmp_path / "out"), "--no-progress"]
    assert main([*arguments, "--device", "cpu"]) in (0, 1)
    first = capsys.readouterr()
    assert f"wrote predictions of {tiny_cxr_model.entry.name}" in first.out
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["data"]["cases"] == 2  # the two studies in --data
    assert report["data"]["not_analysed"] == len(tiny_cxr_model.rows) - 2

    def no_inference(*_: object, **__: object) -> None:
        raise AssertionError("the cached predictions should have been used")

    monkeypatch.setattr("validation.inference.analyze", no_inference)
    assert main([*arguments, "--device", "cpu"]) in (0, 1)
    assert "reused cached predictions" in capsys.readouterr().out
    again = json.loads((tmp_path / "out" / "report.json").read_text())
    assert again["overall"] == report["overall"]


def test_an_unknown_model_or_a_missing_data_folder_is_a_usage_error(
    tiny_cxr_model: TinyModel, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    manifest = tmp_path / "manifest.csv"
    write_manifest(tiny_cxr_model.rows, manifest)
    protocol = tmp_path / "protocol.yaml"
    protocol.write_text(PROTOCOL)
    common = ["--manifest", str(manifest), "--protocol", str(protocol), "--out", str(tmp_path)]
    registry = ["--models", str(tiny_cxr_model.registry)]
    code = main(["validate", "--model", "nope", "--data", str(tmp_path), *registry, *common])
    assert code == 2
    assert f"no model 'nope' in {tiny_cxr_model.registry}" in capsys.readouterr().err
    assert main(["validate", "--model", "nope", *common]) == 2
    assert "--model needs --data DIR" in capsys.readouterr().err
