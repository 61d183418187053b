"""report.json: each subgroup's numbers equal statsmodels and scikit-learn; weak device first."""

from __future__ import annotations

import csv
import json
import re
import shutil
import subprocess
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from sklearn.metrics import roc_auc_score
from statsmodels.stats.proportion import proportion_confint

from medvision.cli import main
from medvision.data.manifest import ManifestRow, write_manifest
from medvision.modality import Modality
from validation.inputs import ValidationInputs
from validation.protocol import parse_protocol
from validation.report import build_report, write_report_json
from validation.subgroups import Case, evaluate

PROTOCOL = """
name: report test
modality: cxr
finding: nodule
subgroups: [site, manufacturer_model]
minimum_subgroup_size: 30
acceptance:
  sensitivity_lower_ci_min: 0.75
  specificity_lower_ci_min: 0.75
"""


def _rows_and_scores(seed: int = 0, size: int = 900) -> tuple[list[ManifestRow], np.ndarray]:
    rng = np.random.default_rng(seed)
    rows, scores = [], []
    for index in range(size):
        device = ["Aquila DR-9", "Borealis Flat 4", "Cygnus CR-200"][index % 3]
        label = int(rng.random() < 0.4)
        strength = 0.5 if device == "Borealis Flat 4" else 3.5
        scores.append(1 / (1 + np.exp(-(rng.normal() + strength * (label - 0.5)))))
        rows.append(
            ManifestRow(
                study_instance_uid=f"1.2.{index}",
                modality=Modality.CXR,
                path=Path(f"s{index}"),
                site=["North", "River"][index % 2],
                manufacturer_model=device,
                patient_id=f"P{index}",
                labels={"nodule": label},
            )
        )
    return rows, np.array(scores)


def _cases(rows: list[ManifestRow], scores: np.ndarray) -> list[Case]:
    return [
        Case(
            row.study_instance_uid,
            row.labels["nodule"],
            float(p),
            int(p >= 0.5),
            {"site": row.site, "manufacturer_model": row.manufacturer_model},
        )
        for row, p in zip(rows, scores, strict=True)
    ]


def test_every_subgroup_s_numbers_equal_statsmodels_and_scikit_learn(tmp_path: Path) -> None:
    rows, scores = _rows_and_scores()
    protocol = parse_protocol(PROTOCOL)
    cases = _cases(rows[:-10], scores[:-10])
    inputs = ValidationInputs(cases, not_analysed=rows[-10:])
    report = build_report(
        evaluate(cases, protocol), inputs, protocol, predictions_sha256="a", manifest_sha256="b"
    )
    write_report_json(report, tmp_path / "report.json")
    report = json.loads((tmp_path / "report.json").read_text())
    labels = np.array([c.label for c in cases])
    flagged = np.array([c.flagged for c in cases])
    probabilities = np.array([c.probability for c in cases])
    checked = 0
    for column, values in report["subgroups"].items():
        for value, group in values.items():
            members = np.array([str(c.attributes[column]) == value for c in cases])
            y, d = labels[members], flagged[members]
            cells = {
                "sensitivity": (((d == 1) & (y == 1)).sum(), (y == 1).sum()),
                "specificity": (((d == 0) & (y == 0)).sum(), (y == 0).sum()),
                "ppv": (((d == 1) & (y == 1)).sum(), (d == 1).sum()),
                "npv": (((d == 0) & (y == 0)).sum(), (d == 0).sum()),
            }
            for name, (successes, trials) in cells.items():
                low, high = proportion_confint(int(successes), int(trials), method="wilson")
                figure = group["metrics"][name]
                assert figure["value"] == pytest.approx(successes / trials, abs=1e-6)
                assert figure["ci_low"] == pytest.approx(low, abs=1e-6)
                assert figure["ci_high"] == pytest.approx(high, abs=1e-6)
            auroc = roc_auc_score(y, probabilities[members])
            assert group["metrics"]["auroc"]["value"] == pytest.approx(auroc, abs=1e-6)
            assert group["n"] == members.sum()
            checked += 1
    assert checked == 5  # two sites, three devices
    assert report["overall"]["not_analysed"] == 10
    assert report["overall"]["not_analysed_share"] == pytest.approx(10 / 900)
    assert sum(v["not_analysed"] for v in report["subgroups"]["site"].values()) == 10
    first = report["acceptance"]["failures"][0]
    assert (first["column"], first["value"]) == ("manufacturer_model", "Borealis Flat 4")
    assert report["acceptance"]["passed"] is False
    assert report["protocol"]["sha256"] == protocol.sha256
    stability = report["operating_point_stability"]
    assert set(stability["sites"]) == {"North", "River"}
    for site, point in stability["sites"].items():
        members = np.array([c.attributes["site"] == site for c in cases])
        positives = np.sort(probabilities[members & (labels == 1)])[::-1]
        reached = np.mean(positives >= point["threshold"])
        assert reached >= 0.9  # the threshold reaches the target at that site ...
        higher = positives[positives > point["threshold"]]
        assert len(higher) / len(positives) < 0.9  # ... and no higher one does
    assert report["reproducibility"]["packages"]["numpy"] == np.__version__


