import json
import subprocess
import sys
from pathlib import Path

import pytest

from medvision.cli import _read_network, main


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "medvision.cli", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--modality", "xray"], "unknown modality 'xray'"),
        (["--modality", "fundis"], "Did you mean 'fundus'?"),
        (["--studies", "-3"], "must be 0 or more, got -3"),
        (["--seed", "many"], "expected a whole number, got 'many'"),
        (["--difficulty", "0"], "must be positive"),
        (["--prevalence", "nodule=2"], "prevalence of 'nodule' must be between 0 and 1"),
        (["--prevalence", "tumour=0.1"], "unknown finding(s) tumour"),
        (["--sites", "Nowhere General"], "unknown site 'Nowhere General'"),
        (["--device-conspicuity", "Nope 9=0.5"], "unknown device model 'Nope 9'"),
        (["--nodule-types", "glassy=1"], "--nodule-types: unknown type(s) glassy"),
        (["--nodule-types", "solid=0"], "weights must be 0 or more, and not all 0"),
        (["--nodule-types", "solid=-1", "ground_glass=2"], "weights must be 0 or more"),
        (["--nodule-types", "solid"], "--nodule-types: expected NAME=VALUE, got 'solid'"),
        (["--modality", "cxr", "--nodule-types", "solid=1"], "applies to CT phantoms only"),
    ],
)
def test_bad_synth_arguments_give_one_line_and_exit_2(
    tmp_path: Path, args: list[str], message: str
) -> None:
    result = _run("synth", "--out", str(tmp_path / "out"), "--studies", "1", *args)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert message in lines[0]
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "out").exists()


def test_unwritable_output_gives_one_line_and_exit_1(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    result = _run("synth", "--modality", "cxr", "--studies", "1", "--out", str(blocker / "out"))
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("medvision synth: error: Not a directory")
    assert "Traceback" not in result.stderr


def test_missing_subcommand_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main([])
    assert exit_info.value.code == 2
    assert "required: command" in capsys.readouterr().err


def test_synth_writes_manifest_and_prints_summary(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    status = main(
        [
            "synth",
            "--modality",
            "cxr",
            "--studies",
            "3",
            "--seed",
            "5",
            "--out",
            str(tmp_path),
            "--prevalence",
            "1",
            "--no-progress",
            "--workers",
            "1",
        ]
    )
    assert status == 0
    out = capsys.readouterr().out
    assert f"wrote 3 studies and {tmp_path / 'manifest.csv'}" in out
    assert "cxr: 3 studies" in out
    assert "nodule                 3 / 3     positive (100.0 %)" in out
    assert (tmp_path / "manifest.csv").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--modality", "ct", "--input-size", "64", "64"],
            "--input-size applies to 2-D modalities",
        ),
        (["--modality", "mammo", "--input-size", "512"], "expected 2 arguments"),
        (["--modality", "mammo", "--input-size", "512", "0"], "must be 1 or more, got 0"),
        (["--modality", "cxr", "--workers", "-2"], "must be 0 or more, got -2"),
        (["--modality", "cxr", "--time-limit", "0"], "must be positive, got 0.0"),
        (["--modality", "cxr", "--time-limit", "inf"], "positive, finite number of seconds"),
        (["--modality", "cxr", "--spacing", "1", "1", "1"], "--spacing applies to CT"),
        (["--modality", "ct", "--positive-fraction", "1.5"], "must be in (0, 1], got 1.5"),
        (["--modality", "cxr", "--patch-symmetries"], "(CT always trains on patches)"),
        (["--modality", "fundus", "--dot-enhancement"], "--dot-enhancement applies to CT"),
        (["--modality", "cxr", "--lesion-contrast", "0.4", "1"], "--lesion-contrast applies to CT"),
        (["--modality", "ct", "--lesion-contrast", "0.9", "0.4"], "takes LOW HIGH with 0 <= LOW"),
        (["--modality", "ct", "--positive-fraction", "0"], "must be positive, got 0.0"),
        (["--modality", "ct", "--spacing", "1.5", "1.5"], "expected 3 arguments"),
        (["--modality", "ct", "--spacing", "1.5", "0", "1.5"], "must be positive, got 0.0"),
        (["--modality", "ct", "--network", "absent.json"], "absent.json does not exist"),
        (["--modality", "ct", "--network", "list.json"], "must hold a JSON object"),
        (["--modality", "ct", "--network", "broken.json"], "is not readable JSON"),
        (["--modality", "ct", "--network", "typo.json"], "Did you mean 'unet'?"),
        (["--modality", "ct", "--network", "unet2d.json"], "ct needs spatial_dims 3, got 2"),
        (["--modality", "ct", "--network", "extra.json"], "--network: "),
        (
            ["--modality", "ct", "--network", "two_out.json"],
            "ct needs in_channels 1 and out_channels 1, got 1 and 2",
        ),
        (
            ["--modality", "mammo", "--patch-size", "128", "128"],
            "--patch-size needs --lesion-masks",
        ),
        (
            ["--modality", "mammo", "--lesion-masks", "--patch-size", "300", "128"],
            "no larger than the input size (256, 192)",
        ),
    ],
)
def test_bad_train_arguments_give_one_line_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    manifest = tmp_path / "manifest.csv"
    manifest.write_text("study_instance_uid\n")
    unet = {"architecture": "unet", "spatial_dims": 3, "in_channels": 1, "out_channels": 1}
    unet |= {"channels": [4, 8], "strides": [2]}
    networks = {
        "list.json": "[]",
        "broken.json": "{",
        "typo.json": json.dumps(unet | {"architecture": "unte"}),
        "unet2d.json": json.dumps(unet | {"spatial_dims": 2}),
        "extra.json": json.dumps(unet | {"depth": 3}),
        "two_out.json": json.dumps(unet | {"out_channels": 2}),
    }
    for name, text in networks.items():
        (tmp_path / name).write_text(text)
    args = [str(tmp_path / a) if a.endswith(".json") else a for a in args]
    code: int | str | None
    try:
        code = main(["train", "--manifest", str(manifest), "--out", str(tmp_path / "out"), *args])
    except SystemExit as stop:  # argparse's own checks exit; the options' return 2
        code = stop.code
    assert code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert message in lines[-1]
    assert not (tmp_path / "out").exists()


def test_a_network_file_is_read_as_the_runs_description(tmp_path: Path) -> None:
    description = {"architecture": "feature_head_unet", "spatial_dims": 3, "in_channels": 1}
    path = tmp_path / "network.json"
    path.write_text(json.dumps(description))
    assert _read_network(path) == description
