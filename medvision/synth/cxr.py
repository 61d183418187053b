"""Chest X-ray phantoms: PA/AP projection radiographs with four findings.

The image is built in *attenuation* units (0 = air, about 1 = dense bone): torso
and shoulders, lungs with hilar vessel markings, mediastinum and heart, spine,
posterior and anterior ribs, clavicles, diaphragm domes, and in women breast
shadows. Findings follow their radiographic signs:

- **nodule** — a round soft-tissue opacity of 10–30 mm projected over a lung;
- **pleural_effusion** — fluid layering at a lung base with a meniscus that blunts
  the costophrenic angle;
- **pneumothorax** — a lucent rim without lung markings between the chest wall and
  the retracted visceral pleural line, which is visible as a thin white line;
- **cardiomegaly** — cardiothoracic ratio above 0.5 on a PA film (Danzer 1919).

Nodule, effusion and pneumothorax contrast scale with ``spec.lesion_contrast``;
the device then blurs, adds quantum noise, applies its contrast curve and
quantises to its bit depth (MONOCHROME1 for computed radiography).
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import NDArray
from pydicom import Dataset
from pydicom.sequence import Sequence
from pydicom.sr.codedict import codes
from pydicom.uid import ComputedRadiographyImageStorage, DigitalXRayImageStorageForPresentation
from scipy import ndimage

from medvision.synth.dicom_objects import code_item, new_instance, set_pixels
from medvision.synth.study import GeneratedStudy, StudySpec
from medvision.synth.textures import (
    FloatArray,
    Stroke,
    bounding_box,
    gaussian_blur,
    grid,
    logistic,
    quantise,
    smooth_noise,
    soft_ellipse,
    stroke_coverage,
)

#: Image matrix (rows, columns).
SHAPE = (512, 512)
DEFAULT_PREVALENCE: dict[str, float] = {
    "nodule": 0.05,
    "pleural_effusion": 0.05,
    "pneumothorax": 0.03,
    "cardiomegaly": 0.06,
}
#: Cardiothoracic ratio above which the heart is enlarged (PA projection).
CARDIOMEGALY_CTR = 0.5


class _Thorax:
    """The patient's thoracic geometry, drawn once per study."""

    def __init__(self, rng: np.random.Generator, female: bool) -> None:
        self.female = female
        self.centre_col = 256.0 + rng.normal(0.0, 8.0)
        self.half_width = rng.uniform(140.0, 180.0)  # inner rib margin, pixels
        self.apex_row = rng.uniform(60.0, 95.0)
        self.base_row_right = rng.uniform(345.0, 415.0)  # right hemidiaphragm (image left)
        self.base_row_left = self.base_row_right + rng.uniform(5.0, 18.0)
        self.dome_height = rng.uniform(25.0, 40.0)
        self.rib_spacing = (self.base_row_right - self.apex_row) / 9.5
        self.soft_tissue = rng.uniform(0.42, 0.52)


def _lung_masks(th: _Thorax, coords: list[FloatArray]) -> tuple[FloatArray, FloatArray]:
    """Soft masks of the right (image left) and left (image right) lungs."""
    rows, cols = coords
    masks = []
    for side, base in ((-1.0, th.base_row_right), (1.0, th.base_row_left)):
        centre_c = th.centre_col + side * th.half_width * 0.54
        radius_c = th.half_width * 0.50
        height = base - th.apex_row
        # Apex is narrow, base broad: widen the ellipse with depth.
        t = np.clip((rows - th.apex_row) / height, 0.0, 1.0)
        width = radius_c * (0.3 + 0.7 * np.sqrt(1.0 - (1.0 - t) ** 2))
        lateral = np.abs(cols - centre_c) / np.maximum(width, 1.0)
        vertical = np.where(rows < th.apex_row, 2.0, 0.0)
        dome = base - th.dome_height * (1.0 - ((cols - centre_c) / (radius_c * 1.1)) ** 2)
        below = (rows - dome) / 3.0
        inside = logistic((1.0 - lateral) * 12.0) * logistic(-below)
        inside *= logistic(-(vertical + (th.apex_row - rows) / 4.0))
        masks.append(inside)
    return masks[0], masks[1]