def _write_inputs(tmp_path: Path, rows: list[ManifestRow], scores: np.ndarray) -> tuple[Path, Path]:
    manifest, predictions = tmp_path / "manifest.csv", tmp_path / "preds.csv"
    write_manifest(rows, manifest)
    with predictions.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["study_instance_uid", "finding", "probability", "threshold", "flagged"])
        for row, p in zip(rows, scores, strict=True):
            writer.writerow(
                [row.study_instance_uid, "nodule", repr(float(p)), "0.5", int(p >= 0.5)]
            )
    return manifest, predictions


def _validate(
    tmp_path: Path, rows: list[ManifestRow], scores: np.ndarray, out: str, protocol: str = PROTOCOL
) -> int:
    """Write inputs and protocol into ``tmp_path``; run ``medvision validate`` into ``out``."""
    manifest, predictions = _write_inputs(tmp_path, rows, scores)
    protocol_file = tmp_path / "protocol.yaml"
    protocol_file.write_text(protocol)
    arguments = ["--predictions", str(predictions), "--manifest", str(manifest)]
    output = ["--protocol", str(protocol_file), "--out", str(tmp_path / out)]
    return main(["validate", *arguments, *output])


def test_validate_writes_the_report_and_exits_1_when_a_criterion_fails(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rows, scores = _rows_and_scores()
    code = _validate(tmp_path, rows, scores, "r")
    assert code == 1
    out = capsys.readouterr().out
    assert out.splitlines()[0].startswith("FAIL manufacturer_model = Borealis Flat 4: ")
    assert (tmp_path / "r" / "report.json").is_file()
    page = (tmp_path / "r" / "report.html").read_text()
    summary = page[page.index('<div class="summary fail">') :]
    assert summary.index("FAIL manufacturer_model = Borealis Flat 4") < summary.index("</div>")
    assert page.count('<tr class="fail">') >= 1
    assert page.count('src="data:image/png;base64,') == 4
    assert "not for clinical use" in page
    pdf = (tmp_path / "r" / "report.pdf").read_bytes()
    assert pdf.startswith(b"%PDF")
    assert len(re.findall(rb"/Type /Page\b(?!s)", pdf)) == 6

    good = [replace(row, manufacturer_model="Aquila DR-9") for row in rows]
    strong = np.array([0.95 if r.labels["nodule"] else 0.05 for r in rows])
    assert _validate(tmp_path, good, strong, "g") == 0


def test_validate_names_a_bad_protocol_and_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rows, scores = _rows_and_scores(size=60)
    bad = PROTOCOL.replace("minimum_subgroup_size", "minimum_size")
    code = _validate(tmp_path, rows, scores, "r", bad)
    assert code == 2
    assert "unknown key 'minimum_size'" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


@pytest.mark.skipif(
    shutil.which("pdftoppm") is None, reason="needs poppler-utils (scripts/setup.sh)"
)
def test_every_pdf_page_renders_with_pdftoppm_and_shows_something(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rows, scores = _rows_and_scores()
    _validate(tmp_path, rows, scores, "r")
    pdf = str(tmp_path / "r" / "report.pdf")
    subprocess.run(["pdftoppm", "-png", "-r", "40", pdf, str(tmp_path / "p")], check=True)
    pages = sorted(tmp_path.glob("p-*.png"))
    assert len(pages) == 6
    for page_file in pages:
        with Image.open(page_file) as image:
            pixels = np.asarray(image.convert("L"))
        assert pixels.min() < 128 < pixels.max()  # ink on paper: no page is blank


def test_the_report_names_the_model_the_splits_and_the_reliability_bins(tmp_path: Path) -> None:
    rows, scores = _rows_and_scores(size=300)
    rows = [replace(row, split="train" if index < 30 else "test") for index, row in enumerate(rows)]
    manifest, predictions = _write_inputs(tmp_path, rows, scores)
    with predictions.open() as handle:
        lines = list(csv.reader(handle))
    with predictions.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow([*lines[0], "model_name", "model_version", "weights_sha256"])
        for index, line in enumerate(lines[1:]):
            # Two models: a re-run of 10 studies with other weights would mix them.
            identity = (
                ["cxr-densenet", "1.0", "b" * 64]
                if index < 10
                else ["cxr-densenet", "1.0", "a" * 64]
            )
            writer.writerow([*line, *identity])
    (tmp_path / "p.yaml").write_text(PROTOCOL)
    arguments = ["validate", "--predictions", str(predictions), "--manifest", str(manifest)]
    main([*arguments, "--protocol", str(tmp_path / "p.yaml"), "--out", str(tmp_path / "r")])
    report = json.loads((tmp_path / "r" / "report.json").read_text())
    assert report["models"] == [
        {"name": "cxr-densenet", "version": "1.0", "weights_sha256": "a" * 64, "rows": 290},
        {"name": "cxr-densenet", "version": "1.0", "weights_sha256": "b" * 64, "rows": 10},
    ]
    assert report["data"]["splits"] == {"test": 270, "train": 30}
    assert (
        report["data"]["reference_standard"]
        == "the manifest's 'nodule' column (1 present, 0 absent)"
    )
    warnings = "\n".join(report["warnings"])
    assert "30 cases come from splits used to develop the model (30 from 'train')" in warnings
    assert "the predictions name 2 different models" in warnings
    for group in [report["overall"], *report["subgroups"]["site"].values()]:
        bins = group["calibration"]["reliability"]
        assert sum(b["count"] for b in bins) == group["n"]
        assert all(b["lower"] <= b["mean_predicted"] <= b["upper"] for b in bins)
    page = (tmp_path / "r" / "report.html").read_text()
    assert "a" * 64 in page
    assert "Some cases are NOT independent of the model" in page


@pytest.mark.skipif(
    shutil.which("pdftotext") is None, reason="needs poppler-utils (scripts/setup.sh)"
)
def test_long_text_and_tables_go_on_overleaf_instead_of_being_cut(tmp_path: Path) -> None:
    from validation.render import TABLE_ROWS_PER_PAGE, write_pdf

    rows, scores = _rows_and_scores(size=300)
    cases = _cases(rows, scores)
    protocol = parse_protocol(PROTOCOL)
    report = build_report(
        evaluate(cases, protocol),
        ValidationInputs(cases),
        protocol,
        predictions_sha256="p",
        manifest_sha256="m",
    )
    report["warnings"] += [f"warning number {index}" for index in range(120)]
    values = {f"value {index}": report["overall"] for index in range(TABLE_ROWS_PER_PAGE + 5)}
    report["subgroups"]["many"] = values  # more groups than one table page holds
    write_pdf(report, cases, tmp_path / "r.pdf")
    text = subprocess.run(
        ["pdftotext", "-layout", str(tmp_path / "r.pdf"), "-"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    assert "warning number 119" in text  # the last line of the text made it
    assert "Validation report: report test (continued)" in text
    assert "Results by subgroup (red rows fail a criterion) (continued)" in text
    assert f"value {TABLE_ROWS_PER_PAGE + 4}" in text
