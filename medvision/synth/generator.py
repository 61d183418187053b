"""Generate a multi-site phantom set: DICOM studies, ground truth and ``manifest.csv``."""

from __future__ import annotations

import datetime as dt
import importlib
import json
import os
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np
from numpy.typing import NDArray
from pydicom.uid import ExplicitVRLittleEndian, JPEG2000Lossless
from tqdm import tqdm

from medvision.data.manifest import ManifestRow, write_manifest
from medvision.modality import FINDINGS, Modality
from medvision.synth.catalogue import SITES, Device, Site, devices_for
from medvision.synth.dicom_objects import study_uid
from medvision.synth.study import GeneratedStudy, Patient, StudySpec

#: Share of patients in each split, assigned by a hash of the patient.
SPLIT_FRACTIONS: tuple[tuple[str, float], ...] = (
    ("train", 0.6),
    ("tune", 0.1),
    ("calibration", 0.1),
    ("test", 0.2),
)


class ModalityGenerator(Protocol):
    """What each modality module (``medvision.synth.cxr`` …) provides."""

    DEFAULT_PREVALENCE: dict[str, float]

    def generate_study(self, spec: StudySpec) -> GeneratedStudy:
        """Make one study."""
        ...


def modality_generator(modality: Modality) -> ModalityGenerator:
    """Return the generator module of ``modality``."""
    module = importlib.import_module(f"medvision.synth.{modality.value}")
    return module


@dataclass(frozen=True)
class SynthConfig:
    """Options of a phantom run (the ``medvision synth`` command line).

    Parameters
    ----------
    modalities
        Modalities to generate.
    studies
        Number of studies per modality.
    seed
        Seed; the same seed and options give byte-identical output.
    out
        Output folder.
    sites
        Sites to draw studies from (default: all).
    prevalence
        Per finding, a prevalence replacing the default (before the site's odds multiplier);
        the key ``"*"`` sets every finding.
    difficulty
        Lesion contrast is divided by this (1 is the default; 2 is twice as subtle).
    device_conspicuity
        Per device model, a multiplier on lesion contrast (below 1 is harder).
    nodule_types
        CT: weights of the nodule types (``solid``, ``part_solid``, ``ground_glass``)
        replacing the generator's mix; types not named are not drawn. Empty: the mix
        of :data:`medvision.synth.ct.NODULE_TYPES`.
    split
        When set, every study gets this split (e.g. ``"test"`` for a held-out set).
    workers
        Worker processes (0 means one per CPU core).
    """

    modalities: tuple[Modality, ...]
    studies: int
    seed: int
    out: Path
    sites: tuple[Site, ...] = SITES
    prevalence: dict[str, float] = field(default_factory=dict)
    difficulty: float = 1.0
    device_conspicuity: dict[str, float] = field(default_factory=dict)
    nodule_types: dict[str, float] = field(default_factory=dict)
    split: str | None = None
    workers: int = 0

    def __post_init__(self) -> None:
        """Validate the options (the command line reports these messages as they are)."""
        if self.studies < 0:
            raise ValueError(f"--studies must be 0 or more, got {self.studies}")
        if self.seed < 0:
            raise ValueError(f"--seed must be 0 or more, got {self.seed}")
        if not self.sites:
            raise ValueError("at least one site is needed")
        if self.difficulty <= 0:
            raise ValueError(f"--difficulty must be positive, got {self.difficulty}")
        for name, value in self.prevalence.items():
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"prevalence of '{name}' must be between 0 and 1, got {value}")
        for model, factor in self.device_conspicuity.items():
            if factor <= 0:
                raise ValueError(f"conspicuity of '{model}' must be positive, got {factor}")
        if self.nodule_types:
            from medvision.synth.ct import NODULE_TYPES

            unknown = sorted(set(self.nodule_types) - set(NODULE_TYPES))
            if unknown:
                raise ValueError(
                    f"--nodule-types: unknown type(s) {', '.join(unknown)} "
                    f"(known: {', '.join(NODULE_TYPES)})"
                )
            if min(self.nodule_types.values()) < 0 or sum(self.nodule_types.values()) <= 0:
                raise ValueError("--nodule-types: weights must be 0 or more, and not all 0")
        known_splits = {name for name, _ in SPLIT_FRACTIONS}
        if self.split is not None and self.split not in known_splits:
            raise ValueError(
                f"unknown split '{self.split}': expected one of {', '.join(sorted(known_splits))}"
            )