def _rib_lines(th: _Thorax, rng: np.random.Generator) -> tuple[list[Stroke], list[Stroke]]:
    """Centre lines of posterior and anterior ribs (points as row, column), value 1."""
    posterior: list[Stroke] = []
    anterior: list[Stroke] = []
    for side in (-1.0, 1.0):
        for k in range(10):
            r0 = th.apex_row - 18.0 + k * th.rib_spacing + rng.normal(0.0, 1.5)
            width = 7.0 + 0.3 * k
            points = []
            for t in np.linspace(0.0, 1.0, 24):
                c = th.centre_col + side * (14.0 + (th.half_width + 4.0) * t)
                r = r0 - 14.0 * math.sin(math.pi * t * 0.7) + 55.0 * t**3
                points.append((r, c))
            posterior.append((points, width, 1.0))
            # Anterior ribs run from the lateral chest wall down towards the sternum.
            a0 = th.apex_row + 10.0 + k * th.rib_spacing * 0.9
            front = []
            for t in np.linspace(0.0, 1.0, 16):
                c = th.centre_col + side * (th.half_width + 5.0 - th.half_width * 0.75 * t)
                r = a0 + 45.0 * t + 10.0 * t**2
                front.append((r, c))
            if k < 7:
                anterior.append((front, width * 1.1, 1.0))
    return posterior, anterior


def _vessel_lines(th: _Thorax, rng: np.random.Generator) -> list[Stroke]:
    """Branching pulmonary vessel markings radiating from both hila, value 1."""
    lines: list[Stroke] = []
    for side in (-1.0, 1.0):
        hilum = (
            th.apex_row + 0.55 * (th.base_row_right - th.apex_row),
            th.centre_col + side * 55.0,
        )
        stack = [(hilum, side * math.pi / 2 + a, 5.0, 0) for a in (-1.0, -0.3, 0.4, 1.1)]
        while stack:
            (r, c), angle, width, depth = stack.pop()
            length = rng.uniform(25.0, 45.0) * (0.85**depth)
            points = [(r, c)]
            for _ in range(4):
                angle += rng.normal(0.0, 0.12)
                r += math.cos(angle) * length / 4 * -1.0
                c += math.sin(angle) * length / 4
                points.append((r, c))
            lines.append((points, width, 1.0))
            if depth < 5 and width > 1.2:
                for turn in (-0.45, 0.4):
                    stack.append(
                        ((r, c), angle + turn + rng.normal(0.0, 0.1), width * 0.72, depth + 1)
                    )
    return lines


def _draw_nodule(
    rng: np.random.Generator, lungs: FloatArray, coords: list[FloatArray], pixel_mm: float
) -> tuple[FloatArray, FloatArray, dict[str, object]]:
    """Draw a round opacity inside a lung; return (opacity, mask, annotation)."""
    candidates = np.argwhere(lungs > 0.95)
    diameter_mm = float(rng.uniform(10.0, 30.0))
    radius = diameter_mm / pixel_mm / 2
    r, c = candidates[int(rng.integers(len(candidates)))]
    shape = soft_ellipse(
        SHAPE,
        (float(r), float(c)),
        (radius, radius * rng.uniform(0.85, 1.15)),
        edge=1.2,
        coords=coords,
    )
    mask = (shape > 0.5).astype(np.float32)
    annotation = {"centre_rc": [int(r), int(c)], "diameter_mm": round(diameter_mm, 1)}
    return shape, mask, annotation


def _effusion(
    th: _Thorax, rng: np.random.Generator, lung: FloatArray, side: float, coords: list[FloatArray]
) -> FloatArray:
    """Fluid at the base of one lung, its meniscus rising towards the lateral wall."""
    rows, cols = coords
    base = th.base_row_right if side < 0 else th.base_row_left
    # Mostly small effusions: the fluid level sits at or a little above the dome, and the
    # meniscus fills the costophrenic angle.
    depth = rng.uniform(-15.0, 30.0)
    lateral = np.clip(side * (cols - th.centre_col) / th.half_width, 0.0, 1.2)
    meniscus = base - th.dome_height - depth + 30.0 * lateral**2 * -1.0
    fluid = logistic((rows - meniscus) / 4.0)
    return (fluid * (lung > 0.05)).astype(np.float32)


