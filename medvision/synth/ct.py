"""Chest CT phantoms: an axial CT Image Storage series with pulmonary nodules.

The volume is built in Hounsfield units on the acquisition grid (160 x 160 pixels
per slice, about 160 mm of craniocaudal coverage): air and the patient table
outside the body; subcutaneous fat, chest-wall and paraspinal muscle; ribs,
costal cartilage, sternum, scapulae, clavicles and vertebrae with discs; two lungs
that taper to the apices and sit on the diaphragm domes (liver under the right,
stomach with a gas bubble under the left); a mediastinum with heart, pericardial
fat, aorta, superior vena cava, pulmonary trunk, trachea, main bronchi and
oesophagus; and pulmonary arterial and venous trees grown by space colonisation
(Runions et al. 2007) with radii from the pipe model, thick at the hila and thin
at the periphery - the realistic distractor for nodules.

A positive study holds one to three nodules of 4-30 mm, most below 12 mm so that
all the Fleischner Society size categories (below 6, 6-8 and above 8 mm; MacMahon
et al. 2017) are well represented; solid, part-solid or ground-glass; spherical to
lobulated; with partial-volume edges and wholly inside a lung, never mostly inside
a vessel (a solid nodule there reads as the vessel's blood and could not be seen,
so it could not be in a reference standard drawn by readers). Nodule contrast
scales with ``spec.lesion_contrast``. The device then blurs the volume, adds
correlated noise in HU and stores unsigned 12-bit values with a rescale intercept
of -1024 (CT Image, PS3.3 C.8.2.1).
"""

from __future__ import annotations

import copy
import itertools
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray
from pydicom import Dataset
from pydicom.sequence import Sequence
from pydicom.sr.codedict import codes
from pydicom.uid import CTImageStorage
from scipy.spatial import cKDTree

from medvision.synth.dicom_objects import code_item, new_instance, set_pixels
from medvision.synth.study import GeneratedStudy, StudySpec
from medvision.synth.textures import (
    FloatArray,
    bounding_box,
    gaussian_blur,
    logistic,
    smooth_noise,
    soft_ellipse,
    soft_inside,
)

DEFAULT_PREVALENCE: dict[str, float] = {"nodule": 0.25}
#: Pixels per slice (rows, columns).
MATRIX = (160, 160)
#: Craniocaudal coverage of the series in millimetres.
COVERAGE_MM = 160.0
#: ``RescaleIntercept``: stored value 0 is -1024 HU.
RESCALE_INTERCEPT = -1024
#: Nodule diameters are drawn in this range (millimetres).
NODULE_DIAMETER_MM = (4.0, 30.0)
#: Attenuation types of nodules and how often each is drawn (``medvision synth
#: --nodule-types`` replaces the mix, e.g. to enrich a training set in ground-glass nodules).
NODULE_TYPES: dict[str, float] = {"solid": 0.7, "part_solid": 0.15, "ground_glass": 0.15}
#: Before a nodule is painted, at most this share of its sphere may already read
#: above :data:`VESSEL_HU` (vessels); a juxtavascular nodule touches a vessel, one
#: placed mostly inside it is invisible, and another place is drawn.
MAX_VESSEL_SHARE = 0.5
#: Voxels above this (HU) count as vessel, not aerated lung, for :data:`MAX_VESSEL_SHARE`.
VESSEL_HU = -500.0

# Tissue attenuation in HU (unenhanced CT).
AIR = -1000.0
LUNG = -860.0
FAT = -100.0
MEDIASTINAL_FAT = -85.0
MUSCLE = 40.0
BLOOD = 40.0
LIVER = 58.0
CSF = 10.0
DISC = 85.0
CARTILAGE = 130.0
CANCELLOUS = 230.0
CORTICAL = 900.0

_VESSEL_CLASSES_MM = (0.9, 1.6, 2.8)  # radius boundaries of the tube renderer's classes
ATTRACTORS = 1100  # attraction points per vascular tree (arterial, venous; per lung)


@dataclass(frozen=True)
class Geometry:
    """The acquisition grid and its place in patient coordinates (LPS, PS3.3 C.7.6.2.1.1).

    Index ``(k, i, j)`` is slice ``k`` (``InstanceNumber`` ``k + 1``, most superior
    first), row ``i`` and column ``j``. Patient x grows with ``j`` (towards the
    patient's left), y with ``i`` (posterior) and z falls with ``k`` (towards the feet).
    """

    slices: int
    rows: int
    columns: int
    spacing_mm: float
    thickness_mm: float
    origin_mm: tuple[float, float, float]

    @property
    def shape(self) -> tuple[int, int, int]:
        """``(slices, rows, columns)``."""
        return (self.slices, self.rows, self.columns)

    @property
    def voxel_mm(self) -> tuple[float, float, float]:
        """Voxel size along ``(slice, row, column)``."""
        return (self.thickness_mm, self.spacing_mm, self.spacing_mm)

    def position_mm(self, slice_index: int) -> list[float]:
        """``ImagePositionPatient`` of slice ``slice_index``."""
        x, y, z = self.origin_mm
        return [x, y, round(z - slice_index * self.thickness_mm, 3)]

    def to_patient(self, zyx: tuple[float, float, float]) -> list[float]:
        """Patient coordinates ``[x, y, z]`` in mm of a (fractional) voxel index."""
        x, y, z = self.origin_mm
        return [
            x + zyx[2] * self.spacing_mm,
            y + zyx[1] * self.spacing_mm,
            z - zyx[0] * self.thickness_mm,
        ]

    def axes_mm(self) -> tuple[FloatArray, FloatArray, FloatArray]:
        """Broadcastable ``(depth, y, x)`` in mm; depth is 0 at the first slice, positive down."""
        depth = (np.arange(self.slices, dtype=np.float32) * self.thickness_mm)[:, None, None]
        y = self.origin_mm[1] + np.arange(self.rows, dtype=np.float32) * self.spacing_mm
        x = self.origin_mm[0] + np.arange(self.columns, dtype=np.float32) * self.spacing_mm
        return depth, y[None, :, None], x[None, None, :]


