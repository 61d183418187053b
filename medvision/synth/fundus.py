"""Colour fundus photograph phantoms with diabetic retinopathy lesions.

One study is one 45° colour fundus photograph of one eye, stored as an
Ophthalmic Photography 8 Bit Image (PS3.3 A.39.1). The scene is rendered in a
canonical right-eye orientation (optic disc on the right of the image, nasal;
macula to its left, temporal) and mirrored for a left eye.

Diabetic retinopathy (DR) lesions — microaneurysms, haemorrhages, hard exudates
and neovascularisation — are drawn on the retina and the DR grade is *derived*
from their counts by :func:`dr_grade`, a rule inspired by the International
Clinical Diabetic Retinopathy Disease Severity Scale (Wilkinson et al.,
Ophthalmology 2003;110:1677-82). A study is ``referable_dr`` when its grade is
moderate non-proliferative DR or worse (grade 2 or more).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from functools import lru_cache
from typing import Any

import numpy as np
from numpy.typing import NDArray
from PIL import ImageCms
from pydicom import Dataset
from pydicom.sequence import Sequence as DicomSequence
from pydicom.sr.codedict import codes
from pydicom.tag import Tag
from pydicom.uid import OphthalmicPhotography8BitImageStorage
from scipy.signal import lfilter

from medvision.synth.dicom_objects import code_item, new_instance, set_pixels
from medvision.synth.study import GeneratedStudy, StudySpec
from medvision.synth.textures import (
    FloatArray,
    Stroke,
    bounding_box,
    centred_origin,
    gaussian_blur,
    grid,
    mirror_box,
    overlap,
    patch_offsets,
    quantise,
    smooth_noise,
    soft_ellipse,
    stroke_coverage,
    union,
)

DEFAULT_PREVALENCE: dict[str, float] = {"referable_dr": 0.08}

ROWS = 512
COLUMNS = 512
#: Radius of the camera's circular field of view, as a fraction of the image width.
FOV_RADIUS_FRACTION = 0.46
#: Width (pixels) of the soft edge of the field of view; beyond it pixels are 0.
FOV_EDGE_PX = 2.0
#: Horizontal field of view of the phantom camera in degrees.
FIELD_OF_VIEW_DEG = 45.0

#: Most microaneurysms (and nothing else) that still grade as mild NPDR.
MILD_MAX_MICROANEURYSMS = 4
#: Fewest haemorrhages that grade as severe NPDR (after the 4-2-1 rule's "> 20").
SEVERE_MIN_HAEMORRHAGES = 20

LESION_TYPES: tuple[str, ...] = (
    "microaneurysm",
    "haemorrhage",
    "hard_exudate",
    "neovascularisation",
)

PointArray = NDArray[np.float64]


@dataclass(frozen=True)
class LesionCounts:
    """Number of each DR lesion in one image (neovascularisation: complexes)."""

    microaneurysm: int = 0
    haemorrhage: int = 0
    hard_exudate: int = 0
    neovascularisation: int = 0

    def as_dict(self) -> dict[str, int]:
        """Return the counts keyed by lesion type."""
        return {k: int(v) for k, v in asdict(self).items()}


def dr_grade(counts: LesionCounts) -> int:
    """Grade diabetic retinopathy from lesion counts.

    A rule inspired by the International Clinical DR Severity Scale (Wilkinson et
    al. 2003): 0 no apparent retinopathy; 1 mild NPDR (microaneurysms only, at most
    :data:`MILD_MAX_MICROANEURYSMS`); 2 moderate NPDR (more microaneurysms, or any
    haemorrhage or hard exudate); 3 severe NPDR (at least
    :data:`SEVERE_MIN_HAEMORRHAGES` haemorrhages); 4 proliferative DR (any
    neovascularisation).

    Parameters
    ----------
    counts
        Lesion counts of one image.

    Returns
    -------
    int
        The grade, 0 to 4; grade 2 or more is referable.
    """
    if counts.neovascularisation > 0:
        return 4
    if counts.haemorrhage >= SEVERE_MIN_HAEMORRHAGES:
        return 3
    if (
        counts.haemorrhage > 0
        or counts.hard_exudate > 0
        or counts.microaneurysm > MILD_MAX_MICROANEURYSMS
    ):
        return 2
    if counts.microaneurysm > 0:
        return 1
    return 0


@dataclass(frozen=True)
class _Geometry:
    """Landmarks of one canonical (right-eye) fundus image, in pixels."""

    centre: tuple[float, float]
    fov_radius: float
    disc: tuple[float, float]
    disc_radius: float
    fovea: tuple[float, float]
    disc_fovea: float
    spacing_mm: float

    def inside(self, point: PointArray, margin: float = 0.0) -> bool:
        """Whether ``point`` lies within the field of view, ``margin`` pixels in."""
        dr, dc = point[0] - self.centre[0], point[1] - self.centre[1]
        return math.hypot(dr, dc) < self.fov_radius - margin


@dataclass
class _Vessel:
    points: PointArray
    widths: PointArray
    kind: str


def _geometry(rng: np.random.Generator, spacing_mm: float) -> _Geometry:
    centre = ((ROWS - 1) / 2.0, (COLUMNS - 1) / 2.0)
    disc_radius = 0.9 / spacing_mm * float(rng.normal(1.0, 0.07))
    disc_fovea = 4.5 / spacing_mm * float(rng.normal(1.0, 0.04))
    fovea = (
        centre[0] + float(rng.normal(6.0, 6.0)),
        centre[1] - disc_fovea * float(rng.uniform(0.30, 0.40)),
    )
    tilt = math.radians(float(rng.normal(7.0, 2.0)))  # the disc sits above the fovea
    disc = (fovea[0] - disc_fovea * math.sin(tilt), fovea[1] + disc_fovea * math.cos(tilt))
    return _Geometry(
        centre=centre,
        fov_radius=FOV_RADIUS_FRACTION * COLUMNS,
        disc=disc,
        disc_radius=disc_radius,
        fovea=fovea,
        disc_fovea=disc_fovea,
        spacing_mm=spacing_mm,
    )


def _truncate(points: PointArray, geometry: _Geometry, avoid_fovea: float) -> int:
    """Index where a vessel leaves the field of view or enters the foveal avascular zone."""
    d_centre = np.hypot(points[:, 0] - geometry.centre[0], points[:, 1] - geometry.centre[1])
    d_fovea = np.hypot(points[:, 0] - geometry.fovea[0], points[:, 1] - geometry.fovea[1])
    bad = (d_centre > geometry.fov_radius - 1.0) | (d_fovea < avoid_fovea)
    hits = np.flatnonzero(bad)
    return int(hits[0]) if hits.size else len(points)


def _angle_to(target: float, heading: float) -> float:
    """Signed turn from ``heading`` to ``target`` in ``(-pi, pi]``."""
    return (target - heading + math.pi) % (2 * math.pi) - math.pi


def _walk(
    rng: np.random.Generator,
    start: PointArray,
    heading: float,
    length: float,
    widths: tuple[float, float],
    geometry: _Geometry,
    kind: str,
    tortuosity: float = 0.025,
    steer: float = 0.03,
    step: float = 3.0,
) -> _Vessel | None:
    """Grow a vessel as a smooth random walk, steered as retinal vessels run.

    The turning rate is an AR(1) process; ``steer`` pulls the heading towards the
    direction radial from the disc or, for a vessel that sets off towards the
    macula, towards the fovea. Returns None when the vessel would be shorter than
    three points.
    """
    n = max(2, int(length / step))
    noise = rng.normal(0.0, tortuosity, n)
    points = np.empty((n + 1, 2))
    points[0] = start
    r, c = float(start[0]), float(start[1])
    to_fovea = math.atan2(geometry.fovea[0] - r, geometry.fovea[1] - c)
    macular = abs(_angle_to(to_fovea, heading)) < math.pi / 3
    turn = 0.0
    for i in range(n):
        if macular:
            target = math.atan2(geometry.fovea[0] - r, geometry.fovea[1] - c)
        else:
            target = math.atan2(r - geometry.disc[0], c - geometry.disc[1])
        turn = 0.8 * turn + float(noise[i])
        heading += turn + steer * _angle_to(target, heading)
        r += step * math.sin(heading)
        c += step * math.cos(heading)
        points[i + 1] = (r, c)
    keep = _truncate(points, geometry, 0.3 * geometry.disc_fovea)
    if keep < 3:
        return None
    points = points[:keep]
    return _Vessel(points, np.linspace(widths[0], widths[1], keep), kind)


def _trunk(
    rng: np.random.Generator,
    geometry: _Geometry,
    start: PointArray,
    heading: float,
    bend: tuple[float, float, float],
    width: float,
    kind: str,
    step: float = 3.0,
) -> _Vessel:
    """Draw a main vessel leaving the disc: a sharp early bend, then a gentle curve.

    ``bend`` is (total early turn in radians, its length scale in pixels, late
    curvature in radians per pixel); positive turns are clockwise on the image.
    """
    turn, scale, curvature = bend
    s = np.arange(0.0, 2.0 * geometry.fov_radius, step)
    wiggle = np.cumsum(lfilter([1.0], [1.0, -0.9], rng.normal(0.0, 0.0015, s.size)))
    headings = heading + turn * (1.0 - np.exp(-s / scale)) + curvature * s + wiggle
    steps = step * np.stack([np.sin(headings), np.cos(headings)], axis=1)
    points = start[None, :] + np.vstack([[0.0, 0.0], np.cumsum(steps, axis=0)[:-1]])
    keep = max(3, _truncate(points, geometry, 0.0))
    points = points[:keep]
    return _Vessel(points, np.linspace(width, 0.45 * width, keep), kind)


def _headings(points: PointArray) -> PointArray:
    delta = np.gradient(points, axis=0)
    return np.arctan2(delta[:, 0], delta[:, 1])


def _branches(
    rng: np.random.Generator, parent: _Vessel, geometry: _Geometry, depth: int
) -> list[_Vessel]:
    """Side branches of ``parent`` (and theirs), thinner with each generation."""
    if depth > 3:
        return []
    children: list[_Vessel] = []
    steps = np.hypot(*np.diff(parent.points, axis=0).T)
    arc = np.concatenate([[0.0], np.cumsum(steps)])
    headings = _headings(parent.points)
    d_disc = np.hypot(
        parent.points[:, 0] - geometry.disc[0], parent.points[:, 1] - geometry.disc[1]
    )
    outside_disc = np.flatnonzero(d_disc > 1.2 * geometry.disc_radius)
    if outside_disc.size == 0:
        return children
    position = arc[outside_disc[0]] + float(rng.uniform(5.0, 30.0))
    while position < arc[-1] - 8.0:
        i = int(np.searchsorted(arc, position))
        parent_width = float(parent.widths[i])
        width = parent_width * float(rng.uniform(0.45, 0.8))
        if width >= 0.75 + 0.1 * depth:
            side = 1.0 if rng.random() < 0.5 else -1.0
            heading = float(headings[i]) + side * float(rng.uniform(0.45, 0.95))
            length = width * float(rng.uniform(40.0, 70.0))
            child = _walk(
                rng, parent.points[i], heading, length, (width, 0.6 * width), geometry, parent.kind
            )
            if child is not None:
                children.append(child)
                children.extend(_branches(rng, child, geometry, depth + 1))
        position += float(rng.uniform(0.6, 1.4)) * (20.0 + 10.0 * parent_width)
    return children


def _vessel_tree(rng: np.random.Generator, geometry: _Geometry) -> list[_Vessel]:
    """Arteries and veins: temporal arcades, nasal trunks, macular twigs and branches."""
    vein_width = 0.135 / geometry.spacing_mm * float(rng.normal(1.0, 0.06))
    artery_width = vein_width * float(rng.uniform(0.68, 0.78))
    trunks: list[_Vessel] = []
    disc = np.array(geometry.disc)
    scale = 0.5 * geometry.disc_fovea
    for kind, width in (("vein", vein_width), ("artery", artery_width)):
        stem = disc + rng.normal(0.0, 0.15 * geometry.disc_radius, 2)
        for sign in (-1.0, 1.0):  # superior (up on the image), then inferior
            start = stem + rng.normal(0.0, 0.06 * geometry.disc_radius, 2)
            arcade = _trunk(
                rng,
                geometry,
                start,
                sign * (math.pi / 2 + math.radians(float(rng.normal(5.0, 4.0)))),
                (
                    sign * float(rng.uniform(1.15, 1.3)),
                    scale * float(rng.uniform(0.9, 1.1)) * (1.0 if sign < 0 else 1.12),
                    sign * float(rng.uniform(0.0008, 0.0014)),
                ),
                width,
                kind,
            )
            nasal = _trunk(
                rng,
                geometry,
                start,
                sign * (math.pi / 2 - math.radians(float(rng.uniform(5.0, 25.0)))),
                (
                    -sign * float(rng.uniform(0.4, 0.9)),
                    scale * float(rng.uniform(0.8, 1.4)),
                    0.0,
                ),
                0.8 * width,
                kind,
            )
            trunks.extend([arcade, nasal])
        for _ in range(int(rng.integers(1, 3))):  # small papillomacular vessels
            heading = math.pi + math.radians(float(rng.normal(0.0, 14.0)))
            twig = _walk(
                rng,
                disc + rng.normal(0.0, 0.3 * geometry.disc_radius, 2),
                heading,
                0.6 * geometry.disc_fovea,
                (0.35 * width, 0.2 * width),
                geometry,
                kind,
                steer=0.0,
            )
            if twig is not None:
                trunks.append(twig)
    vessels = list(trunks)
    for trunk in trunks:
        vessels.extend(_branches(rng, trunk, geometry, 1))
    return vessels


def _vessel_strokes(vessels: Sequence[_Vessel], kind: str) -> list[Stroke]:
    """Strokes of one vessel kind, thin first; thick vessels are optically denser."""
    chosen = sorted((v for v in vessels if v.kind == kind), key=lambda v: float(v.widths.mean()))
    return [
        (v.points, v.widths, min(1.0, 0.35 + 0.65 * float(v.widths.mean()) / 5.0)) for v in chosen
    ]


def _reflex_strokes(vessels: Sequence[_Vessel]) -> list[Stroke]:
    """Return strokes of the central light reflex of the wider vessels."""
    strokes: list[Stroke] = []
    for v in vessels:
        wide = v.widths >= 2.5
        if wide.sum() >= 2:
            strokes.append(
                (v.points[wide], 0.28 * v.widths[wide], 1.0 if v.kind == "artery" else 0.5)
            )
    return strokes


#: Pigmentation (0 light, 1 dark) by ``EthnicGroup``: fundus pigmentation follows skin
#: and uveal melanin.
_PIGMENTATION = {"White": 0.3, "Black": 0.75, "Asian": 0.55, "Hispanic": 0.5, "Other": 0.5}


def _retina(
    spec: StudySpec, rng: np.random.Generator, geometry: _Geometry
) -> tuple[FloatArray, list[_Vessel]]:
    """Return the lesion-free scene reflectance, ``(rows, cols, 3)``, and its vessels."""
    shape = (ROWS, COLUMNS)
    rr, cc = grid(shape)
    mean_pigment = _PIGMENTATION.get(spec.patient.ethnicity, 0.5)
    pigment = float(np.clip(rng.normal(mean_pigment, 0.12), 0.0, 1.0))
    light = np.array([0.95, 0.47, 0.24], dtype=np.float32)
    dark = np.array([0.58, 0.25, 0.12], dtype=np.float32)
    albedo = light + pigment * (dark - light)
    albedo *= np.array(rng.normal(1.0, [0.03, 0.06, 0.08]), dtype=np.float32)

    d_centre = np.hypot(rr - geometry.centre[0], cc - geometry.centre[1]) / geometry.fov_radius
    fine = smooth_noise(rng, shape, 0.8)
    mottle = smooth_noise(rng, shape, 10.0)
    choroid = smooth_noise(rng, shape, 6.0)
    # A lightly pigmented fundus shows its choroidal vessels ("tessellation"),
    # more towards the periphery.
    tessellation = (1.0 - pigment) ** 2 * 0.12 * np.clip(d_centre, 0.25, 1.0)
    stripes = np.exp(-((choroid / 0.5) ** 2))
    texture = 1.0 + 0.02 * fine + 0.035 * mottle + tessellation * (stripes - 0.5)
    scene = albedo[None, None, :] * texture[..., None]

    macula_sigma = geometry.disc_radius * float(rng.uniform(1.1, 1.5))
    macula = np.exp(
        -((rr - geometry.fovea[0]) ** 2 + (cc - geometry.fovea[1]) ** 2) / (2 * macula_sigma**2)
    )
    depth = float(rng.uniform(0.22, 0.38))
    scene *= 1.0 - depth * macula[..., None] * np.array([0.7, 1.0, 1.1], dtype=np.float32)
    reflex = float(np.clip((60.0 - spec.patient.age_years) / 40.0, 0.0, 1.0)) * 0.25
    if reflex > 0:
        spot = soft_ellipse(shape, geometry.fovea, (2.0, 2.0), edge=1.0, coords=[rr, cc])
        scene += reflex * spot[..., None] * np.array([1.0, 0.9, 0.8], dtype=np.float32)

    radius = geometry.disc_radius
    disc = soft_ellipse(
        shape, geometry.disc, (radius * float(rng.uniform(1.0, 1.1)), radius), 1.2, [rr, cc]
    )
    rim_colour = np.array([0.96, 0.62, 0.42], dtype=np.float32) * float(rng.uniform(0.92, 1.05))
    scene = scene * (1.0 - disc[..., None]) + rim_colour * disc[..., None]
    cup_ratio = float(rng.uniform(0.3, 0.55))
    cup_centre = (geometry.disc[0], geometry.disc[1] - 0.12 * radius)  # cups sit temporally
    cup = soft_ellipse(shape, cup_centre, (cup_ratio * radius * 1.05, cup_ratio * radius), 1.8)
    cup_colour = np.array([1.0, 0.92, 0.8], dtype=np.float32)
    scene = scene * (1.0 - 0.85 * cup[..., None]) + 0.85 * cup_colour * cup[..., None]

    vessels = _vessel_tree(rng, geometry)
    veins = stroke_coverage(shape, _vessel_strokes(vessels, "vein"))
    arteries = stroke_coverage(shape, _vessel_strokes(vessels, "artery"))
    shine = stroke_coverage(shape, _reflex_strokes(vessels))
    vein_k = np.array([0.75, 1.9, 1.5], dtype=np.float32)
    artery_k = np.array([0.4, 1.25, 1.0], dtype=np.float32)
    scene *= np.exp(-(veins[..., None] * vein_k + arteries[..., None] * artery_k))
    scene += 0.08 * shine[..., None] * np.array([1.0, 0.8, 0.6], dtype=np.float32)
    return scene.astype(np.float32), vessels


@dataclass
class _Lesion:
    kind: str
    patch: FloatArray
    origin: tuple[int, ...]
    centre: tuple[float, float]


def _stamp(
    centre: tuple[float, float],
    radii: tuple[float, float],
    angle: float = 0.0,
    edge: float = 0.6,
) -> tuple[FloatArray, tuple[int, ...]]:
    """Return a rotated soft ellipse on a small patch and the patch's top-left pixel."""
    half = math.ceil(max(radii) + 3.0 * edge + 2.0)
    origin = centred_origin(centre, half)
    size = 2 * half + 1
    dr, dc = patch_offsets(centre, half)
    along = (dr * math.sin(angle) + dc * math.cos(angle)).astype(np.float32)
    across = (dr * math.cos(angle) - dc * math.sin(angle)).astype(np.float32)
    patch = soft_ellipse((size, size), (0.0, 0.0), (radii[1], radii[0]), edge, [across, along])
    return patch, origin