def _pneumothorax(
    th: _Thorax, rng: np.random.Generator, lung: FloatArray, side: float, coords: list[FloatArray]
) -> tuple[FloatArray, FloatArray]:
    """Pleural air along the apex and lateral wall; returns (air region, pleural line)."""
    rows, cols = coords
    depth = rng.uniform(20.0, 50.0)
    extent = th.apex_row + rng.uniform(0.35, 0.7) * (th.base_row_right - th.apex_row)
    # Distance from the lung's outer boundary approximated by eroding the lung mask.
    inside = lung > 0.5
    distance = ndimage.distance_transform_edt(inside).astype(np.float32)
    medial_limit = th.centre_col + side * 40.0
    lateral_side = (cols - medial_limit) * side > 0
    region = inside & (distance < depth) & (rows < extent) & lateral_side
    air = gaussian_blur(region.astype(np.float32), 1.0)
    edge = region & (distance > depth - 1.6)
    line = gaussian_blur(edge.astype(np.float32), 0.6)
    return air, line


def _render(spec: StudySpec) -> tuple[FloatArray, dict[str, FloatArray], dict[str, object], str]:
    """Render the radiograph in attenuation units with ground truth."""
    anatomy = spec.rng("anatomy")
    findings_rng = spec.rng("findings")
    coords = grid(SHAPE)
    rows = coords[0]
    th = _Thorax(anatomy, spec.patient.sex == "F")
    view = "AP" if anatomy.random() < (0.6 if spec.device.dicom_modality == "CR" else 0.1) else "PA"

    labels = {
        name: int(findings_rng.random() < spec.prevalence.get(name, 0.0))
        for name in DEFAULT_PREVALENCE
    }
    # Torso, neck and shoulders.
    torso = soft_ellipse(
        SHAPE, (330.0, th.centre_col), (330.0, th.half_width + 55.0), edge=6.0, coords=coords
    )
    shoulders = soft_ellipse(
        SHAPE, (95.0, th.centre_col), (70.0, th.half_width + 75.0), edge=8.0, coords=coords
    )
    neck = soft_ellipse(SHAPE, (10.0, th.centre_col), (90.0, 48.0), edge=6.0, coords=coords)
    body = np.maximum(np.maximum(torso, shoulders), neck)
    image = body * th.soft_tissue
    image += body * 0.05 * smooth_noise(anatomy, SHAPE, 25.0)
    if th.female:
        for side in (-1.0, 1.0):
            breast = soft_ellipse(
                SHAPE, (420.0, th.centre_col + side * 110.0), (70.0, 85.0), edge=14.0, coords=coords
            )
            image += 0.08 * breast * (rows > 350)

    lung_r, lung_l = _lung_masks(th, coords)
    heart_ratio = (
        findings_rng.uniform(0.505, 0.60)
        if labels["cardiomegaly"]
        else findings_rng.uniform(0.40, 0.495)
    )
    thoracic_width = 2 * th.half_width
    magnification = 1.08 if view == "AP" else 1.0
    heart_half = heart_ratio * thoracic_width / 2 * magnification
    heart_centre = (th.base_row_right - 55.0, th.centre_col + 0.18 * heart_half)
    heart = soft_ellipse(
        SHAPE, heart_centre, (78.0 * magnification, heart_half), edge=5.0, coords=coords
    )
    heart *= rows < th.base_row_left + 10.0
    mediastinum = soft_ellipse(
        SHAPE, (170.0, th.centre_col), (150.0, 34.0), edge=4.0, coords=coords
    )
    aortic_knob = soft_ellipse(
        SHAPE, (150.0, th.centre_col + 32.0), (18.0, 16.0), edge=3.0, coords=coords
    )
    central = np.maximum(np.maximum(heart, mediastinum), aortic_knob)
    lungs = np.clip(lung_r + lung_l - central, 0.0, 1.0)

    vessels = stroke_coverage(SHAPE, _vessel_lines(th, anatomy))
    vessels = gaussian_blur(vessels, 1.0) * lungs
    lung_texture = 0.02 * smooth_noise(anatomy, SHAPE, 3.0)
    image -= 0.30 * lungs
    image += lungs * (0.09 * vessels + lung_texture)
    image += 0.12 * central

    spine_mask = soft_ellipse(SHAPE, (300.0, th.centre_col), (400.0, 17.0), edge=4.0, coords=coords)
    endplates = 0.5 + 0.5 * np.cos(2 * math.pi * (rows - th.apex_row) / (th.rib_spacing * 1.05))
    image += spine_mask * (0.05 + 0.025 * endplates)

    posterior, anterior = _rib_lines(th, anatomy)
    outer = stroke_coverage(SHAPE, posterior)
    inner = stroke_coverage(
        SHAPE, [(p, np.maximum(1.0, np.subtract(w, 5.0)), v) for p, w, v in posterior]
    )
    ribs = 0.055 * outer + 0.035 * (outer - inner) + 0.025 * stroke_coverage(SHAPE, anterior)
    image += gaussian_blur(ribs, 0.8) * torso
    clavicles: list[Stroke] = []
    for side in (-1.0, 1.0):
        points = [
            (
                th.apex_row + 15.0 - 25.0 * t - 8.0 * math.sin(math.pi * t),
                th.centre_col + side * (28.0 + 150.0 * t),
            )
            for t in np.linspace(0.0, 1.0, 16)
        ]
        clavicles.append((points, 16.0, 1.0))
    image += 0.09 * gaussian_blur(stroke_coverage(SHAPE, clavicles), 1.0)

    masks: dict[str, FloatArray] = {}
    annotation: dict[str, object] = {"view": view, "cardiothoracic_ratio": round(heart_ratio, 3)}
    contrast = spec.lesion_contrast
    lesions: list[dict[str, object]] = []
    if labels["nodule"]:
        opacity, mask, info = _draw_nodule(
            findings_rng, lungs, coords, spec.device.pixel_spacing_mm
        )
        image += 0.16 * contrast * opacity * lungs
        masks["nodule"] = mask
        lesions.append({"finding": "nodule", **info})
    lung_sides = [(-1.0, lung_r), (1.0, lung_l)]
    if labels["pleural_effusion"]:
        chosen = (
            lung_sides
            if findings_rng.random() < 0.3
            else [lung_sides[int(findings_rng.integers(2))]]
        )
        fluid = np.zeros(SHAPE, dtype=np.float32)
        for side, lung in chosen:
            fluid = np.maximum(fluid, _effusion(th, findings_rng, lung, side, coords))
        image += 0.22 * min(1.0, 0.5 + 0.5 * contrast) * fluid * lungs
        masks["pleural_effusion"] = (fluid > 0.5).astype(np.float32)
        lesions.append(
            {"finding": "pleural_effusion", "sides": ["R" if s < 0 else "L" for s, _ in chosen]}
        )
    if labels["pneumothorax"]:
        side, lung = lung_sides[int(findings_rng.integers(2))]
        air, line = _pneumothorax(th, findings_rng, lung, side, coords)
        image -= air * lungs * (0.09 * vessels + lung_texture + 0.08 * contrast)
        image += 0.14 * contrast * line
        masks["pneumothorax"] = (air > 0.5).astype(np.float32)
        lesions.append({"finding": "pneumothorax", "side": "R" if side < 0 else "L"})
    if labels["cardiomegaly"]:
        masks["cardiomegaly"] = (heart > 0.5).astype(np.float32)
    annotation["lesions"] = lesions
    return np.clip(image, 0.0, None).astype(np.float32), masks, annotation, view


