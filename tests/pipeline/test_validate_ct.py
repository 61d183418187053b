"""``medvision validate`` of a CT segmenter: Dice, HD95 and FROC from SEG objects and candidates."""

from __future__ import annotations

import csv
import json
import shutil
from collections import Counter
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from torch import nn

from medvision.cli import main
from medvision.data.manifest import ManifestRow, read_manifest, resolve
from medvision.evaluation.ct_detection import annotated_series, load_ground_truth
from medvision.inference.scoring import Location
from medvision.modality import Modality
from medvision.models.registry import ModelEntry, Task, save_model
from medvision.pipeline import AnalysisRun, Finding, StudyResult
from medvision.pipeline.reports import write_segmentations
from medvision.synth.generator import SynthConfig, generate
from medvision.transforms.ct import CtTransforms

#: Six CT phantoms, some with nodules of 6 mm or more.
SEED = 5
PROTOCOL = """
name: CT nodule segmenter
modality: ct
finding: nodule
threshold: 0.5
subgroups: [site]
minimum_subgroup_size: 1
acceptance:
  dice_lower_ci_min: 0.9
  hd95_mm_upper_ci_max: 0.5
  detection_sensitivity_lower_ci_min: 0.5
"""

CtSet = tuple[Path, list[ManifestRow]]


@pytest.fixture(scope="module")
def ct_set(tmp_path_factory: pytest.TempPathFactory) -> CtSet:
    out = tmp_path_factory.mktemp("validate-ct")
    config = SynthConfig((Modality.CT,), 6, SEED, out, prevalence={"*": 0.5}, workers=1)
    generate(config, progress=False)
    return out / "manifest.csv", read_manifest(out / "manifest.csv")


def _perfect_run(manifest: Path, rows: list[ManifestRow]) -> AnalysisRun:
    """What a perfect segmenter would return: the ground truth, plus one false positive."""
    results = []
    for row in rows:
        truth, mask = load_ground_truth(row, manifest)
        series = annotated_series(row, manifest)
        locations = [Location(series, n.centre_mm, n.diameter_mm, 0.9) for n in truth]
        locations.append(Location(series, (999.0, 999.0, 999.0), 5.0, 0.1))
        finding = Finding(
            name="nodule",
            probability=0.9 if truth else 0.1,
            threshold=0.5,
            flagged=bool(truth),
            locations=locations,
            model_name="ct-perfect",
            model_version="1",
            weights_sha256="0" * 64,
            mask=mask,
        )
        results.append(
            StudyResult(
                study_instance_uid=row.study_instance_uid,
                modality=Modality.CT,
                site=row.site,
                manufacturer=row.manufacturer,
                manufacturer_model=row.manufacturer_model,
                sex=row.sex,
                age=row.age,
                findings=[finding],
            )
        )
    return AnalysisRun(results, [])


def _arguments(manifest: Path, out: Path, protocol: Path) -> list[str]:
    protocol.write_text(PROTOCOL)
    return ["--manifest", str(manifest), "--protocol", str(protocol), "--out", str(out)]