def geometry_for(spec: StudySpec) -> Geometry:
    """Return the grid of a study: the device's pixel spacing and slice thickness.

    The field of view is centred on the patient and the first slice lies at
    ``z = -40`` mm (near the lung apices), every later one ``thickness`` lower.
    """
    spacing = float(spec.device.pixel_spacing_mm)
    thickness = float(spec.device.options["slice_thickness_mm"])
    rows, columns = MATRIX
    slices = round(COVERAGE_MM / thickness)
    origin = (
        round(-(columns - 1) / 2 * spacing, 3),
        round(-(rows - 1) / 2 * spacing, 3),
        -40.0,
    )
    return Geometry(slices, rows, columns, spacing, thickness, origin)


@dataclass
class ChestVolume:
    """A rendered chest CT before it is written.

    Attributes
    ----------
    geometry
        The acquisition grid.
    hu
        ``(slices, rows, columns)`` Hounsfield units as acquired (blurred, noisy, clipped).
    lung
        Boolean lung mask (parenchyma and its vessels, before nodules are added).
    nodule
        ``uint8`` mask, 1 inside nodules.
    nodules
        One annotation per nodule (see :func:`generate_study`).
    """

    geometry: Geometry
    hu: FloatArray
    lung: NDArray[np.bool_]
    nodule: NDArray[np.uint8]
    nodules: list[dict[str, Any]]


def _dome(
    d: FloatArray,
    y: FloatArray,
    x: FloatArray,
    centre: tuple[float, float, float],
    radii: tuple[float, float, float],
    edge: float,
) -> FloatArray:
    """Return an ellipsoid whose edge is ``edge`` wide in every axial slice, even at its tip.

    :func:`~medvision.synth.textures.soft_ellipse` blurs the cross-sections of tall
    ellipsoids near their ends; lung apices need sharp pleura in every slice.
    """
    height = np.sqrt(np.clip(1.0 - ((d - centre[0]) / radii[0]) ** 2, 0.0, 1.0))
    rho = np.sqrt(((y - centre[1]) / radii[1]) ** 2 + ((x - centre[2]) / radii[2]) ** 2)
    mean_radius = 0.5 * (radii[1] + radii[2])
    return soft_inside((rho - height) * mean_radius, edge)


def _paint(hu: FloatArray, fraction: NDArray[np.floating], value: float | FloatArray) -> None:
    """Replace ``fraction`` of every voxel of ``hu`` by ``value`` (in place)."""
    hu += fraction * (value - hu)


def soft_capsule(
    axes: tuple[FloatArray, FloatArray, FloatArray],
    start: tuple[float, float, float],
    end: tuple[float, float, float],
    radius: float,
    edge: float,
) -> tuple[tuple[slice, slice, slice], FloatArray]:
    """Return a straight tube with round ends and a smooth edge, within its bounding box.

    Parameters
    ----------
    axes
        Broadcastable ``(depth, y, x)`` coordinate arrays (e.g. :meth:`Geometry.axes_mm`).
    start, end
        End points of the axis, ``(depth, y, x)`` in the units of ``axes``.
    radius, edge
        Tube radius and logistic edge width, same units.

    Returns
    -------
    tuple
        The index box (one slice per axis) and the fraction (1 inside) over that box.
    """
    box = []
    for axis, a, b in zip(axes, start, end, strict=True):
        values = axis.ravel()
        lo, hi = min(a, b) - radius - 4 * edge, max(a, b) + radius + 4 * edge
        index = np.flatnonzero((values >= lo) & (values <= hi))
        box.append(slice(int(index[0]), int(index[-1]) + 1) if index.size else slice(0, 0))
    boxed = tuple(
        axis[tuple(box[i] if axis.shape[i] > 1 else slice(None) for i in range(3))] for axis in axes
    )
    direction = np.subtract(end, start, dtype=np.float64)
    length2 = float(direction @ direction)
    rel = [boxed[i] - start[i] for i in range(3)]
    t = sum(rel[i] * direction[i] for i in range(3)) / max(length2, 1e-9)
    t = np.clip(t, 0.0, 1.0)
    distance2 = sum((rel[i] - t * direction[i]) ** 2 for i in range(3))
    fraction = soft_inside(np.sqrt(distance2) - radius, edge)
    return (box[0], box[1], box[2]), fraction


@dataclass(frozen=True)
class _Thorax:
    """One patient's anatomy (millimetres; depth below the first slice)."""

    half_width: float
    half_depth: float
    fat: float
    apex: float
    dome_right: float
    dome_left_lower: float
    heart_shift: float
    heart_size: float
    carina: float
    arch: float
    vertebra_phase: float
    rib_phase: float

    @staticmethod
    def draw(rng: np.random.Generator, female: bool) -> _Thorax:
        """Draw a patient's anatomy."""
        scale = float(np.clip(rng.normal(1.0, 0.04), 0.92, 1.06))
        return _Thorax(
            half_width=165.0 * scale * rng.uniform(0.96, 1.02),
            half_depth=115.0 * scale * rng.uniform(0.95, 1.04),
            fat=rng.uniform(9.0, 22.0) if female else rng.uniform(5.0, 17.0),
            apex=rng.uniform(4.0, 12.0),
            dome_right=rng.uniform(92.0, 108.0),
            dome_left_lower=rng.uniform(6.0, 16.0),
            heart_shift=rng.uniform(-6.0, 8.0),
            heart_size=rng.uniform(0.92, 1.12),
            carina=rng.uniform(58.0, 70.0),
            arch=rng.uniform(26.0, 36.0),
            vertebra_phase=rng.uniform(0.0, 22.0),
            rib_phase=rng.uniform(0.0, 22.0),
        )


@dataclass
class _Canvas:
    """The volume under construction with the masks later steps need."""

    hu: FloatArray
    lung: FloatArray
    cavity: FloatArray


