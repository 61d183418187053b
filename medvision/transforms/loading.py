"""Load a DICOM study (and its ground-truth masks) as MONAI dictionary items.

:class:`LoadStudyd` turns ``{"study": <folder>, "study_instance_uid": <UID>}`` into
channel-first float32 :class:`~monai.data.MetaTensor` images:

- chest X-ray and fundus: one item, ``image`` of shape ``(1, rows, columns)`` or
  ``(3, rows, columns)``;
- mammography: a list of one item per view, ordered R-CC, L-CC, R-MLO, L-MLO
  (other views after them), each ``(1, rows, columns)``; MONAI's ``Compose``
  applies the later transforms to every view;
- CT: one item, ``image`` of shape ``(1, slices, rows, columns)`` with slices
  sorted along the slice normal and an affine in RAS built from the Image Plane
  module (PS3.3 C.7.6.2), so that MONAI ``Orientationd`` and ``Spacingd`` work.

The image's ``meta`` keeps what later steps need to map results back to the
source pixels (:data:`META_KEYS`). Pixel values come from
:mod:`medvision.dicom.reading`: Modality LUT or rescale (PS3.3 C.11.1), optionally
the VOI LUT or window (PS3.3 C.11.2), MONOCHROME1 inverted, compressed transfer
syntaxes decoded by pydicom.

:class:`LoadMasksd` adds the ground-truth masks of the study's NPZ file
(``ManifestRow.masks``) on the same grid, with the image's affine, so every later
spatial transform treats image and mask alike.
"""

from __future__ import annotations

import zipfile
from collections.abc import Hashable, Mapping, Sequence
from enum import StrEnum
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.config.type_definitions import KeysCollection
from monai.data.meta_tensor import MetaTensor
from monai.transforms.transform import MapTransform
from monai.utils.enums import MetaKeys, SpaceKeys
from monai.utils.misc import ImageMetaKey
from numpy.typing import NDArray
from pydicom import Dataset

from medvision.choices import parse_choice
from medvision.data.manifest import ManifestRow, resolve
from medvision.dicom.reading import (
    DICOM_MODALITIES,
    DicomReadError,
    modality_of,
    pixel_values,
    presentation_values,
    read_instance,
    scan_folder,
)
from medvision.modality import MAMMOGRAPHY_VIEWS, Modality

#: Key of the study folder in a data item.
STUDY_KEY = "study"
#: Key of the study's ``StudyInstanceUID`` in a data item.
UID_KEY = "study_instance_uid"
#: Optional keys that choose one image (chest X-ray, fundus) or one CT series.
SOP_KEY = "sop_instance_uid"
SERIES_KEY = "series_instance_uid"
#: Key of the ground-truth NPZ file in a data item.
MASKS_PATH_KEY = "masks"
#: Keys of the loaded image and mask.
IMAGE_KEY = "image"
MASK_KEY = "label"

#: Mammography views in the order they are returned (ImageLaterality, ViewPosition).
VIEW_ORDER: tuple[tuple[str, str], ...] = MAMMOGRAPHY_VIEWS

#: What :class:`LoadStudyd` puts in the image's ``meta`` besides MONAI's own keys.
META_KEYS: dict[str, str] = {
    "study_instance_uid": "StudyInstanceUID",
    "series_instance_uid": "SeriesInstanceUID",
    "sop_instance_uids": "SOPInstanceUID of each image (CT: of each slice, in array order)",
    "instance_numbers": "InstanceNumber of each image (CT: of each slice, in array order)",
    "original_shape": "spatial shape as loaded: (rows, columns) or (slices, rows, columns)",
    "pixel_spacing": "(row, column) spacing in mm; (1, 1) when the file gives none",
    "pixel_spacing_source": "PixelSpacing, ImagerPixelSpacing or none",
    "laterality": "ImageLaterality (or Laterality): R, L, B, U or empty",
    "view_position": "ViewPosition (CC, MLO, PA, AP …) or empty",
    "photometric_interpretation": "PhotometricInterpretation of the file",
    "modality": "medvision modality (cxr, fundus, mammo, ct)",
    "intensity": "physical or presentation (see Intensity)",
}

