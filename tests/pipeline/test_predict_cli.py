import csv
from pathlib import Path

import pytest

from medvision.cli import main
from medvision.data.manifest import ManifestRow
from medvision.pipeline import PREDICTION_COLUMNS
from tests.pipeline.conftest import TinyModel, two_studies_and_a_text_file

HEADER = [
    "study_instance_uid",
    "finding",
    "probability",
    "threshold",
    "flagged",
    "site",
    "manufacturer",
    "manufacturer_model",
    "sex",
    "age",
    "model_name",
    "model_version",
    "weights_sha256",
    "grade",
]


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory, tiny_cxr_model: TinyModel) -> Path:
    """Two cxr studies and a text file."""
    return two_studies_and_a_text_file(tiny_cxr_model, tmp_path_factory.mktemp("predict"))


def test_predictions_have_one_row_per_study_and_finding(
    folder: Path, tiny_cxr_model: TinyModel, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "preds.csv"
    status = main(
        [
            "predict",
            str(folder),
            "--out",
            str(out),
            "--models",
            str(tiny_cxr_model.registry),
            "--device",
            "cpu",
            "--no-progress",
        ]
    )
    captured = capsys.readouterr()
    assert status == 0
    errors = captured.err.strip().splitlines()
    assert len(errors) == 1
    assert errors[0].startswith(
        f"skipped {folder / 'readme.txt'} [not_dicom]: not a readable DICOM file ("
    )
    assert captured.out.strip().startswith("analysed 2 studies (8 findings, ")
    assert f"; 1 problem; wrote {out}" in captured.out
    with out.open(newline="") as handle:
        reader = csv.DictReader(handle)
        rows = list(reader)
    assert reader.fieldnames == HEADER == list(PREDICTION_COLUMNS)
    entry = tiny_cxr_model.entry
    studies: dict[str, ManifestRow] = {r.study_instance_uid: r for r in tiny_cxr_model.rows[:2]}
    assert sorted((r["study_instance_uid"], r["finding"]) for r in rows) == sorted(
        (uid, finding) for uid in studies for finding in entry.findings
    )
    for row in rows:
        study = studies[row["study_instance_uid"]]
        assert row["flagged"] == (
            "1" if float(row["probability"]) >= float(row["threshold"]) else "0"
        )
        assert float(row["threshold"]) == entry.thresholds[row["finding"]]
        assert (row["site"], row["sex"], row["age"]) == (study.site, study.sex, str(study.age))
        assert row["weights_sha256"] == entry.weights_sha256


def test_nothing_analysable_exits_1_without_writing(
    tiny_cxr_model: TinyModel, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "a.txt").write_text("text")
    out = tmp_path / "preds.csv"
    status = main(
        [
            "predict",
            str(tmp_path / "a.txt"),
            "--out",
            str(out),
            "--no-progress",
            "--models",
            str(tiny_cxr_model.registry),
        ]
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert status == 1
    assert len(err) == 2
    assert err[0].startswith(f"skipped {tmp_path / 'a.txt'} [not_dicom]: ")
    assert err[1] == "medvision predict: error: no study could be analysed (1 problem(s) above)"
    assert not out.exists()


def test_a_missing_path_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    status = main(["predict", str(tmp_path / "nowhere"), "--out", str(tmp_path / "p.csv")])
    assert status == 2
    assert capsys.readouterr().err == (
        f"medvision predict: error: {tmp_path / 'nowhere'} does not exist\n"
    )


def test_an_empty_models_folder_is_a_usage_error(
    folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    status = main(
        ["predict", str(folder), "--out", str(tmp_path / "p.csv"), "--models", str(tmp_path)]
    )
    assert status == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert err[0].startswith(
        f"medvision predict: error: --models: no model entry (<name>.json) in {tmp_path}"
    )


def test_missing_bundled_weights_say_how_to_train_them(
    folder: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("medvision.models.registry.BUNDLED_WEIGHTS", tmp_path / "weights")
    status = main(["predict", str(folder), "--out", str(tmp_path / "p.csv")])
    assert status == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert "the bundled weights are not installed" in err[0]
    assert "medvision train --modality cxr" in err[0]


def test_a_zero_batch_size_is_a_usage_error(
    folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["predict", str(folder), "--out", str(tmp_path / "p.csv"), "--batch-size", "0"])
    assert exit_info.value.code == 2
    assert "--batch-size: must be 1 or more, got 0" in capsys.readouterr().err