def _body(g: Geometry, th: _Thorax, canvas: _Canvas) -> tuple[FloatArray, FloatArray]:
    """Paint table, body wall and thoracic cavity; return depth under the skin and of the pleura."""
    _, y3, x3 = g.axes_mm()
    y = y3[0]
    x = x3[0]
    edge = 0.25 * g.spacing_mm
    a, b = th.half_width, th.half_depth
    power = np.where(y > 0, 2.7, 2.1).astype(np.float32)
    rho = (np.abs(x / a) ** power + np.abs(y / b) ** power) ** (1.0 / power)
    radius = np.sqrt(x**2 + y**2)
    depth = radius * (1.0 / np.maximum(rho, 1e-3) - 1.0)  # distance under the skin
    posterior = np.clip(y / b, 0.0, 1.0)
    anterior = np.clip(-y / b, 0.0, 1.0)
    fat = th.fat * (1.0 + 0.35 * anterior + 0.25 * np.abs(x / a)) * (1.0 - 0.35 * posterior)
    muscle = 9.0 + 6.0 * anterior + 12.0 * posterior + 30.0 * np.exp(-((x / 48.0) ** 2)) * posterior
    wall = fat + muscle + 8.0  # ribs lie in the last 8 mm before the pleura
    hu = canvas.hu
    # Table: a curved carbon-fibre board with a foam core under the patient.
    top = b + 4.0 - 0.00035 * x**2
    below = y - top
    board = soft_inside(np.abs(below - 9.0) - 9.0, edge) * soft_inside(np.abs(x) - 200.0, edge)
    shell = board * (1.0 - soft_inside(np.abs(below - 9.0) - 6.5, edge))
    _paint(hu, (board - shell)[None], -780.0)
    _paint(hu, shell[None], 180.0)
    body = soft_inside(-depth, edge)
    _paint(hu, body[None], FAT)
    _paint(hu, soft_inside(fat - depth, edge)[None], MUSCLE)
    cavity = soft_inside(wall - depth, edge)
    _paint(hu, cavity[None], MEDIASTINAL_FAT)
    canvas.cavity = cavity[None]
    return depth, wall


def _lungs(g: Geometry, th: _Thorax, canvas: _Canvas, texture: FloatArray) -> dict[str, FloatArray]:
    """Build lungs, diaphragm and abdomen; returns the soft masks of the central organs."""
    d, y, x = g.axes_mm()
    axes = [d, y, x]
    edge = 0.25 * g.spacing_mm
    shape = g.shape
    hu = canvas.hu
    s = th.heart_size
    # Diaphragm domes (the right one higher) and the abdomen beneath them.
    dome_r = soft_ellipse(
        shape, (th.dome_right + 75.0, -28.0, -62.0), (75.0, 100.0, 98.0), edge=edge, coords=axes
    )
    dome_l_top = th.dome_right + th.dome_left_lower
    dome_l = soft_ellipse(
        shape, (dome_l_top + 70.0, -28.0, 62.0), (70.0, 96.0, 94.0), edge=edge, coords=axes
    )
    abdomen = np.maximum(dome_r, dome_l) * canvas.cavity
    # The thoracic inlet above the aortic arch is muscle, vessels and glands, not fat.
    _paint(hu, canvas.cavity * soft_inside(d - th.arch + 4.0, 4.0), 25.0)
    _paint(hu, abdomen, 40.0)
    _paint(hu, dome_r * canvas.cavity * (x < 20.0), LIVER)
    # Stomach under the left dome: fluid with gas above it (the patient is supine).
    stomach = (
        soft_ellipse(
            shape, (dome_l_top + 26.0, -12.0, 72.0), (16.0, 30.0, 28.0), edge=edge, coords=axes
        )
        * canvas.cavity
    )
    _paint(hu, stomach, 15.0)
    _paint(hu, stomach * soft_inside(y + 14.0, edge), AIR)
    # Heart in its pericardial fat, long axis pointing left and forward, on the diaphragm.
    below = np.maximum(dome_r, dome_l)
    angle = math.radians(38.0)
    cx, cy = 18.0 + th.heart_shift, -30.0 + 0.5 * th.heart_shift
    u = (x - cx) * math.cos(angle) - (y - cy) * math.sin(angle)
    v = (x - cx) * math.sin(angle) + (y - cy) * math.cos(angle)
    centre = (th.dome_right + 22.0, 0.0, 0.0)
    radii = (44.0 * s, 46.0 * s, 64.0 * s)
    rotated = [d, v, u]
    pericardium = soft_ellipse(
        shape, centre, tuple(r + 5.0 for r in radii), edge=edge, coords=rotated
    ) * (1.0 - below)
    heart = soft_ellipse(shape, centre, radii, edge=edge, coords=rotated) * (1.0 - below)
    # Lungs: domes at the apices, bounded by the chest wall, mediastinum and diaphragm.
    lung = np.zeros(shape, dtype=np.float32)
    for side in (-1.0, 1.0):
        apex = _dome(d, y, x, (th.apex + 175.0, 18.0, side * 72.0), (175.0, 108.0, 86.0), edge)
        lung = np.maximum(lung, apex)
    # Mediastinum between the lungs: narrow in front (anterior junction), wide at the
    # hila, close around the vertebral body behind, bulging round the aorta on the left.
    spine_y = 0.8 * th.half_depth - 38.0
    half_width = (
        11.0
        + 17.0 * logistic((y + 55.0) / 8.0)
        - 9.0 * logistic((y - spine_y + 12.0) / 6.0)
        + np.where(x > 0, 10.0, 0.0) * np.exp(-(((y - 30.0) / 16.0) ** 2))
    )
    mediastinum = soft_inside(np.abs(x) - half_width, edge)
    lung *= canvas.cavity * (1.0 - mediastinum) * (1.0 - below)
    lung *= 1.0 - pericardium
    organs = {"heart": heart.astype(np.float32), "pericardium": pericardium.astype(np.float32)}
    # Gravity-dependent density: the dependent (posterior) lung is denser.
    dependent = 45.0 * np.clip((y + 90.0) / 190.0, 0.0, 1.0)
    _paint(hu, lung, LUNG + dependent + 22.0 * texture)
    canvas.lung = lung
    return organs


