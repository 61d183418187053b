"""Explanations in the pipeline and ``medvision explain``: heatmaps added, scores unchanged."""

from __future__ import annotations

import csv
from pathlib import Path

import pydicom
import pytest
from PIL import Image

from medvision.cli import main
from medvision.pipeline import analyze
from medvision.pipeline.results import AnalysisRun
from tests.conftest import dciodvfy_errors, dicom_image_shapes, needs_dciodvfy
from tests.pipeline.conftest import TinyModel, two_studies_and_a_text_file


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory, tiny_cxr_model: TinyModel) -> Path:
    """Two cxr studies and a text file."""
    return two_studies_and_a_text_file(tiny_cxr_model, tmp_path_factory.mktemp("explain"))


def _probabilities(run: AnalysisRun) -> dict[tuple[str, str], float]:
    return {
        (result.study_instance_uid, finding.name): finding.probability
        for result in run.results
        for finding in result.findings
    }


def test_explaining_adds_heatmaps_on_the_source_grid_and_changes_no_probability(
    folder: Path, tiny_cxr_model: TinyModel
) -> None:
    def run(explain: str) -> AnalysisRun:
        return analyze(
            [folder],
            registry=tiny_cxr_model.registry,
            device="cpu",
            progress=False,
            explain=explain,
        )

    plain, explained, flagged_only = run("none"), run("all"), run("flagged")
    assert _probabilities(explained) == _probabilities(plain) == _probabilities(flagged_only)
    shapes = dicom_image_shapes(folder)
    for result in plain.results:
        assert all(f.heatmaps == [] and f.explanation_note == "" for f in result.findings)
    for result in explained.results:
        for finding in result.findings:
            assert finding.explanation_note == ""
            (heatmap,) = finding.heatmaps
            assert heatmap.finding == finding.name
            assert heatmap.values.shape == shapes[heatmap.referenced_uid]
            assert float(heatmap.values.max()) in (0.0, pytest.approx(1.0))
    for result in flagged_only.results:
        for finding in result.findings:
            assert len(finding.heatmaps) == int(finding.flagged)
    with pytest.raises(ValueError, match="unknown explain 'some'"):
        run("some")


def test_explain_writes_one_png_per_heatmap_and_skips_what_it_cannot_read(
    folder: Path, tiny_cxr_model: TinyModel, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "overlays"
    arguments = [str(folder), "--models", str(tiny_cxr_model.registry), "--out", str(out)]
    code = main(["explain", *arguments, "--all-findings", "--device", "cpu", "--no-progress"])
    assert code == 0
    captured = capsys.readouterr()
    assert "skipped " in captured.err and "readme.txt [not_dicom]" in captured.err
    assert "analysed 2 studies; 1 problem; wrote 8 overlays to" in captured.out
    shapes = dicom_image_shapes(folder)
    pictures = sorted(out.rglob("*.png"))
    assert len(pictures) == 8
    assert {p.parent.name for p in pictures} == {
        r.study_instance_uid for r in tiny_cxr_model.rows[:2]
    }
    assert {p.name.rsplit("_", 1)[0] for p in pictures} == {
        f"{tiny_cxr_model.entry.name}_{finding}" for finding in tiny_cxr_model.entry.findings
    }
    for picture in pictures:
        with Image.open(picture) as image:
            assert image.mode == "RGB"
            rows, columns = next(iter(shapes.values()))
            assert image.width == columns
            assert image.height > rows  # the legend band


def test_explain_exits_1_when_nothing_can_be_analysed(
    tiny_cxr_model: TinyModel, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "notes.txt").write_text("no images here\n")
    out = tmp_path / "overlays"
    registry = str(tiny_cxr_model.registry)
    code = main(
        ["explain", str(tmp_path), "--models", registry, "--out", str(out), "--no-progress"]
    )
    assert code == 1
    assert "medvision explain: error: no study could be analysed" in capsys.readouterr().err
    assert not out.exists()


@needs_dciodvfy
def test_predict_with_dicom_out_writes_one_valid_secondary_capture_per_flagged_finding(
    folder: Path, tiny_cxr_model: TinyModel, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out, dicom = tmp_path / "preds.csv", tmp_path / "dicom"
    registry = str(tiny_cxr_model.registry)
    arguments = [str(folder), "--out", str(out), "--models", registry, "--dicom-out", str(dicom)]
    assert main(["predict", *arguments, "--device", "cpu", "--no-progress"]) == 0
    with out.open(newline="") as handle:
        flagged = [row for row in csv.DictReader(handle) if row["flagged"] == "1"]
    assert flagged  # the tiny model's thresholds (sensitivity 0.9) flag some findings
    objects = sorted(dicom.rglob("SC_*.dcm"))
    assert len(objects) == len(flagged)
    assert f"wrote 2 SR documents, 0 segmentations and {len(objects)} heatmap Secondary" in (
        capsys.readouterr().out
    )
    sources = {
        str(ds.SOPInstanceUID): ds
        for ds in (pydicom.dcmread(p, stop_before_pixels=True) for p in folder.rglob("*.dcm"))
    }
    for path in objects:
        assert dciodvfy_errors(path) == []
        written = pydicom.dcmread(path)
        source = sources[written.SourceImageSequence[0].ReferencedSOPInstanceUID]
        assert written.StudyInstanceUID == source.StudyInstanceUID == path.parent.name
        assert written.SeriesInstanceUID != source.SeriesInstanceUID
    expected = sorted((row["study_instance_uid"], row["finding"]) for row in flagged)
    found = sorted(
        (str(ds.StudyInstanceUID), str(ds.DerivationDescription).split(":")[0].split(" of ")[1])
        for ds in (pydicom.dcmread(p, stop_before_pixels=True) for p in objects)
    )
    assert found == expected


@needs_dciodvfy
def test_predict_with_dicom_out_writes_an_sr_per_study_that_supersedes_the_last(
    folder: Path, tiny_cxr_model: TinyModel, tmp_path: Path
) -> None:
    dicom = tmp_path / "dicom"
    registry = str(tiny_cxr_model.registry)
    arguments = ["--models", registry, "--dicom-out", str(dicom), "--device", "cpu"]
    for run in ("first", "second"):
        out = str(tmp_path / f"{run}.csv")
        assert main(["predict", str(folder), "--out", out, *arguments, "--no-progress"]) == 0
        if run == "first":
            first = {p.parent.name: (p, pydicom.dcmread(p)) for p in dicom.rglob("SR_*.dcm")}
    assert set(first) == {row.study_instance_uid for row in tiny_cxr_model.rows[:2]}
    for study, (path, earlier) in first.items():
        assert dciodvfy_errors(path) == []
        assert "PredecessorDocumentsSequence" not in earlier
        (later,) = [
            ds
            for ds in (pydicom.dcmread(p) for p in (dicom / study).glob("SR_*.dcm"))
            if ds.SOPInstanceUID != earlier.SOPInstanceUID
        ]
        (predecessor,) = later.PredecessorDocumentsSequence[0].ReferencedSeriesSequence
        assert predecessor.ReferencedSOPSequence[0].ReferencedSOPInstanceUID == (
            earlier.SOPInstanceUID
        )
        assert later.StudyInstanceUID == study