#: Image Plane attributes a CT volume needs (PS3.3 C.7.6.2, all Type 1).
GEOMETRY_TAGS: dict[str, str] = {
    "ImagePositionPatient": "(0020,0032)",
    "ImageOrientationPatient": "(0020,0037)",
    "PixelSpacing": "(0028,0030)",
}

#: Relative tolerance on CT slice spacing before slices count as unevenly spaced.
SLICE_SPACING_TOLERANCE = 0.01

#: The LPS to RAS change of patient axes (PS3.3 C.7.6.2.1.1 is LPS; MONAI works in RAS).
LPS_TO_RAS: NDArray[np.float64] = np.diag([-1.0, -1.0, 1.0, 1.0])


class StudyLoadError(DicomReadError):
    """A study that cannot be loaded; the message names the study and what is wrong.

    A :class:`~medvision.dicom.reading.DicomReadError` (and so a ``ValueError``), so
    callers that handle unreadable DICOM handle this too.
    """


class Intensity(StrEnum):
    """Which pixel values a loaded image holds.

    ``physical``: the Modality LUT or rescale only (CT in HU, fundus in 0-255 RGB),
    MONOCHROME1 inverted. ``presentation``: then also the VOI LUT or window of the
    file, scaled to ``[0, 1]`` (what a reader is shown; grayscale only).
    """

    PHYSICAL = "physical"
    PRESENTATION = "presentation"


#: Per modality, the intensity the chains load.
DEFAULT_INTENSITY: dict[Modality, Intensity] = {
    Modality.CXR: Intensity.PRESENTATION,
    Modality.FUNDUS: Intensity.PHYSICAL,
    Modality.MAMMO: Intensity.PRESENTATION,
    Modality.CT: Intensity.PHYSICAL,
}


def study_item(row: ManifestRow, manifest_path: Path) -> dict[str, Any]:
    """Return the data item of a manifest row: study folder, UID and (if any) masks file.

    Paths are strings, so that MONAI's ``list_data_collate`` can batch the items.
    """
    item: dict[str, Any] = {
        STUDY_KEY: str(resolve(manifest_path, row.path)),
        UID_KEY: row.study_instance_uid,
    }
    if row.masks is not None:
        item[MASKS_PATH_KEY] = str(resolve(manifest_path, row.masks))
    return item


def _dicom_modalities(modality: Modality) -> str:
    return "/".join(code for code, served in DICOM_MODALITIES.items() if served == modality)


def study_headers(folder: Path, study_uid: str, modality: Modality) -> list[tuple[Path, Dataset]]:
    """Return the files and headers of the study's images of ``modality`` under ``folder``.

    Objects of other modalities in the study (SR, Secondary Capture …) and CT
    localizers are left out.

    Raises
    ------
    StudyLoadError
        If no file of the study is found, or none holds an image of ``modality``.
    """
    scan = scan_folder(folder)
    entries = scan.studies.get(study_uid, [])
    if not entries:
        others = sum(len(files) for files in scan.studies.values())
        raise StudyLoadError(
            f"study {study_uid}: no DICOM file of this study under {folder} "
            f"({others} file(s) of other studies, {len(scan.rejected)} unreadable)"
        )
    images = [(path, ds) for path, ds in entries if modality_of(ds) == modality]
    if modality == Modality.CT:
        images = [(p, ds) for p, ds in images if "LOCALIZER" not in ds.get("ImageType", [])]
    if not images:
        found = sorted({str(ds.get("Modality", "?")) for _, ds in entries})
        raise StudyLoadError(
            f"study {study_uid}: no {modality.value} image (DICOM Modality "
            f"{_dicom_modalities(modality)}) among its {len(entries)} file(s); "
            f"found Modality {', '.join(found)}"
        )
    return images


def _read(path: Path, study_uid: str) -> Dataset:
    try:
        return read_instance(path)
    except DicomReadError as error:
        raise StudyLoadError(f"study {study_uid}: {error}") from None


def _values(ds: Dataset, path: Path, study_uid: str, intensity: Intensity) -> NDArray[np.float32]:
    try:
        if intensity == Intensity.PRESENTATION:
            return presentation_values(ds)
        return pixel_values(ds)
    except DicomReadError as error:
        raise StudyLoadError(f"study {study_uid}: {path}: {error}") from None