def _mediastinum(g: Geometry, th: _Thorax, canvas: _Canvas, organs: dict[str, FloatArray]) -> None:
    """Paint heart, great vessels, airways and oesophagus."""
    d, y, x = g.axes_mm()
    axes = (d, y, x)
    edge = 0.25 * g.spacing_mm
    hu = canvas.hu
    _paint(hu, organs["pericardium"], -90.0)
    _paint(hu, organs["heart"], BLOOD)
    bottom = float(d.max()) + 20.0
    heart_top = th.dome_right - 12.0
    pa_level = th.carina + 8.0

    def tube(
        start: tuple[float, float, float],
        end: tuple[float, float, float],
        radius: float,
        value: float,
    ) -> None:
        box, fraction = soft_capsule(axes, start, end, radius, edge)
        _paint(hu[box], fraction, value)

    # Aorta: ascending, arch and descending beside the spine.
    asc = (-6.0, -24.0)
    desc = (24.0, 30.0)
    tube((th.arch, *asc), (heart_top + 8.0, *asc), 15.0, BLOOD)
    tube((th.arch, *asc), (th.arch - 4.0, 10.0, 12.0), 13.0, BLOOD)
    tube((th.arch - 4.0, 10.0, 12.0), (th.arch, *desc), 12.5, BLOOD)
    tube((th.arch, *desc), (bottom, desc[0] - 4.0, desc[1] - 8.0), 12.0, BLOOD)
    # Branches of the arch, superior vena cava and pulmonary trunk with its branches.
    for x_top, y_top in ((-14.0, -26.0), (2.0, -22.0), (16.0, -12.0)):
        tube((-20.0, y_top, x_top), (th.arch, y_top + 10.0, x_top * 0.7), 5.5, BLOOD)
    tube((-20.0, -14.0, -30.0), (heart_top + 12.0, -14.0, -30.0), 10.0, BLOOD)
    trunk = (pa_level, -42.0, 20.0)
    tube(trunk, (heart_top + 15.0, -50.0, 16.0), 14.0, BLOOD)
    for side, reach in ((-1.0, 46.0), (1.0, 48.0)):
        tube(trunk, (pa_level + 6.0, -4.0, side * reach), 10.0, BLOOD)
    # Oesophagus behind the trachea, then the airways (wall, then air).
    tube((-20.0, 28.0, 6.0), (bottom, 26.0, 12.0), 7.0, MUSCLE)
    tube((-20.0, 28.0, 6.0), (bottom, 26.0, 12.0), 2.0, AIR)
    carina = (th.carina, 14.0, 0.0)
    bronchi = ((th.carina + 16.0, 8.0, -44.0), (th.carina + 24.0, 8.0, 46.0))
    for radius, value in ((10.5, MUSCLE), (8.8, AIR)):
        tube((-20.0, 14.0, 0.0), carina, radius, value)
    for radius, value in ((7.5, MUSCLE), (6.0, AIR)):
        for end in bronchi:
            tube(carina, end, radius, value)


