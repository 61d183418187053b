import dataclasses
import filecmp
import json
from pathlib import Path

import numpy as np
import pydicom
import pytest

from medvision.data.manifest import ManifestRow, read_manifest
from medvision.dicom.reading import iter_files, pixel_values
from medvision.modality import FINDINGS, Modality
from medvision.synth.catalogue import devices_for
from medvision.synth.conspicuity import contrast_to_noise
from medvision.synth.generator import (
    SynthConfig,
    generate,
    make_spec,
    modality_generator,
    scale_odds,
)
from tests.conftest import SHARED_SEED, SHARED_STUDIES

PhantomSet = tuple[Path, list[ManifestRow]]


def _files(folder: Path) -> list[Path]:
    return sorted(p.relative_to(folder) for p in iter_files(folder))


def test_same_seed_writes_byte_identical_sets(tmp_path: Path) -> None:
    for name in ("a", "b"):
        config = SynthConfig(tuple(Modality), 1, 4, tmp_path / name, workers=1)
        generate(config, progress=False)
    files = _files(tmp_path / "a")
    assert files == _files(tmp_path / "b")
    _, mismatch, errors = filecmp.cmpfiles(tmp_path / "a", tmp_path / "b", files, shallow=False)
    assert (mismatch, errors) == ([], [])


def test_parallel_workers_write_the_same_set_as_one_worker(tmp_path: Path) -> None:
    for name, workers in (("one", 1), ("two", 2)):
        generate(
            SynthConfig((Modality.CXR,), 3, 9, tmp_path / name, workers=workers), progress=False
        )
    files = _files(tmp_path / "one")
    _, mismatch, errors = filecmp.cmpfiles(tmp_path / "one", tmp_path / "two", files, shallow=False)
    assert (mismatch, errors) == ([], [])


def test_manifest_lists_every_study_with_its_header_values(phantom_set: PhantomSet) -> None:
    out, rows = phantom_set
    assert read_manifest(out / "manifest.csv") == rows
    assert len(rows) == SHARED_STUDIES * len(Modality)
    for row in rows:
        files = list(iter_files(out / row.path))
        ds = pydicom.dcmread(files[0], stop_before_pixels=True)
        assert ds.StudyInstanceUID == row.study_instance_uid
        assert (ds.InstitutionName, ds.Manufacturer, ds.ManufacturerModelName) == (
            row.site,
            row.manufacturer,
            row.manufacturer_model,
        )
        assert (ds.PatientSex, int(ds.PatientAge[:3]), ds.EthnicGroup) == (
            row.sex,
            row.age,
            row.ethnicity,
        )
        assert set(row.labels) == set(FINDINGS[row.modality])
        assert row.annotations is not None and row.masks is not None
        document = json.loads((out / row.annotations).read_text())
        assert document["labels"] == row.labels
        masks = np.load(out / row.masks)
        for key in masks.files:
            assert masks[key].dtype == np.uint8


def test_shared_set_covers_every_device(phantom_set: PhantomSet) -> None:
    _, rows = phantom_set
    for modality in Modality:
        seen = {row.manufacturer_model for row in rows if row.modality == modality}
        assert seen == {d.model for d in devices_for(modality)}, modality


def test_compressed_files_decode_to_the_uncompressed_pixels(phantom_set: PhantomSet) -> None:
    out, rows = phantom_set
    checked: set[str] = set()
    config = SynthConfig(tuple(Modality), SHARED_STUDIES, SHARED_SEED, out)
    for row in rows:
        index = int(row.patient_id.rsplit("-", 1)[1][2:])
        spec = make_spec(config, row.modality, index)
        syntax = spec.device.transfer_syntax
        if not syntax.is_compressed or syntax in checked:
            continue
        original = modality_generator(row.modality).generate_study(spec).instances
        for ds in original[:3]:
            path = (
                out / row.path / f"{int(ds.SeriesNumber):03d}" / f"{int(ds.InstanceNumber):04d}.dcm"
            )
            written = pydicom.dcmread(path)
            assert written.file_meta.TransferSyntaxUID == syntax
            assert np.array_equal(written.pixel_array, ds.pixel_array), (row.modality, syntax)
        checked.add(syntax)
    assert {str(s) for s in checked} == {
        "1.2.840.10008.1.2.5",
        "1.2.840.10008.1.2.4.80",
        "1.2.840.10008.1.2.4.90",
    }


def test_site_odds_multiplier_keeps_certainty() -> None:
    assert scale_odds(1.0, 0.8) == 1.0
    assert scale_odds(0.0, 1.5) == 0.0
    assert scale_odds(0.5, 2.0) == pytest.approx(2 / 3)


@pytest.mark.parametrize("modality", list(Modality))
def test_low_conspicuity_device_makes_the_same_lesion_harder_to_see(
    tmp_path: Path, modality: Modality
) -> None:
    config = SynthConfig((modality,), 1, 21, tmp_path, prevalence={"*": 1.0})
    spec = make_spec(config, modality, 0)
    devices = sorted(devices_for(modality), key=lambda d: d.conspicuity)
    hard, easy = devices[0], devices[-1]
    ratios = []
    for device in (easy, hard):
        study = modality_generator(modality).generate_study(
            dataclasses.replace(spec, device=device)
        )
        ratios.append(contrast_to_noise(study, modality))
    assert ratios[0] > ratios[1] > 0


def test_split_option_puts_every_study_in_that_split(tmp_path: Path) -> None:
    rows = generate(
        SynthConfig((Modality.CXR,), 4, 1, tmp_path, split="test", workers=1), progress=False
    )
    assert {row.split for row in rows} == {"test"}


def test_pixel_values_apply_rescale_for_ct(phantom_set: PhantomSet) -> None:
    out, rows = phantom_set
    row = next(r for r in rows if r.modality == Modality.CT)
    ds = pydicom.dcmread(next(iter_files(out / row.path)))
    hu = pixel_values(ds)
    assert float(hu.min()) >= -1024.0
    assert float(hu[0, 0]) < -900.0