def _pixel_spacing(ds: Dataset) -> tuple[tuple[float, float], str]:
    for tag in ("PixelSpacing", "ImagerPixelSpacing"):
        value = ds.get(tag)
        if value is not None and len(value) == 2:
            return (float(value[0]), float(value[1])), tag
    return (1.0, 1.0), "none"


def _laterality(ds: Dataset) -> str:
    return str(ds.get("ImageLaterality") or ds.get("Laterality") or "").strip().upper()


def _meta(
    ds: Dataset, modality: Modality, intensity: Intensity, shape: Sequence[int], source: str
) -> dict[str, Any]:
    spacing, spacing_source = _pixel_spacing(ds)
    return {
        "study_instance_uid": str(ds.StudyInstanceUID),
        "series_instance_uid": str(ds.get("SeriesInstanceUID", "")),
        "sop_instance_uids": [str(ds.get("SOPInstanceUID", ""))],
        "instance_numbers": [int(ds.get("InstanceNumber") or 0)],
        "original_shape": list(shape),
        "pixel_spacing": list(spacing),
        "pixel_spacing_source": spacing_source,
        "laterality": _laterality(ds),
        "view_position": str(ds.get("ViewPosition", "")).strip().upper(),
        "photometric_interpretation": str(ds.get("PhotometricInterpretation", "")),
        "modality": modality.value,
        "intensity": intensity.value,
        MetaKeys.SPATIAL_SHAPE: list(shape),
        MetaKeys.SPACE: SpaceKeys.RAS,
        MetaKeys.ORIGINAL_CHANNEL_DIM: 0,
        ImageMetaKey.FILENAME_OR_OBJ: source,
    }


def _meta_tensor(
    array: NDArray[np.float32], affine: NDArray[np.float64], meta: dict[str, Any]
) -> MetaTensor:
    affine_tensor = torch.as_tensor(affine, dtype=torch.float64)
    meta[MetaKeys.ORIGINAL_AFFINE] = affine_tensor.clone()
    return MetaTensor(
        torch.from_numpy(np.ascontiguousarray(array)), affine=affine_tensor, meta=meta
    )


def load_planar_image(
    path: Path, study_uid: str, modality: Modality, intensity: Intensity
) -> MetaTensor:
    """Load one 2-D image as a ``(channels, rows, columns)`` MetaTensor.

    Its affine scales pixel indices by the pixel spacing (it carries no patient
    position: projection images have none).

    Raises
    ------
    StudyLoadError
        If the file cannot be read or its pixel data cannot be decoded.
    """
    ds = _read(path, study_uid)
    values = _values(ds, path, study_uid, intensity)
    array = values.transpose(2, 0, 1) if values.ndim == 3 else values[np.newaxis]
    meta = _meta(ds, modality, intensity, values.shape[:2], str(path))
    row_spacing, column_spacing = meta["pixel_spacing"]
    affine = np.diag([row_spacing, column_spacing, 1.0, 1.0])
    return _meta_tensor(array.astype(np.float32), affine, meta)


def _one_image(
    headers: list[tuple[Path, Dataset]], study_uid: str, modality: Modality, chosen: str | None
) -> Path:
    if chosen is not None:
        headers = [(p, ds) for p, ds in headers if str(ds.get("SOPInstanceUID")) == chosen]
        if not headers:
            raise StudyLoadError(f"study {study_uid}: no {modality.value} image {chosen}")
    if len(headers) > 1:
        uids = ", ".join(str(ds.get("SOPInstanceUID", "?")) for _, ds in headers)
        raise StudyLoadError(
            f"study {study_uid}: {len(headers)} {modality.value} images ({uids}); the "
            f"{modality.value} chain takes one image per item: choose it with '{SOP_KEY}'"
        )
    return headers[0][0]


def _view_rank(ds: Dataset) -> tuple[int, str, str, int]:
    key = (_laterality(ds), str(ds.get("ViewPosition", "")).strip().upper())
    rank = VIEW_ORDER.index(key) if key in VIEW_ORDER else len(VIEW_ORDER)
    return rank, key[0], key[1], int(ds.get("InstanceNumber") or 0)