def _acquire(spec: StudySpec, attenuation: FloatArray) -> FloatArray:
    """Apply the device: resolution, quantum noise and contrast curve; returns ``[0, 1]``."""
    rng = spec.rng("acquisition")
    device = spec.device
    image = gaussian_blur(attenuation, device.blur_mm / device.pixel_spacing_mm)
    # Quantum noise is larger where fewer photons reach the detector (dense regions).
    noise = rng.standard_normal(image.shape).astype(np.float32)
    noise = gaussian_blur(noise, 0.7) * 1.6
    image = image + device.noise * (0.6 + image) * noise
    image = np.clip(image / 0.95, 0.0, 1.0)
    return np.power(image, device.gamma).astype(np.float32)


def _dataset(spec: StudySpec, pixels: NDArray[np.uint16], view: str) -> Dataset:
    """Build the DX (For Presentation) or CR object (PS3.3 A.26, A.2)."""
    device = spec.device
    computed = device.dicom_modality == "CR"
    series_uid = spec.uid("series", 1)
    ds = new_instance(
        spec,
        sop_class_uid=ComputedRadiographyImageStorage
        if computed
        else DigitalXRayImageStorageForPresentation,
        series_instance_uid=series_uid,
        series_number=1,
        series_description=f"Chest {view}",
        instance_number=1,
    )
    ds.BodyPartExamined = "CHEST"
    ds.ViewPosition = view
    ds.PatientOrientation = ["L", "F"]
    ds.PatientPosition = ""
    ds.AnatomicRegionSequence = Sequence([code_item(codes.SCT.Chest)])
    spacing = [f"{device.pixel_spacing_mm:.3f}", f"{device.pixel_spacing_mm:.3f}"]
    ds.ImagerPixelSpacing = spacing
    ds.KVP = "120" if view == "PA" else "90"
    ds.DistanceSourceToDetector = "1800" if view == "PA" else "1000"
    ds.ExposureTime = 10
    ds.XRayTubeCurrent = 200
    monochrome1 = device.photometric == "MONOCHROME1"
    bits = device.bits_stored
    centre, width = (2 ** (bits - 1), 2**bits)
    ds.WindowCenter = str(centre)
    ds.WindowWidth = str(width)
    ds.VOILUTFunction = "LINEAR"
    ds.RescaleIntercept = "0"
    ds.RescaleSlope = "1"
    ds.RescaleType = "US"
    if computed:
        ds.ImageType = ["ORIGINAL", "PRIMARY"]
        ds.PlateType = "STANDARD"
    else:
        ds.ImageType = ["ORIGINAL", "PRIMARY", ""]
        ds.PresentationIntentType = "FOR PRESENTATION"
        ds.ImageLaterality = "U"
        ds.PixelIntensityRelationship = "LOG"
        ds.PixelIntensityRelationshipSign = 1 if monochrome1 else -1
        ds.PresentationLUTShape = "INVERSE" if monochrome1 else "IDENTITY"
        ds.DetectorType = "SCINTILLATOR"
        ds.DetectorConfiguration = "AREA"
        ds.PixelSpacing = spacing
        ds.PixelSpacingCalibrationType = "GEOMETRY"
        ds.PixelSpacingCalibrationDescription = "Imager pixel spacing"
        ds.PositionerType = "NONE"
        ds.AcquisitionContextSequence = Sequence()
        view_code = codes.SCT.PosteroAnterior if view == "PA" else codes.SCT.AnteroPosterior
        ds.ViewCodeSequence = Sequence([code_item(view_code)])
    ds.LossyImageCompression = "00"
    set_pixels(ds, pixels, device.photometric, bits)
    return ds