def _bones(
    g: Geometry, th: _Thorax, canvas: _Canvas, skin_depth: FloatArray, wall: FloatArray
) -> None:
    """Paint vertebrae, ribs, costal cartilage, sternum, scapulae and clavicles."""
    d, y, x = g.axes_mm()
    axes = (d, y, x)
    edge = 0.25 * g.spacing_mm
    hu = canvas.hu
    y2, x2 = y[0], x[0]
    period = 22.0
    # Vertebra: body with cortex and discs, canal, arch, spinous and transverse processes.
    body_y = 0.8 * th.half_depth - 38.0
    phase = np.mod(d + th.vertebra_phase, period)
    disc = soft_inside(np.abs(phase - 2.5) - 2.5, 0.25 * g.thickness_mm)
    body = soft_ellipse(
        (g.rows, g.columns), (body_y, 0.0), (15.0, 18.0), edge=edge, coords=[y2, x2]
    )
    core = soft_ellipse(
        (g.rows, g.columns), (body_y, 0.0), (12.5, 15.5), edge=edge, coords=[y2, x2]
    )
    value = CANCELLOUS + (CORTICAL - CANCELLOUS) * (body - core)
    _paint(hu, body[None], value[None] + disc * (DISC - value[None]))
    canal_y = body_y + 23.0
    arch = soft_ellipse(
        (g.rows, g.columns), (canal_y + 2.0, 0.0), (12.0, 12.5), edge=edge, coords=[y2, x2]
    )
    processes = np.maximum(
        soft_ellipse(
            (g.rows, g.columns), (canal_y + 22.0, 0.0), (16.0, 4.5), edge=edge, coords=[y2, x2]
        ),
        soft_ellipse((g.rows, g.columns), (canal_y, 0.0), (5.0, 34.0), edge=edge, coords=[y2, x2]),
    )
    in_arch = soft_inside(np.abs(phase - 12.0) - 7.0, 0.25 * g.thickness_mm)
    _paint(hu, in_arch * np.maximum(arch, processes)[None], 520.0)
    canal = soft_ellipse(
        (g.rows, g.columns), (canal_y, 0.0), (7.5, 8.0), edge=edge, coords=[y2, x2]
    )
    _paint(hu, canal[None], CSF)
    # Ribs: oblique bony bands just outside the pleura, lower anteriorly; the
    # anterior ends are costal cartilage joining the sternum.
    angle = np.arctan2(np.abs(x2), y2)  # 0 at the spine, pi at the sternum
    radial = (skin_depth - (wall - 4.0)) / 3.6
    drop = 4.0 * period * (angle / math.pi) ** 1.2
    offset = np.mod(d - drop[None] - th.rib_phase, period) - period / 2.0
    q = np.sqrt(radial[None] ** 2 + (offset / 4.0) ** 2)
    rib = soft_inside((q - 1.0) * 3.6, edge)
    bony = soft_inside(angle - 0.80 * math.pi, 0.02) * soft_inside(0.17 * math.pi - angle, 0.02)
    cartilage = soft_inside(angle - 0.93 * math.pi, 0.02) * (1.0 - bony)
    rib_value = CANCELLOUS + (CORTICAL - CANCELLOUS) * np.clip((q - 0.45) / 0.3, 0.0, 1.0)
    _paint(hu, rib * bony[None], rib_value)
    _paint(hu, rib * cartilage[None], CARTILAGE)
    # Sternum (manubrium wider at the top).
    front = -th.half_depth + float(np.min(wall[:, g.columns // 2]))
    sternum_y = front - 5.0
    depth_top = d[:, 0, 0]
    sternum_half = np.where(depth_top < th.arch + 10.0, 24.0, 15.0)[:, None, None]
    sternum = soft_inside(np.abs(x) - sternum_half, edge) * soft_inside(
        np.abs(y - sternum_y) - 5.5, edge
    )
    sternum = sternum * soft_inside(depth_top - (th.dome_right + 35.0), 1.0)[:, None, None]
    cortex = 1.0 - soft_inside(np.abs(y - sternum_y) - 3.5, edge)
    _paint(hu, sternum, CANCELLOUS + 0.6 * (CORTICAL - CANCELLOUS) * cortex)
    # Scapulae: thin plates behind the posterolateral ribs in the upper chest.
    for side in (-1.0, 1.0):
        cx, cy = side * 0.6 * th.half_width, 0.66 * th.half_depth
        tilt = side * 0.5
        u = (x2 - cx) * math.cos(tilt) - (y2 - cy) * math.sin(tilt)
        v = (x2 - cx) * math.sin(tilt) + (y2 - cy) * math.cos(tilt)
        plate = soft_ellipse((g.rows, g.columns), (0.0, 0.0), (3.0, 36.0), edge=edge, coords=[v, u])
        extent = soft_inside(depth_top - (th.dome_right - 15.0), 4.0)[:, None, None]
        _paint(hu, plate[None] * extent, 600.0)
        box, fraction = soft_capsule(
            axes,
            (th.apex - 2.0, front + 4.0, side * 16.0),
            (th.apex - 14.0, front + 30.0, side * 125.0),
            7.0,
            edge,
        )
        _paint(hu[box], fraction, 650.0)


def _grow_trees(
    rng: np.random.Generator,
    roots: NDArray[np.float64],
    attractors: list[NDArray[np.float64]],
    step: float = 4.0,
    kill: float = 5.0,
    iterations: int = 70,
) -> tuple[NDArray[np.float64], NDArray[np.int64], NDArray[np.int64]]:
    """Grow branching trees towards attraction points (space colonisation).

    Trees are grown together: each tree lives in its own far-away copy of space,
    so one k-d tree serves them all.

    Returns
    -------
    tuple
        Node positions ``(n, 3)``, the parent of each node (-1 for roots) and its tree.
    """
    offset = np.array([1.0e5, 0.0, 0.0])
    targets = np.concatenate([a + t * offset for t, a in enumerate(attractors)])
    nodes = np.asarray(roots, dtype=np.float64) + np.arange(len(roots))[:, None] * offset
    parents = np.full(len(nodes), -1, dtype=np.int64)
    alive = np.ones(len(targets), dtype=bool)
    for _ in range(iterations):
        live = targets[alive]
        if live.shape[0] == 0:
            break
        _, nearest = cKDTree(nodes).query(live)
        pull = live - nodes[nearest]
        pull /= np.maximum(np.linalg.norm(pull, axis=1, keepdims=True), 1e-9)
        growing = np.unique(nearest)
        slot = np.searchsorted(growing, nearest)
        summed = [np.bincount(slot, pull[:, axis], growing.size) for axis in range(3)]
        direction = np.stack(summed, axis=1).astype(np.float64)
        direction += 0.15 * rng.standard_normal(direction.shape)
        norm = np.linalg.norm(direction, axis=1)
        keep = norm > 0.3
        growing = growing[keep]
        if growing.size == 0:
            break
        new = nodes[growing] + step * direction[keep] / norm[keep, None]
        nodes = np.concatenate([nodes, new])
        parents = np.concatenate([parents, growing])
        hit = cKDTree(new).query(live, distance_upper_bound=kill)[0] < np.inf
        alive[np.flatnonzero(alive)[hit]] = False
    tree = np.floor(nodes[:, 0] / offset[0] + 0.5).astype(np.int64)
    nodes[:, 0] -= tree * offset[0]
    return nodes, parents, tree


def _pipe_radii(parents: NDArray[np.int64], leaf: float, exponent: float = 2.7) -> list[float]:
    """Radii by the pipe model (Murray's law): ``r_parent**k = sum(r_child**k)``."""
    n = len(parents)
    flow = [0.0] * n
    has_child = [False] * n
    for p in parents:
        if p >= 0:
            has_child[int(p)] = True
    for i in range(n - 1, -1, -1):
        if not has_child[i]:
            flow[i] = leaf**exponent
        p = int(parents[i])
        if p >= 0:
            flow[p] += flow[i]
    return [f ** (1.0 / exponent) for f in flow]


def render_tubes(
    g: Geometry,
    starts: NDArray[np.float64],
    ends: NDArray[np.float64],
    radii: NDArray[np.float64],
) -> FloatArray:
    """Volume fraction of many thin tubes (vessels), with partial-volume averaging.

    Each segment is sampled finely, splatted trilinearly with weight equal to the
    tube volume it stands for, and blurred with a Gaussian whose width matches
    its radius class (a line blurred by ``sigma = r / sqrt(2)`` peaks at 1).

    Parameters
    ----------
    g
        The grid.
    starts, ends
        ``(n, 3)`` segment end points, ``(depth, y, x)`` in mm.
    radii
        ``(n,)`` tube radii in mm.
    """
    voxel = np.asarray(g.voxel_mm)
    origin = np.array([0.0, g.origin_mm[1], g.origin_mm[0]])
    lengths = np.linalg.norm(ends - starts, axis=1)
    counts = np.maximum(1, np.ceil(lengths / (0.4 * g.spacing_mm))).astype(np.int64)
    owner = np.repeat(np.arange(len(starts)), counts)
    first = np.cumsum(counts) - counts
    t = (np.arange(owner.size) - first[owner] + 0.5) / counts[owner]
    points = starts[owner] + t[:, None] * (ends - starts)[owner]
    weights = math.pi * radii[owner] ** 2 * (lengths / counts)[owner] / float(np.prod(voxel))
    index = (points - origin) / voxel
    total = np.zeros(g.shape, dtype=np.float32)
    bounds = [0.0, *_VESSEL_CLASSES_MM, np.inf]
    for lo, hi in itertools.pairwise(bounds):
        chosen = (radii[owner] >= lo) & (radii[owner] < hi)
        if not chosen.any():
            continue
        typical = float(np.median(radii[owner][chosen]))
        sigma = [max(typical / math.sqrt(2.0), 0.45 * g.spacing_mm) / v for v in voxel]
        # Work in the box around the points (plus the filter's reach) only.
        margin = np.ceil(3.0 * np.asarray(sigma)).astype(np.int64) + 2
        first_voxel = np.maximum(np.floor(index[chosen].min(axis=0)).astype(np.int64) - margin, 0)
        stop = np.minimum(np.ceil(index[chosen].max(axis=0)).astype(np.int64) + margin + 1, g.shape)
        if np.any(stop <= first_voxel):
            continue
        box = tuple(slice(int(a), int(b)) for a, b in zip(first_voxel, stop, strict=True))
        shape = (
            int(stop[0] - first_voxel[0]),
            int(stop[1] - first_voxel[1]),
            int(stop[2] - first_voxel[2]),
        )
        splat = _splat(shape, index[chosen] - first_voxel, weights[chosen])
        total[box] += gaussian_blur(splat, sigma, truncate=3.0)
    return np.clip(total, 0.0, 1.0)


def _splat(
    shape: tuple[int, int, int], index: NDArray[np.float64], weights: NDArray[np.float64]
) -> FloatArray:
    """Trilinear splat of weighted points (fractional voxel indices) into a volume."""
    base = np.floor(index).astype(np.int64)
    frac = index - base
    corners = np.array([[(c >> axis) & 1 for axis in range(3)] for c in range(8)])
    idx = (base[None] + corners[:, None, :]).reshape(-1, 3)
    w = np.prod(np.where(corners[:, None, :] == 1, frac[None], 1.0 - frac[None]), axis=2)
    w = (w * weights[None]).ravel()
    ok = np.all((idx >= 0) & (idx < np.asarray(shape)), axis=1)
    flat = np.bincount(np.ravel_multi_index(idx[ok].T, shape), w[ok], int(np.prod(shape)))
    return flat.reshape(shape).astype(np.float32)


def _vessels(g: Geometry, th: _Thorax, canvas: _Canvas, rng: np.random.Generator) -> None:
    """Grow and paint the pulmonary arterial and venous trees of both lungs."""
    lung = canvas.lung > 0.5
    candidates = np.argwhere(lung).astype(np.float64)
    voxel = np.asarray(g.voxel_mm)
    origin = np.array([0.0, g.origin_mm[1], g.origin_mm[0]])
    roots = []
    attractors = []
    for side in (-1.0, 1.0):
        on_side = candidates[(candidates[:, 2] * g.spacing_mm + origin[2]) * side > 0]
        hilum = th.carina + 14.0
        for root in ((hilum, -4.0, side * 44.0), (th.dome_right + 8.0, 14.0, side * 36.0)):
            chosen = on_side[
                rng.choice(len(on_side), size=min(len(on_side), ATTRACTORS), replace=False)
            ]
            jitter = rng.uniform(-0.5, 0.5, chosen.shape)
            attractors.append((chosen + jitter) * voxel + origin)
            roots.append(root)
    nodes, parents, _ = _grow_trees(rng, np.asarray(roots), attractors)
    radii = np.asarray(_pipe_radii(parents, leaf=rng.uniform(0.7, 0.9), exponent=2.6))
    child = np.flatnonzero(parents >= 0)
    fraction = render_tubes(g, nodes[parents[child]], nodes[child], np.minimum(radii[child], 7.0))
    _paint(canvas.hu, fraction * canvas.cavity, BLOOD)


def _draw_nodules(
    g: Geometry,
    canvas: _Canvas,
    rng: np.random.Generator,
    contrast: float,
    types: dict[str, float] | None = None,
) -> tuple[NDArray[np.uint8], list[dict[str, Any]]]:
    """Add one to three nodules inside the lungs; returns their mask and annotations.

    ``types`` weighs the nodule types (:data:`NODULE_TYPES` when ``None``; types
    not named are not drawn).
    """
    mix = NODULE_TYPES if types is None else {t: types.get(t, 0.0) for t in NODULE_TYPES}
    weights = np.array(list(mix.values()), dtype=np.float64)
    lung = canvas.lung > 0.5
    mask = np.zeros(g.shape, dtype=np.uint8)
    found: list[dict[str, Any]] = []
    voxel = np.asarray(g.voxel_mm)
    candidates = np.argwhere(lung)
    count = int(rng.choice([1, 2, 3], p=[0.6, 0.28, 0.12]))
    for _ in range(count):
        diameter = float(np.clip(np.exp(rng.normal(math.log(7.5), 0.5)), *NODULE_DIAMETER_MM))
        kind = str(rng.choice(list(mix), p=weights if types is None else weights / weights.sum()))
        radius = diameter / 2.0
        reach = 1.2 * radius + 2.0
        half = np.ceil(reach / voxel).astype(int) + 1
        for _attempt in range(200):
            centre_index = candidates[int(rng.integers(len(candidates)))]
            centre = centre_index + rng.uniform(-0.5, 0.5, 3)
            lo = np.floor(centre).astype(int) - half
            hi = np.floor(centre).astype(int) + half + 1
            if np.any(lo < 0) or np.any(hi > np.asarray(g.shape)):
                continue
            box = tuple(slice(int(a), int(b)) for a, b in zip(lo, hi, strict=True))
            local = [
                ((np.arange(a, b) - c) * v).reshape([-1 if i == k else 1 for k in range(3)])
                for i, (a, b, c, v) in enumerate(zip(lo, hi, centre, voxel, strict=True))
            ]
            distance = np.sqrt(local[0] ** 2 + local[1] ** 2 + local[2] ** 2)
            ball = distance <= reach
            clear = all(
                np.linalg.norm((centre - np.asarray(n["centre_voxel_zyx"])) * voxel)
                > reach + n["diameter_mm"] / 2.0 + 5.0
                for n in found
            )
            sphere = distance <= radius
            hidden = float(np.mean(canvas.hu[box][sphere] > VESSEL_HU)) if sphere.any() else 0.0
            if clear and lung[box][ball].all() and hidden <= MAX_VESSEL_SHARE:
                break
        else:
            continue
        edge = 0.25 * g.spacing_mm
        axes = [local[0], local[1], local[2]]
        shape = tuple(int(b - a) for a, b in zip(lo, hi, strict=True))
        stretch = rng.uniform(0.88, 1.12, 3)
        fraction = soft_ellipse(
            shape, (0.0, 0.0, 0.0), tuple(radius * stretch), edge=edge, coords=axes
        )
        lobes = int(rng.integers(0, 4)) if diameter >= 7.0 else 0
        for _lobe in range(lobes):
            direction = rng.standard_normal(3)
            direction /= np.linalg.norm(direction)
            lobe = soft_ellipse(
                shape, tuple(0.55 * radius * direction), (0.5 * radius,) * 3, edge=edge, coords=axes
            )
            fraction = np.maximum(fraction, lobe)
        solid = rng.uniform(0.0, 50.0)
        if kind == "solid":
            target: FloatArray | float = solid
        else:
            glass = rng.uniform(-500.0, -300.0)
            target = glass + 25.0 * rng.standard_normal(shape).astype(np.float32)
            if kind == "part_solid":
                core = soft_ellipse(
                    shape,
                    (0.0, 0.0, 0.0),
                    (radius * rng.uniform(0.3, 0.5),) * 3,
                    edge=edge,
                    coords=axes,
                )
                target = target + core * (solid - target)
        _paint(canvas.hu[box], min(contrast, 1.5) * fraction, target)
        inside = (fraction > 0.5) & lung[box]
        if not inside.any():
            # A nodule near 4 mm centred between the voxels of a coarse grid (3 mm
            # slices) fills no voxel by half; it is still painted, so its mask is
            # the lung voxel it fills most, never none.
            inside[np.unravel_index(np.argmax(np.where(lung[box], fraction, -1.0)), shape)] = True
        mask[box] |= inside.astype(np.uint8)
        nodule_box = bounding_box(inside.astype(np.uint8))
        assert nodule_box is not None
        box_zyx = [nodule_box[i] + int(lo[i % 3]) for i in range(6)]
        centre_zyx = (float(centre[0]), float(centre[1]), float(centre[2]))
        found.append(
            {
                "centre_voxel_zyx": [round(c, 2) for c in centre_zyx],
                "centre_mm_xyz": [round(c, 2) for c in g.to_patient(centre_zyx)],
                "diameter_mm": round(diameter, 1),
                "type": kind,
                "box_zyx": box_zyx,
            }
        )
    return mask, found


def render_volume(spec: StudySpec) -> ChestVolume:
    """Render the chest CT of ``spec`` in HU with its lung and nodule ground truth.

    Anatomy, vessels, nodules and noise use separate random streams, so a study's
    anatomy is unchanged when only its nodules differ.
    """
    g = geometry_for(spec)
    anatomy = spec.rng("anatomy")
    th = _Thorax.draw(anatomy, spec.patient.sex == "F")
    texture = smooth_noise(anatomy, g.shape, 1.5)
    canvas = _Canvas(
        np.full(g.shape, AIR, dtype=np.float32), np.zeros(0, np.float32), np.zeros(0, np.float32)
    )
    skin_depth, wall = _body(g, th, canvas)
    organs = _lungs(g, th, canvas, texture)
    _vessels(g, th, canvas, spec.rng("vessels"))
    _mediastinum(g, th, canvas, organs)
    soft = (canvas.hu > -200.0) & (canvas.hu < 150.0)
    canvas.hu += soft * 6.0 * texture
    _bones(g, th, canvas, skin_depth, wall)
    lung_mask = canvas.lung > 0.5
    findings = spec.rng("nodules")
    positive = findings.random() < spec.prevalence.get("nodule", 0.0)
    if positive:
        nodule, nodules = _draw_nodules(
            g, canvas, findings, spec.lesion_contrast, spec.nodule_types
        )
    else:
        nodule, nodules = np.zeros(g.shape, dtype=np.uint8), []
    hu = _acquire(spec, g, canvas.hu)
    return ChestVolume(g, hu, lung_mask, nodule, nodules)


def _acquire(spec: StudySpec, g: Geometry, hu: FloatArray) -> FloatArray:
    """Apply the device: Gaussian blur, correlated noise in HU, then clip to 12 bits."""
    device = spec.device
    sigma = [device.blur_mm / v for v in g.voxel_mm]
    blurred = gaussian_blur(hu, sigma, truncate=3.0)
    noise = smooth_noise(spec.rng("noise"), g.shape, 0.6)
    top = 2**device.bits_stored - 1 + RESCALE_INTERCEPT
    return np.clip(blurred + device.noise * noise, RESCALE_INTERCEPT, top).astype(np.float32)


def _dose(spec: StudySpec) -> tuple[float, float]:
    """Tube current-time product (mAs) and CTDIvol (mGy) that give the device's noise."""
    relative = (12.0 / spec.device.noise) ** 2
    return round(180.0 * relative, 1), round(9.0 * relative, 2)


def _series_attributes(spec: StudySpec, g: Geometry) -> Dataset:
    """Return the attributes every slice shares, sequences excepted.

    General Series, Frame of Reference, Image Plane, General Acquisition, CT Image
    and VOI LUT modules (PS3.3 C.7.3.1, C.7.4.1, C.7.6.2, C.7.10.1, C.8.2.1, C.11.2).
    """
    device = spec.device
    mas, ctdi = _dose(spec)
    ds = Dataset()
    ds.BodyPartExamined = "CHEST"
    ds.PatientPosition = "HFS"
    ds.ProtocolName = "Chest low dose" if device.noise > 30 else "Chest routine"
    ds.FrameOfReferenceUID = spec.uid("frame-of-reference")
    ds.PositionReferenceIndicator = ""
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ds.PixelSpacing = [g.spacing_mm, g.spacing_mm]
    ds.SliceThickness = g.thickness_mm
    ds.SpacingBetweenSlices = g.thickness_mm
    ds.AcquisitionNumber = 1
    ds.AcquisitionDate = spec.acquired.strftime("%Y%m%d")
    ds.AcquisitionTime = spec.acquired.strftime("%H%M%S")
    ds.KVP = 120
    ds.ScanOptions = "HELICAL"
    ds.DataCollectionDiameter = 500
    ds.ReconstructionDiameter = round(g.columns * g.spacing_mm, 1)
    ds.DistanceSourceToDetector = 1040
    ds.DistanceSourceToPatient = 570
    ds.GantryDetectorTilt = 0
    ds.TableHeight = 160
    ds.RotationDirection = "CW"
    ds.ExposureTime = 500
    ds.XRayTubeCurrent = round(mas / 0.5)
    ds.Exposure = round(mas)
    ds.FilterType = "BODY"
    ds.GeneratorPower = round(120 * mas / 0.5 / 1000)
    ds.FocalSpots = [1.2]
    ds.ConvolutionKernel = _kernel(spec)
    ds.RevolutionTime = 0.5
    ds.SingleCollimationWidth = 0.625
    ds.TotalCollimationWidth = 40.0
    ds.TableSpeed = 80.0
    ds.TableFeedPerRotation = 40.0
    ds.SpiralPitchFactor = 1.0
    ds.CTDIvol = ctdi
    ds.RescaleIntercept = RESCALE_INTERCEPT
    ds.RescaleSlope = 1
    ds.RescaleType = "HU"
    ds.WindowCenter = [-600, 40]
    ds.WindowWidth = [1500, 400]
    ds.WindowCenterWidthExplanation = ["LUNG", "MEDIASTINUM"]
    ds.LossyImageCompression = "00"
    return ds


def _kernel(spec: StudySpec) -> str:
    """``ConvolutionKernel``: sharp devices reconstruct with a lung kernel."""
    return "LUNG-SHARP" if spec.device.blur_mm < 1.0 else "STANDARD"


def _slices(spec: StudySpec, volume: ChestVolume) -> list[Dataset]:
    """Build one CT Image object per slice (CT Image IOD, PS3.3 A.3)."""
    g = volume.geometry
    stored = np.rint(volume.hu - RESCALE_INTERCEPT).astype(np.uint16)
    shared = _series_attributes(spec, g)
    series_uid = spec.uid("series", 2)
    description = f"Chest {g.thickness_mm:g} mm {_kernel(spec).lower()}"
    instances = []
    for k in range(g.slices):
        ds = new_instance(
            spec,
            sop_class_uid=CTImageStorage,
            series_instance_uid=series_uid,
            series_number=2,
            series_description=description,
            instance_number=k + 1,
            image_type=("ORIGINAL", "PRIMARY", "AXIAL"),
        )
        for element in shared:
            ds.add(copy.copy(element))
        position = g.position_mm(k)
        ds.ImagePositionPatient = position
        ds.SliceLocation = position[2]
        ds.AnatomicRegionSequence = Sequence([code_item(codes.SCT.Chest)])
        ds.CTDIPhantomTypeCodeSequence = Sequence([code_item(codes.DCM.IECBodyDosimetryPhantom)])
        set_pixels(ds, np.ascontiguousarray(stored[k]), "MONOCHROME2", spec.device.bits_stored)
        instances.append(ds)
    return instances


def generate_study(spec: StudySpec) -> GeneratedStudy:
    """Make one chest CT study (one axial series) with its ground truth.

    Parameters
    ----------
    spec
        The study to make.

    Returns
    -------
    GeneratedStudy
        The slices in ``InstanceNumber`` order; the ``nodule`` label; the nodule mask
        under ``"<SeriesInstanceUID>/nodule"`` as ``(slices, rows, columns)``; the
        series geometry and per nodule its centre (voxel ``zyx`` and patient
        ``xyz`` mm), diameter, type (``solid``, ``part_solid``, ``ground_glass``)
        and inclusive box ``[z0, y0, x0, z1, y1, x1]``; and ``largest_nodule_mm``
        (0 when there is none).
    """
    volume = render_volume(spec)
    g = volume.geometry
    instances = _slices(spec, volume)
    series_uid = str(instances[0].SeriesInstanceUID)
    largest = max((n["diameter_mm"] for n in volume.nodules), default=0.0)
    annotations = {
        "series": {
            "series_instance_uid": series_uid,
            "slices": g.slices,
            "rows": g.rows,
            "columns": g.columns,
            "pixel_spacing_mm": g.spacing_mm,
            "slice_thickness_mm": g.thickness_mm,
            "origin_mm": g.position_mm(0),
        },
        "nodules": volume.nodules,
    }
    return GeneratedStudy(
        instances=instances,
        labels={"nodule": int(bool(volume.nodules))},
        masks={f"{series_uid}/nodule": volume.nodule},
        annotations=annotations,
        extra_columns={"largest_nodule_mm": f"{largest:.1f}"},
    )