def _choice(rng: np.random.Generator, weights: dict[str, float]) -> str:
    names = sorted(weights)
    p = np.array([weights[n] for n in names], dtype=float)
    return names[int(rng.choice(len(names), p=p / p.sum()))]


def _split_of(seed: int, patient_id: str) -> str:
    u = np.random.default_rng(np.random.SeedSequence([seed, *patient_id.encode()])).random()
    cumulative = 0.0
    for name, fraction in SPLIT_FRACTIONS:
        cumulative += fraction
        if u < cumulative:
            return name
    return SPLIT_FRACTIONS[-1][0]


def _device_for(
    config: SynthConfig, site: Site, modality: Modality, rng: np.random.Generator
) -> Device:
    devices = {d.model: d for d in devices_for(modality)}
    weights = {m: w for m, w in site.device_weights.items() if m in devices}
    if not weights:
        weights = dict.fromkeys(devices, 1.0)
    device = devices[_choice(rng, weights)]
    factor = config.device_conspicuity.get(device.model, 1.0)
    return device.with_conspicuity(factor) if factor != 1.0 else device


def scale_odds(probability: float, factor: float) -> float:
    """Multiply the odds of ``probability`` by ``factor`` (0 and 1 stay fixed)."""
    if probability >= 1.0:
        return 1.0
    return factor * probability / (1.0 - probability + factor * probability)


def make_spec(config: SynthConfig, modality: Modality, index: int) -> StudySpec:
    """Draw the site, device, patient and prevalence of one study (deterministic)."""
    rng = np.random.default_rng(
        np.random.SeedSequence([config.seed, index, *modality.value.encode(), 7])
    )
    site = config.sites[int(rng.integers(len(config.sites)))]
    device = _device_for(config, site, modality, rng)
    female_share = 1.0 if modality == Modality.MAMMO else 0.5
    sex = "F" if rng.random() < female_share else "M"
    low, high = (40, 79) if modality == Modality.MAMMO else (18, 95)
    age = int(np.clip(round(rng.normal(site.age_mean, site.age_sd)), low, high))
    ethnicity = _choice(rng, site.ethnicity_weights)
    acquired = dt.datetime(2025, 1, 6, 8, 0) + dt.timedelta(
        days=int(rng.integers(0, 300)), minutes=int(rng.integers(0, 600))
    )
    birth = dt.date(acquired.year - age, 1, 1) + dt.timedelta(days=int(rng.integers(0, 365)))
    patient_number = f"{modality.value[:2].upper()}{index:05d}"
    patient = Patient(
        patient_id=f"PH-{config.seed}-{patient_number}",
        name=f"PHANTOM^{patient_number}",
        sex=sex,
        age_years=age,
        ethnicity=ethnicity,
        birth_date=birth,
    )
    defaults = modality_generator(modality).DEFAULT_PREVALENCE
    prevalence = {}
    for finding, base in defaults.items():
        chosen = config.prevalence.get(finding, config.prevalence.get("*", base))
        prevalence[finding] = scale_odds(chosen, site.prevalence_multiplier)
    return StudySpec(
        index=index,
        seed=config.seed,
        modality=modality,
        study_instance_uid=study_uid(config.seed, modality.value, index),
        patient=patient,
        site=site,
        device=device,
        acquired=acquired,
        prevalence=prevalence,
        difficulty=config.difficulty,
        nodule_types=dict(config.nodule_types) or None,
    )