def generate_study(spec: StudySpec) -> GeneratedStudy:
    """Make one chest radiograph study (one image) with its ground truth.

    Parameters
    ----------
    spec
        The study to make.

    Returns
    -------
    GeneratedStudy
        One DX or CR image, labels for the four findings, per-finding masks.
    """
    attenuation, masks, annotation, view = _render(spec)
    image01 = _acquire(spec, attenuation)
    monochrome1 = spec.device.photometric == "MONOCHROME1"
    pixels = quantise(image01, spec.device.bits_stored, invert=monochrome1)
    ds = _dataset(spec, pixels.astype(np.uint16), view)
    sop = str(ds.SOPInstanceUID)
    labels = {name: int(name in masks) for name in DEFAULT_PREVALENCE}
    mask_arrays = {
        f"{sop}/{name}": (masks[name] > 0.5).astype(np.uint8)
        if name in masks
        else np.zeros(SHAPE, dtype=np.uint8)
        for name in DEFAULT_PREVALENCE
    }
    for lesion in annotation["lesions"]:  # type: ignore[attr-defined]
        box = bounding_box(mask_arrays[f"{sop}/{lesion['finding']}"])
        lesion["box"] = box
        lesion["sop_instance_uid"] = sop
    annotation["images"] = [{"sop_instance_uid": sop, "view": view}]
    return GeneratedStudy(instances=[ds], labels=labels, masks=mask_arrays, annotations=annotation)