def mammography_views(headers: list[tuple[Path, Dataset]], study_uid: str) -> list[Path]:
    """Return the files of a mammography study in R-CC, L-CC, R-MLO, L-MLO order.

    Other views (ML, XCCL …) follow, by laterality and view; repeated views keep
    their ``InstanceNumber`` order.

    Raises
    ------
    StudyLoadError
        If a view lacks ImageLaterality/Laterality (0020,0062)/(0020,0060) or
        ViewPosition (0018,5101), which the per-breast aggregation needs.
    """
    for path, ds in headers:
        if _laterality(ds) not in {"R", "L"}:
            raise StudyLoadError(
                f"study {study_uid}: {path}: ImageLaterality (0020,0062) must be R or L, "
                f"got '{_laterality(ds)}'"
            )
        if not str(ds.get("ViewPosition", "")).strip():
            raise StudyLoadError(f"study {study_uid}: {path}: missing ViewPosition (0018,5101)")
    return [path for path, ds in sorted(headers, key=lambda entry: _view_rank(entry[1]))]


def _required(ds: Dataset, path: Path, study_uid: str, keyword: str, tag: str) -> Any:
    value = ds.get(keyword)
    if value is None or value == "":
        raise StudyLoadError(
            f"study {study_uid}: {path}: missing {keyword} {tag}, which the CT volume's "
            "geometry needs (Image Plane module, PS3.3 C.7.6.2)"
        )
    return value


def _series(
    headers: list[tuple[Path, Dataset]], study_uid: str, chosen: str | None
) -> list[tuple[Path, Dataset]]:
    series: dict[str, list[tuple[Path, Dataset]]] = {}
    for path, ds in headers:
        series.setdefault(str(ds.get("SeriesInstanceUID", "")), []).append((path, ds))
    if chosen is not None:
        if chosen not in series:
            raise StudyLoadError(f"study {study_uid}: no CT series {chosen}")
        return series[chosen]
    if len(series) > 1:
        sizes = ", ".join(f"{uid} ({len(files)} slices)" for uid, files in series.items())
        raise StudyLoadError(
            f"study {study_uid}: {len(series)} CT series ({sizes}); choose one with '{SERIES_KEY}'"
        )
    return next(iter(series.values()))


def ct_geometry(
    headers: list[tuple[Path, Dataset]], study_uid: str
) -> tuple[list[int], NDArray[np.float64]]:
    """Return the slice order (sorted along the slice normal) and the RAS affine of a series.

    The affine maps array indices ``(slice, row, column)`` to RAS millimetres: the
    column and row directions are ImageOrientationPatient's row and column
    cosines scaled by PixelSpacing (column spacing, then row spacing), the slice
    step is the mean step between ImagePositionPatient of sorted slices (gantry
    tilt is kept exactly), and the origin is the first slice's position
    (PS3.3 C.7.6.2.1.1), converted from DICOM's LPS to RAS.

    Raises
    ------
    StudyLoadError
        If a slice lacks ImagePositionPatient, ImageOrientationPatient or
        PixelSpacing, the slices disagree on orientation, spacing or size, two
        slices share a position, or the slices are unevenly spaced.
    """
    positions, orientations, spacings, sizes = [], [], [], []
    for path, ds in headers:
        values = {
            keyword: [float(v) for v in _required(ds, path, study_uid, keyword, tag)]
            for keyword, tag in GEOMETRY_TAGS.items()
        }
        positions.append(values["ImagePositionPatient"])
        orientations.append(values["ImageOrientationPatient"])
        spacings.append(values["PixelSpacing"])
        sizes.append((int(ds.Rows), int(ds.Columns)))
    orientation = np.array(orientations[0])
    if not np.allclose(orientations, orientation, atol=1e-4) or len(set(sizes)) > 1:
        raise StudyLoadError(
            f"study {study_uid}: the CT slices differ in ImageOrientationPatient or size"
        )
    if not np.allclose(spacings, spacings[0], atol=1e-4):
        raise StudyLoadError(f"study {study_uid}: the CT slices differ in PixelSpacing")
    row_cosines, column_cosines = orientation[:3], orientation[3:]
    normal = np.cross(row_cosines, column_cosines)
    distances = np.array(positions) @ normal
    order = [int(i) for i in np.argsort(distances, kind="stable")]
    sorted_positions = np.array(positions)[order]
    if len(order) > 1:
        gaps = np.diff(distances[order])
        if gaps.min() <= 1e-3:
            raise StudyLoadError(f"study {study_uid}: two CT slices share one position")
        if gaps.max() - gaps.min() > SLICE_SPACING_TOLERANCE * gaps.mean():
            raise StudyLoadError(
                f"study {study_uid}: the CT slices are unevenly spaced "
                f"({gaps.min():.3g} to {gaps.max():.3g} mm); a missing slice?"
            )
        step = (sorted_positions[-1] - sorted_positions[0]) / (len(order) - 1)
    else:
        _, ds = headers[0]
        thickness = float(ds.get("SpacingBetweenSlices") or ds.get("SliceThickness") or 1.0)
        step = normal * thickness
    row_spacing, column_spacing = spacings[0]
    affine_lps = np.eye(4)
    affine_lps[:3, 0] = step
    affine_lps[:3, 1] = column_cosines * row_spacing
    affine_lps[:3, 2] = row_cosines * column_spacing
    affine_lps[:3, 3] = sorted_positions[0]
    return order, LPS_TO_RAS @ affine_lps