def _place(
    rng: np.random.Generator,
    geometry: _Geometry,
    around: tuple[float, float],
    spread: float,
    margin: float = 12.0,
) -> tuple[float, float]:
    """Return a lesion site near ``around``, in the field of view and off the optic disc."""
    for _ in range(200):
        r, c = rng.normal(around, spread)
        point = np.array([r, c])
        off_disc = (
            math.hypot(r - geometry.disc[0], c - geometry.disc[1]) > 1.4 * geometry.disc_radius
        )
        if geometry.inside(point, margin) and off_disc:
            return float(r), float(c)
    return geometry.fovea[0] - 3.0 * margin, geometry.fovea[1]


def _draw_counts(rng: np.random.Generator, prevalence: float) -> LesionCounts:
    """Draw a target grade, then lesion counts consistent with it."""
    if rng.random() < prevalence:
        target = int(rng.choice([2, 3, 4], p=[0.6, 0.25, 0.15]))
    else:
        target = 0 if rng.random() < 0.85 else 1
    if target == 0:
        return LesionCounts()
    if target == 1:
        return LesionCounts(microaneurysm=int(rng.integers(1, MILD_MAX_MICROANEURYSMS + 1)))
    exudates = int(rng.integers(5, 30)) if rng.random() < 0.5 else 0
    if target == 2:
        mode = int(rng.integers(3))
        if mode == 0:  # microaneurysms beyond mild
            return LesionCounts(microaneurysm=int(rng.integers(MILD_MAX_MICROANEURYSMS + 1, 16)))
        return LesionCounts(
            microaneurysm=int(rng.integers(1, 16)),
            haemorrhage=int(rng.integers(1, 12)) if mode == 1 or exudates == 0 else 0,
            hard_exudate=exudates,
        )
    if target == 3:
        return LesionCounts(
            microaneurysm=int(rng.integers(8, 30)),
            haemorrhage=int(rng.integers(SEVERE_MIN_HAEMORRHAGES, 40)),
            hard_exudate=exudates,
        )
    return LesionCounts(
        microaneurysm=int(rng.integers(5, 25)),
        haemorrhage=int(rng.integers(2, 30)),
        hard_exudate=exudates,
        neovascularisation=int(rng.integers(1, 4)),
    )


