import dataclasses
from pathlib import Path

import numpy as np
import pytest

from medvision.dicom.reading import pixel_values
from medvision.modality import FINDINGS, Modality
from medvision.synth import cxr
from medvision.synth.catalogue import device_named
from medvision.synth.generator import SynthConfig, make_spec
from medvision.synth.study import StudySpec


def _spec(tmp_path: Path, index: int = 0, **options: object) -> StudySpec:
    config = SynthConfig((Modality.CXR,), 1, 11, tmp_path, **options)  # type: ignore[arg-type]
    return make_spec(config, Modality.CXR, index)


def test_every_finding_forced_present_has_a_mask_and_label(tmp_path: Path) -> None:
    spec = _spec(tmp_path, prevalence={"*": 1.0})
    study = cxr.generate_study(spec)
    sop = study.instances[0].SOPInstanceUID
    assert study.labels == dict.fromkeys(FINDINGS[Modality.CXR], 1)
    for finding in FINDINGS[Modality.CXR]:
        assert study.masks[f"{sop}/{finding}"].any(), finding


def test_no_finding_means_empty_masks_and_zero_labels(tmp_path: Path) -> None:
    study = cxr.generate_study(_spec(tmp_path, prevalence={"*": 0.0}))
    assert study.labels == dict.fromkeys(FINDINGS[Modality.CXR], 0)
    assert not any(mask.any() for mask in study.masks.values())
    assert study.annotations["lesions"] == []


def test_same_spec_gives_identical_pixels(tmp_path: Path) -> None:
    spec = _spec(tmp_path, prevalence={"*": 0.5})
    first = cxr.generate_study(spec).instances[0].PixelData
    second = cxr.generate_study(spec).instances[0].PixelData
    assert first == second


@pytest.mark.parametrize(
    ("model", "sop_class", "photometric", "bits"),
    [
        ("Aquila DR-9", "1.2.840.10008.5.1.4.1.1.1.1", "MONOCHROME2", 16),
        ("Cygnus CR-200", "1.2.840.10008.5.1.4.1.1.1", "MONOCHROME1", 12),
    ],
)
def test_device_decides_sop_class_photometric_and_bit_depth(
    tmp_path: Path, model: str, sop_class: str, photometric: str, bits: int
) -> None:
    spec = dataclasses.replace(_spec(tmp_path), device=device_named(model))
    ds = cxr.generate_study(spec).instances[0]
    assert (ds.SOPClassUID, ds.PhotometricInterpretation, ds.BitsStored) == (
        sop_class,
        photometric,
        bits,
    )
    assert int(ds.pixel_array.max()) < 2**bits


def test_monochrome1_reads_back_with_bright_bone_like_monochrome2(tmp_path: Path) -> None:
    spec = _spec(tmp_path)
    values = {}
    for model in ("Aquila DR-9", "Cygnus CR-200"):
        ds = cxr.generate_study(dataclasses.replace(spec, device=device_named(model))).instances[0]
        image = pixel_values(ds)
        image = (image - image.min()) / np.ptp(image)
        values[model] = (float(image[5:40, 5:40].mean()), float(image[250:262, 250:262].mean()))
    for outside_body, mediastinum in values.values():
        assert outside_body < 0.2 < mediastinum


def test_cardiomegaly_label_follows_cardiothoracic_ratio(tmp_path: Path) -> None:
    for index in range(6):
        study = cxr.generate_study(_spec(tmp_path, index, prevalence={"cardiomegaly": 0.5}))
        ratio = study.annotations["cardiothoracic_ratio"]
        assert study.labels["cardiomegaly"] == int(ratio > cxr.CARDIOMEGALY_CTR)