def load_ct_volume(
    headers: list[tuple[Path, Dataset]], study_uid: str, intensity: Intensity
) -> MetaTensor:
    """Load one CT series as a ``(1, slices, rows, columns)`` MetaTensor in HU.

    Slices are sorted along the slice normal; ``meta`` lists each slice's
    SOPInstanceUID and InstanceNumber in that order.

    Raises
    ------
    StudyLoadError
        See :func:`ct_geometry`; also for unreadable files or undecodable pixel data.
    """
    order, affine = ct_geometry(headers, study_uid)
    paths = [headers[i][0] for i in order]
    datasets = [_read(path, study_uid) for path in paths]
    volume = np.stack(
        [_values(ds, p, study_uid, intensity) for ds, p in zip(datasets, paths, strict=True)]
    )
    meta = _meta(datasets[0], Modality.CT, intensity, volume.shape, str(paths[0].parent))
    meta["sop_instance_uids"] = [str(ds.get("SOPInstanceUID", "")) for ds in datasets]
    meta["instance_numbers"] = [int(ds.get("InstanceNumber") or 0) for ds in datasets]
    return _meta_tensor(volume[np.newaxis].astype(np.float32), affine, meta)


class LoadStudyd(MapTransform):
    """Load the images of one study from its folder (see the module docstring).

    Parameters
    ----------
    modality
        The modality whose images are loaded (others in the study are ignored).
    keys
        The one key holding the study folder.
    uid_key
        Key holding the StudyInstanceUID; files of other studies are ignored.
    image_key
        Key the image is written to.
    intensity
        Which values to load (default: :data:`DEFAULT_INTENSITY` of the modality).

    Notes
    -----
    An item may name one image (``sop_instance_uid``) or one CT series
    (``series_instance_uid``); a study with several candidates and no choice is an
    error, never a silent pick.
    """

    def __init__(
        self,
        modality: Modality | str,
        keys: KeysCollection = STUDY_KEY,
        uid_key: str = UID_KEY,
        image_key: str = IMAGE_KEY,
        intensity: Intensity | str | None = None,
    ) -> None:
        super().__init__(keys)
        if len(self.keys) != 1:
            raise ValueError(f"LoadStudyd takes one study-folder key, got {self.keys}")
        self.modality = Modality.parse(str(modality))
        self.uid_key = uid_key
        self.image_key = image_key
        self.intensity = (
            DEFAULT_INTENSITY[self.modality]
            if intensity is None
            else parse_choice(Intensity, intensity, "intensity")
        )

    def __call__(self, data: Mapping[Any, Any]) -> dict[Hashable, Any] | list[dict[Hashable, Any]]:
        """Return the item with the image added, or one item per view for mammography.

        Raises
        ------
        StudyLoadError
            For a study that cannot be loaded (the message names the study).
        """
        d = dict(data)
        folder = Path(d[self.keys[0]])
        study_uid = str(d[self.uid_key])
        headers = study_headers(folder, study_uid, self.modality)
        if self.modality == Modality.CT:
            series = _series(headers, study_uid, d.get(SERIES_KEY))
            d[self.image_key] = load_ct_volume(series, study_uid, self.intensity)
            return d
        if self.modality == Modality.MAMMO:
            views = []
            for path in mammography_views(headers, study_uid):
                view = dict(d)
                view[self.image_key] = load_planar_image(
                    path, study_uid, self.modality, self.intensity
                )
                views.append(view)
            return views
        path = _one_image(headers, study_uid, self.modality, d.get(SOP_KEY))
        d[self.image_key] = load_planar_image(path, study_uid, self.modality, self.intensity)
        return d