def test_perfect_masks_and_candidates_pass_with_exact_figures(
    ct_set: CtSet, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    manifest, rows = ct_set
    run = _perfect_run(manifest, rows)
    from medvision.pipeline import write_predictions
    from medvision.pipeline.predictions_csv import write_detections

    write_predictions(run, tmp_path / "predictions.csv")
    write_detections(run, tmp_path / "candidates.csv")
    data = [resolve(manifest, row.path) for row in rows]
    write_segmentations(run, data, tmp_path / "seg")
    arguments = ["validate", "--predictions", str(tmp_path / "predictions.csv")]
    arguments += ["--segmentations", str(tmp_path / "seg")]
    arguments += ["--detections", str(tmp_path / "candidates.csv")]
    status = main(arguments + _arguments(manifest, tmp_path / "out", tmp_path / "p.yaml"))
    assert status == 0, capsys.readouterr()
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    overall = report["overall"]
    truths = [load_ground_truth(row, manifest)[0] for row in rows]
    nodules = sum(1 for truth in truths for n in truth if n.diameter_mm >= 6)
    positives = sum(row.labels["nodule"] for row in rows)
    assert nodules > 0
    assert overall["segmentation"] == {
        "scans": 6,
        "scans_with_nodule": positives,
        "missed_scans": 0,
        "hd95_scans": positives,
        "nodules": nodules,
        "detected": nodules,
        "false_positives": 6,
    }
    assert overall["metrics"]["dice"] == {"value": 1.0, "ci_low": 1.0, "ci_high": 1.0}
    assert overall["metrics"]["hd95_mm"] == {"value": 0.0, "ci_low": 0.0, "ci_high": 0.0}
    # One false positive per scan, scored 0.1: at <= 1 per scan every nodule counts.
    assert overall["metrics"]["detection_sensitivity"]["value"] == 1.0
    assert overall["metrics"]["false_positives_per_scan"]["value"] == 1.0
    assert overall["acceptance"] == {
        "dice_lower_ci_min": "pass",
        "hd95_mm_upper_ci_max": "pass",
        "detection_sensitivity_lower_ci_min": "pass",
    }
    froc = report["segmentation"]["froc"]
    assert [(p["threshold"], p["sensitivity"], p["false_positives_per_scan"]) for p in froc] == [
        (0.9, 1.0, 0.0),
        (0.1, 1.0, 1.0),
    ]
    for site, group in report["subgroups"]["site"].items():
        assert group["segmentation"]["scans"] == sum(r.site == site for r in rows)
    # Every nodule of each type is found at the whole set's operating point.
    types = Counter(n.nodule_type for truth in truths for n in truth if n.diameter_mm >= 6)
    by_type = report["segmentation"]["by_nodule_type"]
    assert {kind: (v["nodules"], v["detected"]) for kind, v in by_type.items()} == {
        kind: (count, count) for kind, count in types.items()
    }
    for data in by_type.values():
        assert data["detection_sensitivity"] == {"value": 1.0, "ci_low": 1.0, "ci_high": 1.0}
    html = (tmp_path / "out" / "report.html").read_text()
    assert "Segmentation and detection" in html
    assert "FROC" in html
    assert "Detection by nodule type" in html


def test_shifted_masks_fail_the_hd95_bound_which_is_an_upper_limit(
    ct_set: CtSet, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    manifest, rows = ct_set
    perfect = _perfect_run(manifest, rows)
    run = AnalysisRun(
        [
            replace(r, findings=[replace(f, mask=np.roll(f.mask, 2, axis=2)) for f in r.findings])
            for r in perfect.results
        ],  # every mask two columns off
        [],
    )
    from medvision.pipeline import write_predictions

    write_predictions(run, tmp_path / "predictions.csv")
    write_segmentations(run, [resolve(manifest, r.path) for r in rows], tmp_path / "seg")
    protocol = tmp_path / "p.yaml"
    arguments = ["validate", "--predictions", str(tmp_path / "predictions.csv")]
    arguments += ["--segmentations", str(tmp_path / "seg")]
    arguments += _arguments(manifest, tmp_path / "out", protocol)
    protocol.write_text(PROTOCOL.replace("  detection_sensitivity_lower_ci_min: 0.5\n", ""))
    assert main(arguments) == 1
    out = capsys.readouterr().out
    assert "FAIL overall = all: hd95_mm_upper_ci_max (upper bound" in out
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    failure = report["acceptance"]["failures"][0]
    assert (failure["figure"], failure["limit"], failure["bound"]) == ("hd95_mm", "ci_high", 0.5)
    assert failure["shortfall"] == pytest.approx(failure["ci_high"] - 0.5)
    assert "detection_sensitivity" not in report["overall"]["metrics"]  # no candidates given


def test_a_criterion_without_its_input_is_a_usage_error(
    ct_set: CtSet, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    manifest, rows = ct_set
    from medvision.pipeline import write_predictions

    write_predictions(_perfect_run(manifest, rows), tmp_path / "predictions.csv")
    arguments = ["validate", "--predictions", str(tmp_path / "predictions.csv")]
    assert main(arguments + _arguments(manifest, tmp_path / "out", tmp_path / "p.yaml")) == 2
    error = capsys.readouterr().err
    assert "dice_lower_ci_min, hd95_mm_upper_ci_max needs --segmentations" in error


def test_model_validation_of_a_segmenter_writes_and_reuses_its_seg_and_candidates(
    ct_set: CtSet,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    manifest, rows = ct_set
    data = tmp_path / "data"
    for row in rows:
        shutil.copytree(resolve(manifest, row.path), data / row.study_instance_uid)
    entry = ModelEntry(
        name="ct-perfect",
        version="1",
        modality=Modality.CT,
        findings=("nodule",),
        task=Task.SEGMENTATION,
        network={"architecture": "unet"},
        transforms=CtTransforms().describe(),
        input_size=(96, 96, 64),
    )
    save_model(nn.Conv3d(1, 1, 1), entry, tmp_path / "models")
    calls = []

    def perfect(*_: object, **__: object) -> AnalysisRun:
        calls.append(1)
        return _perfect_run(manifest, rows)

    monkeypatch.setattr("validation.inference.analyze", perfect)
    arguments = ["validate", "--model", "ct-perfect", "--data", str(data), "--no-progress"]
    arguments += ["--models", str(tmp_path / "models"), "--device", "cpu"]
    arguments += _arguments(manifest, tmp_path / "out", tmp_path / "p.yaml")
    assert main(arguments) == 0, capsys.readouterr()
    cache = sorted(p.name.split("-")[0] for p in (tmp_path / "out" / "cache").iterdir())
    assert cache == ["detections", "predictions", "segmentations"]
    first = json.loads((tmp_path / "out" / "report.json").read_text())
    assert first["overall"]["metrics"]["dice"]["value"] == 1.0
    assert main(arguments) == 0
    assert "reused cached predictions" in capsys.readouterr().out
    assert calls == [1]
    again = json.loads((tmp_path / "out" / "report.json").read_text())
    assert again["overall"] == first["overall"]


def test_candidates_are_written_in_the_luna16_format(ct_set: CtSet, tmp_path: Path) -> None:
    from medvision.pipeline.predictions_csv import write_detections

    manifest, rows = ct_set
    run = _perfect_run(manifest, rows)
    assert write_detections(run, tmp_path / "c.csv") == sum(
        len(r.findings[0].locations) for r in run.results
    )
    with (tmp_path / "c.csv").open() as handle:
        first = next(csv.DictReader(handle))
    location = run.results[0].findings[0].locations[0]
    assert first == {
        "seriesuid": location.referenced_uid,
        "coordX": repr(location.centre[0]),
        "coordY": repr(location.centre[1]),
        "coordZ": repr(location.centre[2]),
        "probability": repr(location.score),
    }
