"""Screening mammography phantom: a four-view study (RCC, LCC, RMLO, LMLO).

Each breast is a compressed half-ellipse against the chest wall with a rounded,
thinner periphery, a skin line and a nipple; fibroglandular tissue is power-law
textured (beta about 3; Burgess et al. 2001) and its extent follows the BI-RADS
breast composition category (ACR BI-RADS Atlas, 5th edition, 2013). MLO views
show the pectoral muscle. Malignant lesions are spiculated or irregular masses
or clusters of fine pleomorphic calcifications; benign distractors are
circumscribed round or oval masses and coarse calcifications. Images are
Digital Mammography X-Ray Image Storage - For Presentation objects (PS3.3
A.26).

All geometry is drawn in a *canonical* frame with the chest wall on the left
edge and the nipple pointing right (how a left breast is displayed); right
breasts are mirrored at the end.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray
from pydicom import Dataset, Sequence
from pydicom.sr.coding import Code
from pydicom.uid import DigitalMammographyXRayImageStorageForPresentation
from scipy import ndimage

from medvision.modality import MAMMOGRAPHY_VIEWS
from medvision.synth.dicom_objects import code_item, new_instance, set_pixels
from medvision.synth.study import GeneratedStudy, StudySpec
from medvision.synth.textures import (
    FloatArray,
    bounding_box,
    centred_origin,
    gaussian_blur,
    grid,
    logistic,
    mirror_box,
    paste,
    patch_offsets,
    power_law_noise,
    quantise,
    smooth_noise,
    smoothstep,
    soft_ellipse,
)

DEFAULT_PREVALENCE: dict[str, float] = {"malignancy": 0.04}

ROWS, COLUMNS = 512, 384

#: Views in acquisition (and instance number) order: (ImageLaterality, ViewPosition).
VIEWS: tuple[tuple[str, str], ...] = MAMMOGRAPHY_VIEWS

#: BI-RADS breast composition categories (5th edition) and their share of screened women.
DENSITY_SHARES: dict[str, float] = {"A": 0.10, "B": 0.40, "C": 0.40, "D": 0.10}

#: Per category, the range of the fraction of breast area covered by fibroglandular tissue.
DENSE_FRACTION: dict[str, tuple[float, float]] = {
    "A": (0.04, 0.12),
    "B": (0.12, 0.28),
    "C": (0.38, 0.58),
    "D": (0.62, 0.80),
}

#: Patient Orientation (0020,0020) per view, row then column direction (PS3.3 C.8.11.7):
#: left breasts are displayed chest wall left, right breasts chest wall right.
PATIENT_ORIENTATION: dict[tuple[str, str], tuple[str, str]] = {
    ("L", "CC"): ("A", "R"),
    ("R", "CC"): ("P", "L"),
    ("L", "MLO"): ("A", "FR"),
    ("R", "MLO"): ("P", "FL"),
}

#: View Code Sequence codes (CID 4014, SNOMED CT).
VIEW_CODES: dict[str, Code] = {
    "CC": Code("399162004", "SCT", "cranio-caudal"),
    "MLO": Code("399368009", "SCT", "medio-lateral oblique"),
}

#: Anatomic Region Sequence code of the breast (CID 4013, SNOMED CT).
BREAST_CODE = Code("76752008", "SCT", "Breast")

#: Probability, per breast, of a benign circumscribed mass and of coarse calcifications.
BENIGN_MASS_PROBABILITY = 0.08
COARSE_CALCIFICATION_PROBABILITY = 0.07

#: Among positive studies, the share with cancer in both breasts.
BILATERAL_SHARE = 0.04

#: Among malignant lesions, the share presenting as calcifications only.
CALCIFICATION_SHARE = 0.35

# Grey levels of the phantom before the device curve (0 air, 1 brightest).
_BACKGROUND = 0.02
_FAT = 0.36
_FAT_EDGE = 0.22
_GLAND = 0.40
_PECTORAL = 0.68
_SKIN = 0.10
_MASS_CONTRAST = 0.25
_CALCIFICATION_CONTRAST = 0.7
_MASKING = 0.6
_KNEE = 0.7


@dataclass(frozen=True)
class ViewGeometry:
    """Where a breast lies in one view, in the canonical (chest wall left) frame.

    Parameters
    ----------
    laterality, view
        ``ImageLaterality`` (``"L"``/``"R"``) and ``ViewPosition`` (``"CC"``/``"MLO"``).
    axis_row
        Row of the nipple axis (the nipple is at ``(axis_row, depth_px)``).
    depth_px
        Chest-wall-to-nipple distance in pixels.
    half_height_upper, half_height_lower
        Extent of the breast along the chest wall above and below the axis, in pixels.
    pectoral_rows, pectoral_columns
        Extent of the pectoral muscle along the chest wall and the top edge (0 on CC).
    upper_exponent
        Exponent of the outline above the axis (2 is elliptical; smaller values
        give the straighter upper contour of an MLO view running into the axilla).
    thickness_mm
        Compressed breast thickness (``BodyPartThickness``).
    compression_force_n
        ``CompressionForce`` in newtons.
    """

    laterality: str
    view: str
    axis_row: float
    depth_px: float
    half_height_upper: float
    half_height_lower: float
    pectoral_rows: float
    pectoral_columns: float
    upper_exponent: float
    thickness_mm: float
    compression_force_n: float

    def position(self, nipple_distance_px: float, offset: float) -> tuple[float, float]:
        """Return ``(row, column)`` of a point behind the nipple.

        Parameters
        ----------
        nipple_distance_px
            Distance from the nipple along the nipple axis, towards the chest wall.
        offset
            Position across the breast at that depth, from -1 (upper edge) to 1 (lower edge).
        """
        column = self.depth_px - nipple_distance_px
        half = self.half_height_upper if offset < 0 else self.half_height_lower
        exponent = self.upper_exponent if offset < 0 else 2.0
        width = max(0.0, 1.0 - (column / self.depth_px) ** exponent) ** (1.0 / exponent)
        return self.axis_row + offset * half * width, column

    def pectoral_edge(self, rows: FloatArray) -> FloatArray:
        """Column of the anterior pectoral border at each of ``rows`` (slightly convex)."""
        if self.pectoral_rows <= 0:
            return np.zeros_like(rows)
        fraction = np.clip(1.0 - rows / self.pectoral_rows, 0.0, 1.0)
        return (self.pectoral_columns * fraction**0.8).astype(np.float32)

    def fits(self, row: float, column: float, margin_px: float) -> bool:
        """Whether ``(row, column)`` is ``margin_px`` clear of the image edges and the pectoral."""
        border = float(self.pectoral_edge(np.array([row], dtype=np.float32))[0])
        inside = margin_px <= row <= ROWS - 1 - margin_px and margin_px <= column
        return inside and column >= border + margin_px


@dataclass(frozen=True)
class Lesion:
    """A lesion in breast coordinates, shared by the breast's CC and MLO views.

    Parameters
    ----------
    laterality
        Which breast.
    kind
        ``"mass"``, ``"calcification_cluster"`` or ``"calcification"`` (one coarse one).
    morphology
        BI-RADS descriptor: ``spiculated``, ``irregular``, ``round``, ``oval``,
        ``fine_pleomorphic`` or ``coarse``.
    malignant
        Whether the lesion is a cancer.
    size_mm
        Largest diameter (of the cluster for calcifications).
    nipple_distance_mm
        Distance from the nipple, the same on both views.
    offsets
        Per view, the position across the breast (see :meth:`ViewGeometry.position`).
    """

    laterality: str
    kind: str
    morphology: str
    malignant: bool
    size_mm: float
    nipple_distance_mm: float
    offsets: dict[str, float]


def mass_patch(
    rng: np.random.Generator,
    radius_px: float,
    centre: tuple[float, float],
    *,
    lobulation: float,
    edge_px: float,
    spicules: int = 0,
    aspect: float = 1.0,
) -> tuple[FloatArray, FloatArray]:
    """Draw a mass: an irregular (optionally spiculated) dense core.

    Parameters
    ----------
    rng
        Random generator for the shape.
    radius_px
        Mean radius of the core in pixels.
    centre
        Sub-pixel centre (only its fractional part matters).
    lobulation
        Relative amplitude of the boundary's angular harmonics (0 is a circle).
    edge_px
        Width of the core's edge (small: circumscribed; large: indistinct).
    spicules
        Number of radiating spicules (0 for non-spiculated masses).
    aspect
        Minor over major axis (1 is round; oval masses are about 0.7), at a random
        orientation.

    Returns
    -------
    profile, outline
        Square patches centred on the rounded ``centre``: the lesion's density in
        ``[0, 1]`` and its outline (1 inside the core and along the spicules).
    """
    reach = 3.1 if spicules else 1.0 + 2.0 * lobulation
    half = math.ceil(radius_px * reach) + 4
    dy, dx = patch_offsets(centre, half)
    orientation = rng.uniform(0, np.pi)
    u = dx * math.cos(orientation) + dy * math.sin(orientation)
    v = (-dx * math.sin(orientation) + dy * math.cos(orientation)) / aspect
    rho = np.hypot(u, v)
    theta = np.arctan2(v, u)
    boundary = np.full_like(rho, radius_px)
    for harmonic in range(2, 11):
        amplitude = lobulation * rng.uniform(0.2, 1.0) / (harmonic - 1) ** 0.4
        boundary += radius_px * amplitude * np.cos(harmonic * theta + rng.uniform(0, 2 * np.pi))
    core = logistic((boundary - rho) / max(edge_px, 0.3) * 2.0)
    dome = np.sqrt(np.clip(1.0 - (rho / np.maximum(boundary, 1.0)) ** 2, 0.0, 1.0))
    profile = core * (0.8 + 0.2 * dome)
    for _ in range(spicules):
        angle = rng.uniform(0, 2 * np.pi)
        length = radius_px * rng.uniform(1.6, 3.0)
        width = rng.uniform(0.6, 1.2)
        bend = rng.uniform(-0.2, 0.2)
        along = dx * math.cos(angle) + dy * math.sin(angle)
        across = -dx * math.sin(angle) + dy * math.cos(angle) - bend * along**2 / length
        taper = np.clip(1.0 - along / length, 0.0, 1.0) * (along > 0)
        line = np.exp(-((across / (width * (0.3 + 1.2 * taper) + 1e-3)) ** 2)) * taper**0.4
        profile = np.maximum(profile, rng.uniform(0.5, 0.85) * line)
    outline = np.maximum(core, (profile > 0.4).astype(np.float32))
    return profile.astype(np.float32), outline


def calcification_cluster_patch(
    rng: np.random.Generator, count: int, radius_px: float, centre: tuple[float, float]
) -> tuple[FloatArray, FloatArray]:
    """Draw a cluster of fine pleomorphic calcifications (1-2 pixel specks of varied shape).

    Returns
    -------
    specks, region
        Square patches: speck brightness in ``[0, 1]`` and the cluster's region
        (a disc 2 pixels wider than the cluster) as an annotator would outline it.
    """
    half = math.ceil(radius_px) + 4
    specks = np.zeros((2 * half + 1, 2 * half + 1), dtype=np.float32)
    shapes = (
        np.ones((1, 1)),
        np.ones((1, 2)),
        np.ones((2, 1)),
        np.array([[1.0, 0.5], [0.5, 1.0]]),
        np.array([[1.0, 0.0], [1.0, 1.0]]),
        np.ones((1, 3)),
        np.array([[0.6, 1.0], [1.0, 0.6]]),
    )
    # A slightly elongated cluster, as along a duct.
    elongation = rng.uniform(0.5, 1.0)
    angle = rng.uniform(0, np.pi)
    for _ in range(count):
        r = radius_px * math.sqrt(rng.uniform(0, 1))
        phi = rng.uniform(0, 2 * np.pi)
        u, v = r * math.cos(phi), r * math.sin(phi) * elongation
        row = half + round(u * math.sin(angle) + v * math.cos(angle))
        col = half + round(u * math.cos(angle) - v * math.sin(angle))
        shape = shapes[int(rng.integers(len(shapes)))]
        if rng.random() < 0.5:
            shape = shape.T
        paste(specks, shape * rng.uniform(0.6, 1.0), (row, col), "max")
    dy, dx = patch_offsets(centre, half)
    region_mask = (np.hypot(dy, dx) <= radius_px + 2.0).astype(np.float32)
    return specks, region_mask


def _draw_density(rng: np.random.Generator) -> str:
    names = sorted(DENSITY_SHARES)
    p = np.array([DENSITY_SHARES[n] for n in names])
    return names[int(rng.choice(len(names), p=p / p.sum()))]


def _breast_views(rng: np.random.Generator, laterality: str, size: float) -> list[ViewGeometry]:
    """Draw the CC and MLO geometry of one breast of a patient of breast ``size`` (px)."""
    depth_cc = float(np.clip(size * rng.uniform(0.95, 1.05), 140.0, 330.0))
    thickness = float(np.clip(25.0 + 0.13 * depth_cc + rng.normal(0.0, 6.0), 25.0, 90.0))
    half_cc = float(np.clip(depth_cc * rng.uniform(0.6, 0.8) + 40.0, 140.0, 215.0))
    cc = ViewGeometry(
        laterality=laterality,
        view="CC",
        axis_row=ROWS / 2 + rng.uniform(-15.0, 15.0),
        depth_px=depth_cc,
        half_height_upper=half_cc * rng.uniform(0.95, 1.05),
        half_height_lower=half_cc * rng.uniform(0.9, 1.0),
        pectoral_rows=0.0,
        pectoral_columns=0.0,
        upper_exponent=2.0,
        thickness_mm=round(thickness, 1),
        compression_force_n=round(float(rng.uniform(60.0, 140.0)), 1),
    )
    depth_mlo = float(min(depth_cc + rng.uniform(10.0, 30.0), COLUMNS - 18.0))
    axis_mlo = ROWS * rng.uniform(0.52, 0.60)
    # The pectoral muscle is widest at the top edge, where the skin line of the
    # axilla runs not far in front of it.
    pectoral_columns = depth_mlo * rng.uniform(0.4, 0.55)
    exponent = float(rng.uniform(1.3, 1.6))
    top_width = min(pectoral_columns * rng.uniform(1.3, 1.7), 0.85 * depth_mlo) / depth_mlo
    half_upper = axis_mlo / (1.0 - top_width**exponent) ** (1.0 / exponent)
    mlo = ViewGeometry(
        laterality=laterality,
        view="MLO",
        axis_row=axis_mlo,
        depth_px=depth_mlo,
        half_height_upper=half_upper,
        half_height_lower=min((ROWS - axis_mlo) * rng.uniform(0.65, 0.85), 0.9 * half_cc),
        pectoral_rows=axis_mlo * rng.uniform(0.85, 1.15),
        pectoral_columns=pectoral_columns,
        upper_exponent=exponent,
        thickness_mm=round(thickness + float(rng.uniform(2.0, 8.0)), 1),
        compression_force_n=round(float(rng.uniform(70.0, 160.0)), 1),
    )
    return [cc, mlo]


def _draw_lesions(
    spec: StudySpec, breasts: dict[str, dict[str, ViewGeometry]]
) -> tuple[list[Lesion], dict[str, int]]:
    """Draw malignant and benign lesions of both breasts and the labels they imply."""
    rng = spec.rng("lesions")
    spacing = spec.device.pixel_spacing_mm
    malignant_sides: list[str] = []
    if rng.random() < spec.prevalence.get("malignancy", 0.0):
        if rng.random() < BILATERAL_SHARE:
            malignant_sides = ["L", "R"]
        else:
            malignant_sides = ["L" if rng.random() < 0.5 else "R"]
    lesions: list[Lesion] = []
    for laterality in ("R", "L"):
        views = breasts[laterality]
        if laterality in malignant_sides:
            if rng.random() < CALCIFICATION_SHARE:
                kind, morphology = "calcification_cluster", "fine_pleomorphic"
                size = float(rng.uniform(5.0, 12.0))
            else:
                kind = "mass"
                morphology = "spiculated" if rng.random() < 0.6 else "irregular"
                size = float(rng.uniform(5.0, 20.0))
            lesions.append(_place(rng, laterality, kind, morphology, True, size, views, spacing))
        if rng.random() < BENIGN_MASS_PROBABILITY:
            morphology = "round" if rng.random() < 0.5 else "oval"
            size = float(rng.uniform(5.0, 15.0))
            lesions.append(_place(rng, laterality, "mass", morphology, False, size, views, spacing))
        if rng.random() < COARSE_CALCIFICATION_PROBABILITY:
            for _ in range(int(rng.integers(1, 5))):
                size = float(rng.uniform(1.5, 4.0))
                lesions.append(
                    _place(rng, laterality, "calcification", "coarse", False, size, views, spacing)
                )
    left = int("L" in malignant_sides)
    right = int("R" in malignant_sides)
    labels = {"malignancy": max(left, right), "malignancy_left": left, "malignancy_right": right}
    return lesions, labels


def _place(
    rng: np.random.Generator,
    laterality: str,
    kind: str,
    morphology: str,
    malignant: bool,
    size_mm: float,
    views: dict[str, ViewGeometry],
    spacing_mm: float,
) -> Lesion:
    """Place a lesion at one nipple distance, inside the breast and off the pectoral."""
    radius_px = size_mm / spacing_mm / 2
    margin = radius_px + 6.0
    depth = min(g.depth_px for g in views.values())
    nipple_distance = max(float(rng.uniform(0.2, 0.8)) * depth, radius_px + 12.0)
    offsets: dict[str, float] = {}
    for name, geometry in views.items():
        candidates = [float(np.clip(rng.normal(0.0, 0.35), -0.7, 0.7)) for _ in range(50)]
        # Should every draw fail (a small breast), sweep the lower half, always clear.
        candidates += [float(v) for v in np.linspace(0.0, 0.7, 15)]
        offsets[name] = next(
            (
                v
                for v in candidates
                if geometry.fits(*geometry.position(nipple_distance, v), margin)
            ),
            0.0,
        )
    return Lesion(
        laterality=laterality,
        kind=kind,
        morphology=morphology,
        malignant=malignant,
        size_mm=round(size_mm, 1),
        nipple_distance_mm=round(nipple_distance * spacing_mm, 1),
        offsets=offsets,
    )


def _anatomy(
    rng: np.random.Generator, geometry: ViewGeometry, dense_fraction: float
) -> tuple[FloatArray, FloatArray, FloatArray]:
    """Render one view's normal breast (canonical frame).

    Returns
    -------
    image, breast, gland
        Grey levels in ``[0, 1]``, the breast's (hard) outline and the
        fibroglandular fraction (used for masking lesions).
    """
    shape = (ROWS, COLUMNS)
    rows, cols = grid(shape)
    up = rows < geometry.axis_row
    half = np.where(up, geometry.half_height_upper, geometry.half_height_lower)
    x_n = cols / geometry.depth_px
    y_n = (rows - geometry.axis_row) / half
    exponent = np.where(up, geometry.upper_exponent, 2.0)
    # The outline wobbles a little (compression is not a perfect ellipse).
    bearing = np.arctan2(rows - geometry.axis_row, cols + 1.0) / np.pi + 0.5
    wobble = 0.015 * smooth_noise(rng, (256,), 10.0)[(bearing * 255).astype(np.intp)]
    outline = np.abs(x_n) ** exponent + np.abs(y_n) ** exponent
    breast = (outline < (1.0 + wobble) ** 2).astype(np.float32)
    nipple = soft_ellipse(
        shape, (geometry.axis_row, geometry.depth_px - 3.0), (8.0, 7.0), 1.0, [rows, cols]
    )
    breast = np.maximum(breast, (nipple > 0.5).astype(np.float32))
    # Distance from the skin: the compressed breast is a slab with a rounded edge.
    skin_distance = ndimage.distance_transform_edt(breast).astype(np.float32)
    rounding = max(geometry.thickness_mm, 20.0)  # edge radius, px (half-thickness in 0.5 mm)
    edge = np.clip(skin_distance / rounding, 0.0, 1.0)
    thickness = np.sqrt(1.0 - (1.0 - edge) ** 2)

    pectoral = np.zeros(shape, dtype=np.float32)
    if geometry.pectoral_rows > 0:
        border = geometry.pectoral_edge(rows)
        pectoral = logistic((border - cols) / 1.2) * (rows < geometry.pectoral_rows + 4)
        pectoral *= breast

    # Fibroglandular tissue: power-law clouds plus ducts radiating from the nipple,
    # concentrated centrally and behind the nipple, spared near skin and chest wall.
    texture = power_law_noise(rng, shape, 3.0)
    distance_nipple = np.hypot(rows - geometry.axis_row, cols - geometry.depth_px)
    angle = np.arctan2(rows - geometry.axis_row, geometry.depth_px - cols)
    radial_source = power_law_noise(rng, (64, 512), 2.6)
    radial = ndimage.map_coordinates(
        radial_source,
        [distance_nipple / 12.0, (angle / np.pi + 1.0) * 256.0],
        order=1,
        mode="grid-wrap",
    ).astype(np.float32)
    fine = power_law_noise(rng, shape, 2.0)
    envelope = np.exp(-(((x_n - 0.55) / 0.42) ** 2) - (y_n / 0.62) ** 2)
    ducts = smoothstep(distance_nipple, 15.0, 90.0)
    potential = 0.75 * texture + 0.4 * ducts * radial + 2.4 * envelope
    potential -= 3.0 * (1.0 - smoothstep(skin_distance, 6.0, 36.0))
    chest_wall = cols + 12.0 * smooth_noise(rng, (ROWS,), 20.0)[:, None]
    potential -= 2.0 * (1.0 - smoothstep(chest_wall, 4.0, 32.0)) + 6.0 * pectoral
    inside = (breast > 0) & (pectoral < 0.5)
    threshold = float(np.quantile(potential[inside], 1.0 - dense_fraction))
    gland = logistic((potential - threshold) / 0.3)
    gland *= 0.65 + 0.35 * np.tanh(0.8 * (potential - threshold))
    gland *= breast * (1.0 - pectoral)

    # Fat is not uniform: faint lobules and Cooper's ligaments (thin curvilinear strands).
    ligament_field = smooth_noise(rng, shape, 9.0)
    ligaments = np.exp(-((ligament_field / 0.06) ** 2)) * smoothstep(skin_distance, 3.0, 15.0)
    ligaments *= 1.0 - gland

    fat_level = _FAT_EDGE + (_FAT - _FAT_EDGE) * thickness
    tissue = fat_level + 0.03 * fine + 0.035 * ligaments
    tissue += _GLAND * thickness * gland * (1.0 + 0.12 * texture + 0.18 * fine)
    tissue += 0.15 * nipple
    skin = _SKIN * np.exp(-(((skin_distance - 1.8) / 1.1) ** 2)) * breast
    image = _BACKGROUND + breast * tissue * (1.0 - pectoral) + skin
    if geometry.pectoral_rows > 0:
        # Muscle: thicker (brighter) towards the axilla, with faint fibres running
        # along its border.
        across = rows * geometry.pectoral_columns + cols * geometry.pectoral_rows
        across /= math.hypot(geometry.pectoral_rows, geometry.pectoral_columns)
        fibres = smooth_noise(rng, (ROWS + COLUMNS,), 2.5)[across.astype(np.intp)]
        muscle = _PECTORAL * (0.9 + 0.1 * edge) * (1.0 - 0.15 * rows / ROWS) + 0.012 * fibres
        image += breast * muscle * pectoral
    return image.astype(np.float32), breast, gland


def _lesion_patches(
    rng: np.random.Generator, lesion: Lesion, radius: float, centre: tuple[float, float]
) -> tuple[FloatArray, FloatArray]:
    """Draw one lesion's density (unit contrast) and outline as square patches."""
    if lesion.morphology == "spiculated":
        spicules = int(rng.integers(10, 22))
        return mass_patch(rng, radius, centre, lobulation=0.12, spicules=spicules, edge_px=1.5)
    if lesion.morphology == "irregular":
        aspect = float(rng.uniform(0.7, 1.0))
        return mass_patch(rng, radius, centre, lobulation=0.2, edge_px=2.0, aspect=aspect)
    if lesion.kind == "mass":
        aspect = 1.0 if lesion.morphology == "round" else float(rng.uniform(0.6, 0.8))
        return mass_patch(rng, radius, centre, lobulation=0.0, edge_px=0.6, aspect=aspect)
    if lesion.kind == "calcification_cluster":
        return calcification_cluster_patch(rng, int(rng.integers(5, 21)), radius, centre)
    # A coarse (benign) calcification: dense, a little uneven ("popcorn").
    speck, outline = mass_patch(rng, radius, centre, lobulation=0.15, edge_px=0.4)
    speck *= 0.8 + 0.2 * np.clip(smooth_noise(rng, speck.shape, 1.0), -1.0, 1.0)
    return speck, outline


