"""The naive baseline: held-out AUROC, and its scores as a predictions CSV for validation."""

from __future__ import annotations

import csv
import json
from dataclasses import replace
from pathlib import Path

import pytest
from sklearn.metrics import roc_auc_score

from medvision.baseline.naive import BASELINE_NAME, evaluate_naive_baseline
from medvision.cli import main
from medvision.data.manifest import ManifestRow, read_manifest, write_manifest
from medvision.modality import Modality
from medvision.synth.generator import SynthConfig, generate

Set = tuple[Path, list[ManifestRow]]


@pytest.fixture(scope="module")
def cxr_set(tmp_path_factory: pytest.TempPathFactory) -> Set:
    """Twenty chest X-ray phantoms at 50 % prevalence: 12 to fit, 8 to test."""
    out = tmp_path_factory.mktemp("baseline")
    config = SynthConfig((Modality.CXR,), 20, 31, out, prevalence={"*": 0.5}, workers=1)
    rows = [
        replace(row, split="train" if index < 12 else "test")
        for index, row in enumerate(generate(config, progress=False))
    ]
    write_manifest(rows, out / "manifest.csv")
    return out / "manifest.csv", read_manifest(out / "manifest.csv")


def test_the_auroc_is_that_of_the_test_scores_it_keeps(cxr_set: Set) -> None:
    manifest, rows = cxr_set
    results = evaluate_naive_baseline(rows, manifest, progress=False)
    assert results
    test = {row.study_instance_uid: row for row in rows if row.split == "test"}
    for result in results:
        assert set(result.test_scores) == {
            uid for uid, row in test.items() if result.finding in row.labels
        }
        labels = [test[uid].labels[result.finding] for uid in result.test_scores]
        assert result.auroc == roc_auc_score(labels, list(result.test_scores.values()))
        assert (result.train_studies, result.test_studies) == (12, 8)


def test_baseline_predictions_validate_like_any_model(
    cxr_set: Set, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    manifest, rows = cxr_set
    predictions = tmp_path / "baseline.csv"
    arguments = ["baseline", "--manifest", str(manifest), "--no-progress"]
    assert main([*arguments, "--predictions-out", str(predictions)]) == 0
    with predictions.open() as handle:
        written = list(csv.DictReader(handle))
    findings = {row["finding"] for row in written}
    assert written and {row["model_name"] for row in written} == {BASELINE_NAME}
    assert all(
        row["flagged"] == ("1" if float(row["probability"]) >= 0.5 else "0") for row in written
    )
    assert f"wrote {len(written)} test-split predictions" in capsys.readouterr().out
    finding = sorted(findings)[0]
    protocol = tmp_path / "p.yaml"
    protocol.write_text(
        f"name: baseline\nmodality: cxr\nfinding: {finding}\nminimum_subgroup_size: 1\n"
        "acceptance: {sensitivity_lower_ci_min: 0.0}\n"
    )
    test_manifest = tmp_path / "test.csv"
    write_manifest([row for row in rows if row.split == "test"], test_manifest)
    assert (
        main(
            [
                "validate",
                "--predictions",
                str(predictions),
                "--manifest",
                str(test_manifest),
                "--protocol",
                str(protocol),
                "--out",
                str(tmp_path / "r"),
            ]
        )
        == 0
    )
    report = json.loads((tmp_path / "r" / "report.json").read_text())
    assert report["data"]["cases"] == 8
    assert [m["name"] for m in report["models"]] == [BASELINE_NAME]
    assert report["models"][0]["weights_sha256"] == ""
    assert "not stated" in (tmp_path / "r" / "report.html").read_text()
