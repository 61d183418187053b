"""What a modality generator receives (:class:`StudySpec`) and returns (:class:`GeneratedStudy`)."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray
from pydicom import Dataset

from medvision.modality import Modality
from medvision.synth.catalogue import Device, Site


@dataclass(frozen=True)
class Patient:
    """A phantom patient: identifiers are synthetic and carry no PHI."""

    patient_id: str
    name: str
    sex: str
    age_years: int
    ethnicity: str
    birth_date: dt.date


@dataclass(frozen=True)
class StudySpec:
    """Everything a modality generator needs to make one study.

    Parameters
    ----------
    index
        The study's index within the run (0-based).
    seed
        Seed of the run; with ``index`` it determines the study completely.
    modality
        The phantom modality.
    study_instance_uid
        The study's ``StudyInstanceUID``.
    patient, site, device
        Who, where and on what the study is acquired.
    acquired
        Study date and time.
    prevalence
        Per finding, the probability that it is present in this study (site-adjusted).
    difficulty
        Global difficulty knob: lesion contrast is divided by it (1 is the default).
    nodule_types
        CT: weights of the nodule types drawn (``None``: the generator's mix).
    """

    index: int
    seed: int
    modality: Modality
    study_instance_uid: str
    patient: Patient
    site: Site
    device: Device
    acquired: dt.datetime
    prevalence: dict[str, float]
    difficulty: float = 1.0
    nodule_types: dict[str, float] | None = None

    def rng(self, stream: str) -> np.random.Generator:
        """Return a random generator for one named stream of this study.

        Separate streams keep, e.g., the anatomy of a study unchanged when only
        its lesions are redrawn.
        """
        words = [self.seed, self.index, *(ord(c) for c in f"{self.modality}/{stream}")]
        return np.random.default_rng(np.random.SeedSequence(words))

    def uid(self, *parts: object) -> str:
        """Return a deterministic UID derived from this study and ``parts``."""
        from medvision.synth.dicom_objects import derived_uid

        return derived_uid(self.study_instance_uid, *parts)

    @property
    def lesion_contrast(self) -> float:
        """Multiplier on lesion contrast: device conspicuity over the difficulty knob."""
        return self.device.conspicuity / self.difficulty


@dataclass
class GeneratedStudy:
    """A generated study before it is written to disk.

    Attributes
    ----------
    instances
        The DICOM objects, with uncompressed pixel data; the writer compresses them
        with the device's transfer syntax.
    labels
        Per finding, 1 when present and 0 when absent (the manifest's finding columns).
    masks
        Ground-truth masks: for 2-D images the key is ``"<SOPInstanceUID>/<finding>"``
        and the value a ``(rows, columns)`` uint8 array; for CT the key is
        ``"<SeriesInstanceUID>/<finding>"`` and the value a ``(slices, rows, columns)``
        array ordered by ``InstanceNumber``.
    annotations
        JSON-serialisable ground truth: lesions with their boxes, sizes and positions.
    extra_columns
        Additional manifest columns (e.g. ``dr_grade``, ``breast_density``).
    """

    instances: list[Dataset]
    labels: dict[str, int]
    masks: dict[str, NDArray[np.uint8]] = field(default_factory=dict)
    annotations: dict[str, Any] = field(default_factory=dict)
    extra_columns: dict[str, str | int] = field(default_factory=dict)
