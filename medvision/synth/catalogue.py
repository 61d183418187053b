"""Phantom sites and acquisition devices.

Every phantom study is acquired at a *site* (``InstitutionName``) on a *device*
(``Manufacturer`` / ``ManufacturerModelName``). Devices differ in the ways real
equipment differs — noise, resolution, contrast curve, bit depth, photometric
interpretation, transfer syntax — and in *lesion conspicuity*, so that domain
shift between devices is real and measurable. All names are fictional.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from pydicom.uid import (
    UID,
    ExplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGLSLossless,
    RLELossless,
)

from medvision.modality import Modality


@dataclass(frozen=True)
class Device:
    """An acquisition device and how it renders a phantom.

    Parameters
    ----------
    manufacturer, model
        ``Manufacturer`` and ``ManufacturerModelName``.
    modality
        The phantom modality the device acquires.
    transfer_syntax
        Transfer syntax the device stores in (compressed ones are lossless).
    bits_stored
        ``BitsStored`` of the pixel data (8 for colour photography).
    photometric
        ``PhotometricInterpretation``; ``MONOCHROME1`` means high values are dark.
    noise
        Standard deviation of the acquisition noise, relative to the phantom's signal range.
    blur_mm
        Gaussian blur (sigma, in millimetres) standing for the device's resolution.
    gamma
        Exponent of the device's contrast curve (1 is linear; > 1 compresses dark values).
    conspicuity
        Multiplier on lesion contrast: below 1, findings are harder to see on this device.
    pixel_spacing_mm
        Pixel spacing in millimetres (in-plane for CT).
    dicom_modality
        The DICOM ``Modality`` value (``DX``, ``CR``, ``MG``, ``OP``, ``CT``).
    options
        Modality-specific settings (e.g. CT slice thickness, fundus colour cast).
    """

    manufacturer: str
    model: str
    modality: Modality
    transfer_syntax: UID
    bits_stored: int
    photometric: str
    noise: float
    blur_mm: float
    gamma: float
    conspicuity: float
    pixel_spacing_mm: float
    dicom_modality: str
    options: dict[str, float] = field(default_factory=dict)

    def with_conspicuity(self, factor: float) -> Device:
        """Return a copy whose lesion conspicuity is multiplied by ``factor``."""
        return replace(self, conspicuity=self.conspicuity * factor)


@dataclass(frozen=True)
class Site:
    """A hospital site: its device mix, prevalence and population.

    Parameters
    ----------
    name
        ``InstitutionName``.
    device_weights
        Per device model, the share of studies acquired on it (per modality).
    prevalence_multiplier
        Multiplies the odds of every finding (a referral centre sees more disease).
    age_mean, age_sd
        Patient age distribution in years.
    ethnicity_weights
        Share of each ``EthnicGroup`` value in the site's population.
    """

    name: str
    device_weights: dict[str, float]
    prevalence_multiplier: float
    age_mean: float
    age_sd: float
    ethnicity_weights: dict[str, float]


ETHNIC_GROUPS = ("White", "Black", "Asian", "Hispanic", "Other")

DEVICES: tuple[Device, ...] = (
    # Chest X-ray: a modern flat panel, a 14-bit panel stored as JPEG 2000, and an
    # older computed-radiography reader (MONOCHROME1, noisy, soft, low conspicuity).
    Device(
        "Aquila Medical",
        "Aquila DR-9",
        Modality.CXR,
        ExplicitVRLittleEndian,
        16,
        "MONOCHROME2",
        0.020,
        0.25,
        1.0,
        1.0,
        0.7,
        "DX",
    ),
    Device(
        "Borealis Imaging",
        "Borealis Flat 4",
        Modality.CXR,
        JPEG2000Lossless,
        14,
        "MONOCHROME2",
        0.030,
        0.35,
        1.15,
        0.9,
        0.7,
        "DX",
    ),
    Device(
        "Cygnus Systems",
        "Cygnus CR-200",
        Modality.CXR,
        RLELossless,
        12,
        "MONOCHROME1",
        0.050,
        0.7,
        0.85,
        0.6,
        0.7,
        "CR",
    ),
    # Fundus cameras: colour cast and sharpness differ; the handheld one is hard.
    Device(
        "Aquila Medical",
        "Aquila Retina 3",
        Modality.FUNDUS,
        JPEG2000Lossless,
        8,
        "RGB",
        0.015,
        0.02,
        1.0,
        1.0,
        0.024,
        "OP",
        {"red_gain": 1.0, "blue_gain": 1.0},
    ),
    Device(
        "Delphin Optics",
        "Delphin FC-50",
        Modality.FUNDUS,
        ExplicitVRLittleEndian,
        8,
        "RGB",
        0.020,
        0.03,
        1.1,
        0.9,
        0.024,
        "OP",
        {"red_gain": 1.08, "blue_gain": 0.85},
    ),
    Device(
        "Cygnus Systems",
        "Cygnus Handheld",
        Modality.FUNDUS,
        JPEGLSLossless,
        8,
        "RGB",
        0.045,
        0.06,
        0.9,
        0.6,
        0.024,
        "OP",
        {"red_gain": 0.92, "blue_gain": 1.15},
    ),
    # Mammography: two full-field digital systems and an older, softer one.
    Device(
        "Aquila Medical",
        "Aquila Mammo S",
        Modality.MAMMO,
        ExplicitVRLittleEndian,
        14,
        "MONOCHROME2",
        0.020,
        0.15,
        1.0,
        1.0,
        0.5,
        "MG",
    ),
    Device(
        "Borealis Imaging",
        "Borealis Tomo 2",
        Modality.MAMMO,
        JPEGLSLossless,
        12,
        "MONOCHROME2",
        0.025,
        0.2,
        1.1,
        0.9,
        0.5,
        "MG",
    ),
    Device(
        "Delphin Optics",
        "Delphin MG-1",
        Modality.MAMMO,
        JPEG2000Lossless,
        12,
        "MONOCHROME1",
        0.045,
        0.45,
        0.9,
        0.6,
        0.5,
        "MG",
    ),
    # CT: slice thickness and kernel differ; the low-dose protocol is noisy.
    Device(
        "Aquila Medical",
        "Aquila CT 128",
        Modality.CT,
        ExplicitVRLittleEndian,
        12,
        "MONOCHROME2",
        12.0,
        0.6,
        1.0,
        1.0,
        2.2,
        "CT",
        {"slice_thickness_mm": 2.5},
    ),
    Device(
        "Borealis Imaging",
        "Borealis Helix 64",
        Modality.CT,
        RLELossless,
        12,
        "MONOCHROME2",
        18.0,
        0.9,
        1.0,
        0.9,
        2.3,
        "CT",
        {"slice_thickness_mm": 3.0},
    ),
    Device(
        "Cygnus Systems",
        "Cygnus LD-16",
        Modality.CT,
        JPEGLSLossless,
        12,
        "MONOCHROME2",
        40.0,
        1.3,
        1.0,
        0.6,
        2.4,
        "CT",
        {"slice_thickness_mm": 3.0},
    ),
)

_ALL_MODELS = {d.model: 1.0 for d in DEVICES}

SITES: tuple[Site, ...] = (
    Site(
        "Northfield University Hospital",
        {
            "Aquila DR-9": 0.7,
            "Borealis Flat 4": 0.3,
            "Aquila Retina 3": 0.8,
            "Delphin FC-50": 0.2,
            "Aquila Mammo S": 0.7,
            "Borealis Tomo 2": 0.3,
            "Aquila CT 128": 0.8,
            "Borealis Helix 64": 0.2,
        },
        1.5,
        58.0,
        15.0,
        {"White": 0.55, "Black": 0.2, "Asian": 0.1, "Hispanic": 0.1, "Other": 0.05},
    ),
    Site(
        "Riverside Community Clinic",
        {
            "Borealis Flat 4": 0.5,
            "Cygnus CR-200": 0.5,
            "Delphin FC-50": 0.5,
            "Cygnus Handheld": 0.5,
            "Borealis Tomo 2": 0.6,
            "Delphin MG-1": 0.4,
            "Borealis Helix 64": 0.5,
            "Cygnus LD-16": 0.5,
        },
        0.8,
        52.0,
        16.0,
        {"White": 0.35, "Black": 0.15, "Asian": 0.05, "Hispanic": 0.4, "Other": 0.05},
    ),
    Site(
        "St Brendan's General",
        {
            "Aquila DR-9": 0.4,
            "Cygnus CR-200": 0.6,
            "Aquila Retina 3": 0.4,
            "Cygnus Handheld": 0.6,
            "Aquila Mammo S": 0.4,
            "Delphin MG-1": 0.6,
            "Aquila CT 128": 0.3,
            "Cygnus LD-16": 0.7,
        },
        1.0,
        63.0,
        13.0,
        {"White": 0.7, "Black": 0.1, "Asian": 0.1, "Hispanic": 0.05, "Other": 0.05},
    ),
    Site(
        "Harbourview Medical Centre",
        _ALL_MODELS,
        1.0,
        55.0,
        14.0,
        {"White": 0.3, "Black": 0.15, "Asian": 0.4, "Hispanic": 0.1, "Other": 0.05},
    ),
)


def devices_for(modality: Modality) -> tuple[Device, ...]:
    """Return the devices that acquire ``modality``."""
    return tuple(d for d in DEVICES if d.modality == modality)


def device_named(model: str) -> Device:
    """Return the device with ``ManufacturerModelName`` ``model``.

    Raises
    ------
    ValueError
        If no device has that model name (the message lists the known ones).
    """
    for device in DEVICES:
        if device.model == model:
            return device
    known = ", ".join(sorted(d.model for d in DEVICES))
    raise ValueError(f"unknown device model '{model}': known models are {known}")


def site_named(name: str) -> Site:
    """Return the site whose ``InstitutionName`` is ``name``.

    Raises
    ------
    ValueError
        If no site has that name (the message lists the known ones).
    """
    for site in SITES:
        if site.name == name:
            return site
    known = "; ".join(s.name for s in SITES)
    raise ValueError(f"unknown site '{name}': known sites are {known}")