#: A mask channel: one mask's name, or several whose union the channel is.
MaskName = str | tuple[str, ...]


def _parts(name: MaskName) -> tuple[str, ...]:
    return (name,) if isinstance(name, str) else tuple(name)


def _mask_stack(
    path: Path, study_uid: str, uid: str, names: Sequence[MaskName]
) -> NDArray[np.float32]:
    try:
        npz = np.load(path)
    except (OSError, ValueError, zipfile.BadZipFile) as error:
        raise StudyLoadError(f"study {study_uid}: masks file {path} unreadable ({error})") from None
    with npz:
        wanted = [part for name in names for part in _parts(name)]
        missing = [part for part in wanted if f"{uid}__{part}" not in npz.files]
        if missing:
            raise StudyLoadError(
                f"study {study_uid}: {path} has no mask {', '.join(missing)} for {uid}"
            )
        channels = [
            np.logical_or.reduce([np.asarray(npz[f"{uid}__{part}"]) > 0 for part in _parts(name)])
            for name in names
        ]
        return np.stack(channels).astype(np.float32)


class LoadMasksd(MapTransform):
    """Load the study's ground-truth masks onto its image's grid.

    The masks file (``ManifestRow.masks``) holds ``<UID>__<name>`` arrays: per
    SOPInstanceUID for 2-D images, per SeriesInstanceUID for CT with slices in
    InstanceNumber order; CT masks are reordered to the image's slice order. The
    mask gets one channel per name (0 or 1, float32), the image's affine and a
    copy of its meta. Put it right after :class:`LoadStudyd`, before any spatial
    transform.

    Parameters
    ----------
    names
        Mask names, one channel each, in this order; a tuple of names gives one
        channel, their union (e.g. a finding shown by any of several lesions).
    keys
        The one key holding the masks file.
    image_key, mask_key
        Keys of the loaded image and of the mask to write.
    """

    def __init__(
        self,
        names: Sequence[MaskName],
        keys: KeysCollection = MASKS_PATH_KEY,
        image_key: str = IMAGE_KEY,
        mask_key: str = MASK_KEY,
    ) -> None:
        super().__init__(keys)
        if len(self.keys) != 1 or not names:
            raise ValueError(f"LoadMasksd takes one masks-file key and mask names, got {names}")
        self.names = tuple(names)
        self.image_key = image_key
        self.mask_key = mask_key

    def __call__(self, data: Mapping[Any, Any]) -> dict[Hashable, Any]:
        """Return the item with the mask added.

        Raises
        ------
        StudyLoadError
            If the masks file is missing, unreadable, lacks a mask of the image, or
            its shape differs from the image's.
        """
        d = dict(data)
        image: MetaTensor = d[self.image_key]
        if image.applied_operations:
            raise ValueError("LoadMasksd must come before the spatial transforms of the image")
        study_uid = str(image.meta["study_instance_uid"])
        path = Path(d[self.keys[0]])
        is_volume = image.ndim == 4
        uid = image.meta["series_instance_uid" if is_volume else "sop_instance_uids"]
        uid = uid if is_volume else uid[0]
        masks = _mask_stack(path, study_uid, str(uid), self.names)
        if is_volume:
            numbers = np.asarray(image.meta["instance_numbers"])
            if masks.shape[1] == len(numbers):
                masks = masks[:, np.argsort(np.argsort(numbers, kind="stable"), kind="stable")]
        if tuple(masks.shape[1:]) != tuple(image.shape[1:]):
            raise StudyLoadError(
                f"study {study_uid}: masks of {uid} in {path} have shape "
                f"{tuple(masks.shape[1:])}, the image {tuple(image.shape[1:])}"
            )
        meta = {k: v for k, v in image.meta.items() if k != MetaKeys.AFFINE}
        mask = MetaTensor(torch.from_numpy(masks), affine=image.affine, meta=meta)
        d[self.mask_key] = mask
        return d