def _write_study(config: SynthConfig, modality: Modality, index: int) -> ManifestRow:
    spec = make_spec(config, modality, index)
    study = modality_generator(modality).generate_study(spec)
    study_dir = config.out / modality.value / spec.study_instance_uid
    for ds in study.instances:
        series_dir = study_dir / f"{int(ds.SeriesNumber):03d}"
        series_dir.mkdir(parents=True, exist_ok=True)
        if (
            spec.device.transfer_syntax == JPEG2000Lossless
            and ds.PhotometricInterpretation == "RGB"
        ):
            # Reversible JPEG 2000 stores colour as YBR_RCT (PS3.5 8.2.4); the encoder
            # applies the transform, and decoding gives the RGB values back exactly.
            ds.PhotometricInterpretation = "YBR_RCT"
        if spec.device.transfer_syntax != ExplicitVRLittleEndian:
            ds.compress(spec.device.transfer_syntax, generate_instance_uid=False)
        ds.save_as(series_dir / f"{int(ds.InstanceNumber):04d}.dcm", enforce_file_format=True)
    annotations_dir = config.out / "annotations"
    annotations_dir.mkdir(parents=True, exist_ok=True)
    masks_path = annotations_dir / f"{spec.study_instance_uid}.npz"
    masks: dict[str, NDArray[np.uint8]] = {
        key.replace("/", "__"): value for key, value in study.masks.items()
    }
    np.savez_compressed(masks_path, **masks)  # type: ignore[arg-type]
    annotations_path = annotations_dir / f"{spec.study_instance_uid}.json"
    document = {
        "study_instance_uid": spec.study_instance_uid,
        "modality": modality.value,
        "labels": study.labels,
        "mask_keys": "<UID>__<finding>; 2-D: SOPInstanceUID, CT: SeriesInstanceUID",
        **study.annotations,
    }
    annotations_path.write_text(json.dumps(document, indent=1, sort_keys=True))
    split = config.split or _split_of(config.seed, spec.patient.patient_id)
    return ManifestRow(
        study_instance_uid=spec.study_instance_uid,
        modality=modality,
        path=Path(modality.value) / spec.study_instance_uid,
        site=spec.site.name,
        manufacturer=spec.device.manufacturer,
        manufacturer_model=spec.device.model,
        sex=spec.patient.sex,
        age=spec.patient.age_years,
        ethnicity=spec.patient.ethnicity,
        split=split,
        patient_id=spec.patient.patient_id,
        labels={name: study.labels[name] for name in FINDINGS[modality]},
        annotations=annotations_path.relative_to(config.out),
        masks=masks_path.relative_to(config.out),
        extra={k: str(v) for k, v in study.extra_columns.items()},
    )


def _write_task(task: tuple[SynthConfig, Modality, int]) -> ManifestRow:
    return _write_study(*task)


def _run(tasks: Sequence[tuple[SynthConfig, Modality, int]], workers: int) -> Iterator[ManifestRow]:
    if workers <= 1:
        yield from map(_write_task, tasks)
        return
    with ProcessPoolExecutor(max_workers=workers) as pool:
        yield from pool.map(_write_task, tasks, chunksize=1)


def generate(
    config: SynthConfig,
    progress: bool = True,
) -> list[ManifestRow]:
    """Generate the phantom set described by ``config`` and write its manifest.

    Parameters
    ----------
    config
        The run's options.
    progress
        Show a progress bar on standard error.

    Returns
    -------
    list of ManifestRow
        The manifest rows, in modality then index order (also in ``out/manifest.csv``).

    Raises
    ------
    OSError
        If the output folder cannot be created or written.
    """
    config.out.mkdir(parents=True, exist_ok=True)
    probe = config.out / ".medvision-write-test"
    probe.write_bytes(b"")
    probe.unlink()
    tasks = [(config, m, i) for m in config.modalities for i in range(config.studies)]
    workers = config.workers or (os.cpu_count() or 1)
    workers = min(workers, max(1, len(tasks)))
    rows: list[ManifestRow] = []
    bar = tqdm(total=len(tasks), desc="synth", unit="study", disable=not progress)
    with bar:
        for row in _run(tasks, workers):
            rows.append(row)
            bar.update(1)
    write_manifest(rows, config.out / "manifest.csv")
    return rows