def _render_lesions(
    spec: StudySpec,
    geometry: ViewGeometry,
    lesions: list[Lesion],
    image: FloatArray,
    gland: FloatArray,
) -> tuple[FloatArray, FloatArray, list[list[float]], list[list[int]]]:
    """Add ``lesions`` (this breast's) to ``image``.

    Returns
    -------
    malignant, benign, centres, boxes
        The view's malignant and benign masks and, per lesion, its centre
        ``[row, column]`` and box ``[r0, c0, r1, c1]`` (inclusive).
    """
    spacing = spec.device.pixel_spacing_mm
    masks = {True: np.zeros(image.shape, np.float32), False: np.zeros(image.shape, np.float32)}
    centres: list[list[float]] = []
    boxes: list[list[int]] = []
    local_gland = gaussian_blur(gland, 4.0)
    for number, lesion in enumerate(lesions):
        rng = spec.rng(f"lesion-shape/{geometry.laterality}{geometry.view}/{number}")
        offset = lesion.offsets[geometry.view]
        centre = geometry.position(lesion.nipple_distance_mm / spacing, offset)
        r, c = round(centre[0]), round(centre[1])
        density, outline = _lesion_patches(rng, lesion, lesion.size_mm / spacing / 2, centre)
        # Device physics affects every lesion; the difficulty knob only hides cancers.
        strength = spec.lesion_contrast if lesion.malignant else spec.device.conspicuity
        if lesion.kind == "mass":
            # Overlapping fibroglandular tissue masks a mass of similar attenuation.
            strength *= _MASS_CONTRAST * (1.0 - _MASKING * float(local_gland[r, c]))
        else:
            coarse = 1.6 if lesion.kind == "calcification" else 1.0
            strength *= coarse * _CALCIFICATION_CONTRAST * (1.0 - 0.3 * float(local_gland[r, c]))
        origin = centred_origin(centre, density.shape[0] // 2)
        paste(image, strength * density, origin)
        region = np.zeros(image.shape, dtype=np.float32)
        paste(region, outline, origin)
        inside = (region > 0.5).astype(np.uint8)
        np.maximum(masks[lesion.malignant], inside, out=masks[lesion.malignant])
        box = bounding_box(inside)
        boxes.append(box if box is not None else [r, c, r, c])
        centres.append([round(centre[0], 1), round(centre[1], 1)])
    return masks[True], masks[False], centres, boxes


def _acquire(spec: StudySpec, image: FloatArray, breast: FloatArray, stream: str) -> FloatArray:
    """Apply the device: resolution (blur), contrast curve (gamma) and quantum noise.

    A soft knee above :data:`_KNEE` keeps calcifications on dense tissue below
    the top of the stored range, so they stay distinguishable.
    """
    device = spec.device
    rng = spec.rng(stream)
    blurred = gaussian_blur(image, device.blur_mm / device.pixel_spacing_mm)
    headroom = 1.0 - _KNEE
    knee = np.where(
        blurred > _KNEE, _KNEE + headroom * np.tanh((blurred - _KNEE) / headroom), blurred
    )
    curved = np.clip(knee, 0.0, 1.0) ** device.gamma
    sigma = device.noise * (0.1 + breast * (0.4 + 0.6 * curved))
    noise = gaussian_blur(rng.standard_normal(image.shape).astype(np.float32), 0.5) * 1.8
    return (curved + sigma * noise).astype(np.float32)


def _dataset(
    spec: StudySpec,
    geometry: ViewGeometry,
    pixels: NDArray[np.uint16],
    breast: FloatArray,
    series_uid: str,
    instance_number: int,
) -> Dataset:
    """Build one For Presentation mammogram (PS3.3 A.26)."""
    device = spec.device
    laterality, view = geometry.laterality, geometry.view
    ds = new_instance(
        spec,
        sop_class_uid=DigitalMammographyXRayImageStorageForPresentation,
        series_instance_uid=series_uid,
        series_number=1,
        series_description="Screening mammogram",
        instance_number=instance_number,
        image_type=("ORIGINAL", "PRIMARY", ""),
    )
    # DX Series (C.8.11.1) and General Series body part.
    ds.PresentationIntentType = "FOR PRESENTATION"
    ds.BodyPartExamined = "BREAST"
    # DX Anatomy Imaged (C.8.11.2) and Mammography Image (C.8.11.7).
    ds.ImageLaterality = laterality
    ds.PatientOrientation = list(PATIENT_ORIENTATION[(laterality, view)])
    ds.AnatomicRegionSequence = Sequence([code_item(BREAST_CODE)])
    view_item = code_item(VIEW_CODES[view])
    view_item.ViewModifierCodeSequence = Sequence([])
    ds.ViewCodeSequence = Sequence([view_item])
    ds.ViewPosition = view
    ds.PositionerType = "MAMMOGRAPHIC"
    ds.OrganExposed = "BREAST"
    ds.BreastImplantPresent = "NO"
    ds.PartialView = "NO"
    # DX Image (C.8.11.3): log-processed, presentation-ready values.
    monochrome1 = device.photometric == "MONOCHROME1"
    ds.PixelIntensityRelationship = "LOG"
    ds.PixelIntensityRelationshipSign = 1 if monochrome1 else -1
    ds.RescaleIntercept = 0
    ds.RescaleSlope = 1
    ds.RescaleType = "US"
    ds.PresentationLUTShape = "INVERSE" if monochrome1 else "IDENTITY"
    ds.LossyImageCompression = "00"
    ds.QualityControlImage = "NO"
    # VOI LUT (C.11.2): a window over the breast.
    inside = pixels[breast > 0]
    low, high = (float(v) for v in np.percentile(inside, [0.5, 99.5]))
    low, high = low - 0.05 * (high - low), high + 0.1 * (high - low)
    ds.WindowCenter = round((low + high) / 2, 1)
    ds.WindowWidth = round(max(high - low, 2.0), 1)
    ds.WindowCenterWidthExplanation = "BREAST"
    ds.VOILUTFunction = "LINEAR"
    # DX Detector (C.8.11.4).
    ds.DetectorType = "SCINTILLATOR" if monochrome1 else "DIRECT"
    ds.DetectorConfiguration = "AREA"
    ds.DetectorID = ds.DeviceSerialNumber
    ds.ImagerPixelSpacing = [device.pixel_spacing_mm, device.pixel_spacing_mm]
    ds.FieldOfViewShape = "RECTANGLE"
    ds.FieldOfViewDimensions = [
        round(ROWS * device.pixel_spacing_mm),
        round(COLUMNS * device.pixel_spacing_mm),
    ]
    # DX Positioning (C.8.11.5) and X-Ray Acquisition Dose (C.8.7.8): typical screening
    # exposures grow with compressed thickness.
    thickness = geometry.thickness_mm
    kvp = round(25.0 + thickness / 7.0)
    exposure_mas = round(30.0 + 1.6 * thickness)
    ds.BodyPartThickness = thickness
    ds.CompressionForce = geometry.compression_force_n
    ds.DistanceSourceToDetector = 650
    ds.KVP = kvp
    ds.Exposure = exposure_mas
    ds.ExposureInuAs = exposure_mas * 1000
    ds.XRayTubeCurrent = 100
    ds.ExposureTime = exposure_mas * 10
    ds.AnodeTargetMaterial = "TUNGSTEN"
    ds.FilterMaterial = "RHODIUM"
    ds.OrganDose = round(0.6 + 0.02 * thickness, 2)
    ds.EntranceDoseInmGy = round(2.0 + 0.08 * thickness, 2)
    # Acquisition Context (C.7.6.14).
    ds.AcquisitionContextSequence = Sequence([])
    set_pixels(ds, pixels, device.photometric, device.bits_stored)
    return ds


@dataclass(frozen=True)
class StudyPlan:
    """What a study will show, drawn before (and far faster than) its rendering.

    Parameters
    ----------
    breast_density
        BI-RADS breast composition category, ``"A"`` to ``"D"`` (ACR BI-RADS
        Atlas, 5th edition: almost entirely fatty, scattered fibroglandular
        densities, heterogeneously dense, extremely dense).
    dense_fractions
        Per breast (``"L"``/``"R"``), the fraction of its area that is fibroglandular.
    breasts
        Per breast and view (``"CC"``/``"MLO"``), the breast's geometry.
    lesions
        Malignant and benign lesions of both breasts.
    labels
        ``malignancy``, ``malignancy_left`` and ``malignancy_right`` (0 or 1).
    """

    breast_density: str
    dense_fractions: dict[str, float]
    breasts: dict[str, dict[str, ViewGeometry]]
    lesions: list[Lesion]
    labels: dict[str, int]


def plan_study(spec: StudySpec) -> StudyPlan:
    """Draw a study's anatomy and lesions (``anatomy`` and ``lesions`` streams).

    Density is drawn with :data:`DENSITY_SHARES` and is the same for both
    breasts; each breast's CC and MLO views share its lesions.
    """
    rng = spec.rng("anatomy")
    density = _draw_density(rng)
    low, high = DENSE_FRACTION[density]
    size = float(np.clip(rng.normal(230.0, 45.0), 150.0, 320.0))
    fraction = rng.uniform(low, high)
    breasts: dict[str, dict[str, ViewGeometry]] = {}
    dense_fractions: dict[str, float] = {}
    for laterality in ("R", "L"):
        breasts[laterality] = {g.view: g for g in _breast_views(rng, laterality, size)}
        dense_fractions[laterality] = float(np.clip(fraction + rng.normal(0.0, 0.02), low, high))
    lesions, labels = _draw_lesions(spec, breasts)
    return StudyPlan(density, dense_fractions, breasts, lesions, labels)


def generate_study(spec: StudySpec) -> GeneratedStudy:
    """Make one four-view screening mammogram.

    Parameters
    ----------
    spec
        The study to make; only its named random streams are used.

    Returns
    -------
    GeneratedStudy
        Four images (RCC, LCC, RMLO, LMLO), labels ``malignancy``,
        ``malignancy_left`` and ``malignancy_right``, per-view malignant and
        benign masks, lesion annotations and the BI-RADS ``breast_density``.
    """
    plan = plan_study(spec)
    breasts, lesions = plan.breasts, plan.lesions

    series_uid = spec.uid("series", 1)
    instances: list[Dataset] = []
    masks: dict[str, NDArray[np.uint8]] = {}
    images_annotation: list[dict[str, Any]] = []
    per_view: dict[int, list[dict[str, Any]]] = {i: [] for i in range(len(lesions))}
    invert = spec.device.photometric == "MONOCHROME1"
    for number, (laterality, view) in enumerate(VIEWS, start=1):
        geometry = breasts[laterality][view]
        texture_rng = spec.rng(f"texture/{laterality}{view}")
        image, breast, gland = _anatomy(texture_rng, geometry, plan.dense_fractions[laterality])
        own = [(i, lesion) for i, lesion in enumerate(lesions) if lesion.laterality == laterality]
        malignant, benign, centres, boxes = _render_lesions(
            spec, geometry, [lesion for _, lesion in own], image, gland
        )
        acquired = _acquire(spec, image, breast, f"noise/{laterality}{view}")
        if laterality == "R":
            acquired, breast = np.fliplr(acquired), np.fliplr(breast)
            malignant, benign = np.fliplr(malignant), np.fliplr(benign)
            centres = [[r, COLUMNS - 1 - c] for r, c in centres]
            boxes = [mirror_box(box, COLUMNS) for box in boxes]
        pixels = quantise(np.ascontiguousarray(acquired), spec.device.bits_stored, invert=invert)
        ds = _dataset(spec, geometry, pixels, breast, series_uid, number)
        instances.append(ds)
        sop = str(ds.SOPInstanceUID)
        masks[f"{sop}/malignancy"] = np.ascontiguousarray(malignant, dtype=np.uint8)
        masks[f"{sop}/benign"] = np.ascontiguousarray(benign, dtype=np.uint8)
        nipple_column = geometry.depth_px if laterality == "L" else COLUMNS - 1 - geometry.depth_px
        images_annotation.append(
            {
                "sop_instance_uid": sop,
                "laterality": laterality,
                "view": view,
                "patient_orientation": "\\".join(PATIENT_ORIENTATION[(laterality, view)]),
                "chest_wall_side": "left" if laterality == "L" else "right",
                "nipple_rc": [round(geometry.axis_row, 1), round(nipple_column, 1)],
                "compressed_thickness_mm": geometry.thickness_mm,
            }
        )
        for (index, _), centre, box in zip(own, centres, boxes, strict=True):
            per_view[index].append({"sop_instance_uid": sop, "box": box, "centre_rc": centre})

    lesion_annotations = [
        {
            "laterality": lesion.laterality,
            "kind": lesion.kind,
            "morphology": lesion.morphology,
            "malignant": lesion.malignant,
            "size_mm": lesion.size_mm,
            "nipple_distance_mm": lesion.nipple_distance_mm,
            "per_view": per_view[i],
        }
        for i, lesion in enumerate(lesions)
    ]
    return GeneratedStudy(
        instances=instances,
        labels=plan.labels,
        masks=masks,
        annotations={
            "images": images_annotation,
            "lesions": lesion_annotations,
            "breast_density": plan.breast_density,
        },
        extra_columns={"breast_density": plan.breast_density},
    )