def _lesions(
    rng: np.random.Generator, counts: LesionCounts, geometry: _Geometry, vessels: Sequence[_Vessel]
) -> list[_Lesion]:
    """Lesion patches placed on the canonical retina."""
    lesions: list[_Lesion] = []
    pole = geometry.fovea[0], geometry.fovea[1] + 0.3 * geometry.disc_fovea
    spread = 0.55 * geometry.disc_fovea
    for _ in range(counts.microaneurysm):
        centre = _place(rng, geometry, pole, spread)
        radius = float(rng.uniform(1.0, 2.0))
        patch, origin = _stamp(centre, (radius, radius), 0.0, 0.45)
        lesions.append(_Lesion("microaneurysm", patch, origin, centre))
    for _ in range(counts.haemorrhage):
        if rng.random() < 0.3:  # flame-shaped, in the nerve fibre layer near the disc
            centre = _place(rng, geometry, geometry.disc, 1.0 * geometry.disc_fovea / 2.0)
            angle = math.atan2(centre[0] - geometry.disc[0], centre[1] - geometry.disc[1])
            radii = (float(rng.uniform(5.0, 10.0)), float(rng.uniform(1.5, 2.8)))
            patch, origin = _stamp(centre, radii, angle, 1.2)
        else:  # dot-blot: a few overlapping ellipses
            centre = _place(rng, geometry, pole, 1.1 * spread)
            size = float(rng.uniform(2.5, 7.5))
            parts = [_stamp(centre, (size, size * float(rng.uniform(0.7, 1.0))), 0.0, 0.8)]
            for _ in range(int(rng.integers(0, 3))):
                shift = rng.normal(0.0, 0.45 * size, 2)
                sub = 0.6 * size * float(rng.uniform(0.6, 1.0))
                parts.append(
                    _stamp((centre[0] + shift[0], centre[1] + shift[1]), (sub, sub), 0.0, 0.8)
                )
            patch, origin = union(parts)
        lesions.append(_Lesion("haemorrhage", patch, origin, centre))
    remaining = counts.hard_exudate
    while remaining > 0:
        size = min(remaining, int(rng.integers(4, 13)))
        focus = _place(rng, geometry, geometry.fovea, 0.3 * geometry.disc_fovea, margin=40.0)
        ring = rng.random() < 0.5
        ring_radius = float(rng.uniform(12.0, 28.0))
        start = float(rng.uniform(0.0, 2 * math.pi))
        for k in range(size):
            if ring:  # circinate: a partial ring around a leaking focus
                a = start + 1.6 * math.pi * k / size + float(rng.normal(0.0, 0.08))
                r = ring_radius * float(rng.normal(1.0, 0.08))
                centre = (focus[0] + r * math.sin(a), focus[1] + r * math.cos(a))
            else:
                offset = rng.normal(0.0, 7.0, 2)
                centre = (focus[0] + float(offset[0]), focus[1] + float(offset[1]))
            radii = (float(rng.uniform(1.5, 3.5)), float(rng.uniform(1.2, 2.8)))
            patch, origin = _stamp(centre, radii, float(rng.uniform(0.0, math.pi)), 0.4)
            lesions.append(_Lesion("hard_exudate", patch, origin, centre))
        remaining -= size
    veins = [v for v in vessels if v.kind == "vein" and len(v.points) > 40]
    for n in range(counts.neovascularisation):
        if n == 0 or not veins:  # new vessels on the disc
            a = float(rng.uniform(0.0, 2 * math.pi))
            reach = geometry.disc_radius * float(rng.uniform(0.3, 1.0))
            centre = (
                geometry.disc[0] + reach * math.sin(a),
                geometry.disc[1] + reach * math.cos(a),
            )
        else:  # new vessels elsewhere, along a vein
            vein = veins[int(rng.integers(len(veins)))]
            point = vein.points[int(rng.integers(len(vein.points) // 3, len(vein.points)))]
            centre = (float(point[0]), float(point[1]))
        strokes: list[Stroke] = []
        fan = float(rng.uniform(0.0, 2 * math.pi))
        for _ in range(int(rng.integers(5, 10))):  # loops fanning out from one root
            heading = fan + float(rng.normal(0.0, 0.9))
            length = float(rng.uniform(25.0, 50.0))
            steps = int(length / 1.5)
            bend = (1.0 if rng.random() < 0.5 else -1.0) * 1.8 * math.pi / steps
            turns = bend + lfilter([1.0], [1.0, -0.5], rng.normal(0.0, 0.15, steps))
            headings = heading + np.cumsum(turns)
            path = np.cumsum(1.5 * np.stack([np.sin(headings), np.cos(headings)], axis=1), axis=0)
            points = np.vstack([[centre], np.array(centre) + path])
            strokes.append((points, np.full(len(points), float(rng.uniform(0.8, 1.2))), 1.0))
        half = 40
        origin = centred_origin(centre, half)
        patch = stroke_coverage((2 * half + 1, 2 * half + 1), strokes, origin=origin)
        lesions.append(_Lesion("neovascularisation", patch, origin, centre))
    return lesions


#: Per lesion type: the level above which a patch pixel belongs to the lesion's mask.
_MASK_LEVEL = {
    "microaneurysm": 0.5,
    "haemorrhage": 0.5,
    "hard_exudate": 0.5,
    "neovascularisation": 0.3,
}


def _apply_lesions(
    scene: FloatArray, lesions: Sequence[_Lesion], rng: np.random.Generator, contrast: float
) -> tuple[FloatArray, dict[str, NDArray[np.uint8]], list[dict[str, Any]]]:
    """Paint lesions into ``scene``; return it, the per-type masks and per-lesion records."""
    shape = scene.shape[:2]
    density = {kind: np.zeros(shape, dtype=np.float32) for kind in LESION_TYPES}
    masks = {kind: np.zeros(shape, dtype=np.uint8) for kind in LESION_TYPES}
    records: list[dict[str, Any]] = []
    strength = {
        "microaneurysm": float(rng.uniform(0.7, 0.95)),
        "haemorrhage": float(rng.uniform(0.4, 0.7)),
        "hard_exudate": float(rng.uniform(0.55, 0.85)),
        "neovascularisation": float(rng.uniform(0.7, 0.95)),
    }
    for lesion in lesions:
        where = overlap(shape, lesion.patch.shape, lesion.origin)
        if where is None:
            continue
        (fr, fc), part = where
        patch = lesion.patch[part]
        level = patch * strength[lesion.kind] * float(rng.uniform(0.8, 1.15))
        region = density[lesion.kind][fr, fc]
        np.maximum(region, level, out=region)
        own = (patch >= _MASK_LEVEL[lesion.kind]).astype(np.uint8)
        centre_r = int(np.clip(round(lesion.centre[0]) - fr.start, 0, own.shape[0] - 1))
        centre_c = int(np.clip(round(lesion.centre[1]) - fc.start, 0, own.shape[1] - 1))
        if lesion.kind != "neovascularisation":
            own[centre_r, centre_c] = 1
        local = bounding_box(own)
        if local is None:
            continue
        masks[lesion.kind][fr, fc] |= own
        records.append(
            {
                "type": lesion.kind,
                "box": [
                    local[0] + fr.start,
                    local[1] + fc.start,
                    local[2] + fr.start,
                    local[3] + fc.start,
                ],
                "centre_rc": [round(lesion.centre[0], 2), round(lesion.centre[1], 2)],
                "area_px": int(own.sum()),
            }
        )
    blood = np.array([0.55, 1.7, 1.4], dtype=np.float32)
    absorbance = contrast * (
        density["microaneurysm"] * 1.15
        + density["haemorrhage"]
        + 0.9 * density["neovascularisation"]
    )
    scene = scene * np.exp(-absorbance[..., None] * blood)
    alpha = np.clip(contrast * density["hard_exudate"], 0.0, 1.0)[..., None]
    exudate_colour = np.array([1.0, 0.9, 0.5], dtype=np.float32)
    scene = scene * (1.0 - alpha) + exudate_colour * alpha
    return scene.astype(np.float32), masks, records


def _camera(
    spec: StudySpec, rng: np.random.Generator, scene: FloatArray, geometry: _Geometry
) -> NDArray[np.uint8]:
    """Illuminate, blur, colour-cast, tone-map, add noise and crop to the field of view."""
    shape = scene.shape[:2]
    rr, cc = grid(shape)
    device = spec.device
    dr = (rr - geometry.centre[0]) / geometry.fov_radius
    dc = (cc - geometry.centre[1]) / geometry.fov_radius
    d = np.sqrt(dr**2 + dc**2)
    tilt = float(rng.uniform(0.0, 2 * math.pi))
    uneven = 1.0 + float(rng.uniform(0.0, 0.12)) * (dr * math.sin(tilt) + dc * math.cos(tilt))
    vignette = np.clip(1.0 - float(rng.uniform(0.35, 0.55)) * d**2.4, 0.0, 1.0) * uneven
    exposure = float(rng.normal(1.0, 0.07))
    lit = (scene * (vignette * exposure)[..., None]).astype(np.float32)
    image = gaussian_blur(lit, device.blur_mm / device.pixel_spacing_mm)
    gains = np.array(
        [device.options.get("red_gain", 1.0), 1.0, device.options.get("blue_gain", 1.0)],
        dtype=np.float32,
    )
    image = np.clip(image * gains, 0.0, 1.0) ** device.gamma
    image = image + rng.normal(0.0, device.noise, image.shape).astype(np.float32)
    fov = soft_ellipse(
        shape, geometry.centre, (geometry.fov_radius, geometry.fov_radius), FOV_EDGE_PX, [rr, cc]
    )
    fov[d * geometry.fov_radius > geometry.fov_radius + 4.0 * FOV_EDGE_PX] = 0.0
    return quantise((image * fov[..., None]).astype(np.float32), 8).astype(np.uint8)


@lru_cache(maxsize=1)
def _srgb_profile() -> bytes:
    profile = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    return profile + b"\0" * (len(profile) % 2)


def _add_ophthalmic_modules(
    ds: Dataset, spec: StudySpec, laterality: str, dilation_mm: float | None
) -> None:
    """Add the OP-specific modules (PS3.3 C.8.17) and the ICC Profile module.

    ``dilation_mm`` is the pupil diameter after mydriasis, or None for an undilated
    (non-mydriatic) photograph.
    """
    device = spec.device
    # Synchronization (C.7.4.2): one image, not synchronised with anything else
    ds.SynchronizationFrameOfReferenceUID = spec.uid("synchronization")
    ds.SynchronizationTrigger = "NO TRIGGER"
    ds.AcquisitionTimeSynchronized = "N"
    # General Image (C.7.6.1): the image as the examiner sees the fundus
    ds.PatientOrientation = ["L", "F"]
    # Ophthalmic Photography Image (C.8.17.2)
    ds.PixelSpacing = [f"{device.pixel_spacing_mm:.6g}", f"{device.pixel_spacing_mm:.6g}"]
    ds.LossyImageCompression = "00"
    # Acquisition Context (C.7.6.14)
    ds.AcquisitionContextSequence = DicomSequence()
    # Ocular Region Imaged (C.8.17.5)
    ds.ImageLaterality = laterality
    ds.AnatomicRegionSequence = DicomSequence([code_item(codes.SCT.Retina)])
    ds.RelativeImagePositionCodeSequence = DicomSequence([code_item(codes.DCM.DiscMaculaCentered)])
    # Ophthalmic Photography Acquisition Parameters (C.8.17.4)
    ds.PatientEyeMovementCommanded = "NO"
    ds.HorizontalFieldOfView = FIELD_OF_VIEW_DEG
    ds.RefractiveStateSequence = DicomSequence()
    ds.EmmetropicMagnification = None
    ds.IntraOcularPressure = None
    ds.PupilDilated = "NO" if dilation_mm is None else "YES"
    if dilation_mm is not None:
        agent = Dataset()
        agent.MydriaticAgentCodeSequence = DicomSequence([code_item(codes.SCT.Tropicamide)])
        ds.MydriaticAgentSequence = DicomSequence([agent])
        ds.DegreeOfDilation = dilation_mm
    # Ophthalmic Photographic Parameters (C.8.17.3)
    ds.AcquisitionDeviceTypeCodeSequence = DicomSequence([code_item(codes.SCT.FundusCamera)])
    ds.IlluminationTypeCodeSequence = DicomSequence()
    ds.LightPathFilterTypeStackCodeSequence = DicomSequence([code_item(codes.DCM.NoFilter)])
    ds.ImagePathFilterTypeStackCodeSequence = DicomSequence([code_item(codes.DCM.NoFilter)])
    ds.LensesCodeSequence = DicomSequence()
    ds.DetectorType = "CMOS"
    # ICC Profile (C.11.15)
    ds.ICCProfile = _srgb_profile()
    ds.ColorSpace = "SRGB"


def generate_study(spec: StudySpec) -> GeneratedStudy:
    """Make one colour fundus photograph study.

    Parameters
    ----------
    spec
        The study to make; its ``"anatomy"``, ``"lesions"`` and ``"camera"`` random
        streams determine it completely.

    Returns
    -------
    GeneratedStudy
        One OP image, its ``referable_dr`` label (DR grade 2 or more, see
        :func:`dr_grade`), one mask per lesion type and the landmarks and lesions
        as annotations.
    """
    anatomy = spec.rng("anatomy")
    laterality = "R" if anatomy.random() < 0.5 else "L"
    dilation_mm = round(float(anatomy.uniform(5.5, 8.0)), 1) if anatomy.random() < 0.5 else None
    geometry = _geometry(anatomy, spec.device.pixel_spacing_mm)
    scene, vessels = _retina(spec, anatomy, geometry)

    lesion_rng = spec.rng("lesions")
    planned = _draw_counts(lesion_rng, spec.prevalence.get("referable_dr", 0.0))
    lesions = _lesions(lesion_rng, planned, geometry, vessels)
    scene, masks, records = _apply_lesions(scene, lesions, lesion_rng, spec.lesion_contrast)
    # The grade is derived from the lesions actually drawn, not from the plan.
    counts = LesionCounts(
        **{kind: sum(r["type"] == kind for r in records) for kind in LESION_TYPES}
    )
    grade = dr_grade(counts)
    pixels = _camera(spec, spec.rng("camera"), scene, geometry)

    def column(c: float) -> float:
        return c if laterality == "R" else COLUMNS - 1 - c

    if laterality == "L":
        pixels = np.ascontiguousarray(pixels[:, ::-1])
        masks = {k: np.ascontiguousarray(m[:, ::-1]) for k, m in masks.items()}
        for record in records:
            record["box"] = mirror_box(record["box"], COLUMNS)
            record["centre_rc"][1] = round(column(record["centre_rc"][1]), 2)

    series_uid = spec.uid("series", 1)
    ds = new_instance(
        spec,
        sop_class_uid=OphthalmicPhotography8BitImageStorage,
        series_instance_uid=series_uid,
        series_number=1,
        series_description=f"Colour fundus {laterality}",
        instance_number=1,
    )
    _add_ophthalmic_modules(ds, spec, laterality, dilation_mm)
    set_pixels(ds, pixels, "RGB", 8)
    sop_uid = str(ds.SOPInstanceUID)
    # The Multi-frame module (C.7.6.6) is mandatory in the OP IOD, even for one frame.
    ds.NumberOfFrames = 1
    ds.FrameIncrementPointer = Tag(0x0008, 0x002A)  # AcquisitionDateTime

    for record in records:
        record["sop_instance_uid"] = sop_uid
    image_record = {
        "sop_instance_uid": sop_uid,
        "laterality": laterality,
        "optic_disc": {
            "centre_rc": [round(geometry.disc[0], 2), round(column(geometry.disc[1]), 2)],
            "radius_px": round(geometry.disc_radius, 2),
        },
        "fovea_rc": [round(geometry.fovea[0], 2), round(column(geometry.fovea[1]), 2)],
    }
    return GeneratedStudy(
        instances=[ds],
        labels={"referable_dr": int(grade >= 2)},
        masks={f"{sop_uid}/{kind}": masks[kind] for kind in LESION_TYPES},
        annotations={
            "images": [image_record],
            "lesions": records,
            "dr_grade": grade,
            "lesion_counts": counts.as_dict(),
        },
        extra_columns={"dr_grade": grade},
    )
