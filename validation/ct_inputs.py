"""Read a CT segmenter's masks and nodule candidates, in vendor-neutral formats, for validation.

Two inputs, each optional, beside the predictions CSV of a CT protocol:

- **segmentations**: a folder of DICOM Segmentation objects (SEG), one per CT
  series; medvision's (``medvision predict --dicom-out``) or another vendor's.
  The nodule segment is the one whose segmented property type is Nodule (SCT
  27925004) or whose label is ``nodule``, or the only segment; several nodule
  segments are united. A fractional SEG is read as inside where the value is at
  least 0.5. Frames a SEG omits count as empty (the standard allows leaving out
  empty frames). The mask is aligned to the source series slice by slice through
  the SOPInstanceUIDs each frame references, in InstanceNumber order.
- **detections**: a CSV of nodule candidates in the LUNA16 format (Setio et al.
  2017): ``seriesuid, coordX, coordY, coordZ, probability``, the centre in
  patient coordinates (LPS, mm) and the candidate's score. A series without a row
  has no candidate.

Nothing is dropped silently: each problem is an
:class:`~validation.inputs.InputProblem` saying which objects or rows and what was
done.

==============================  =================================================
problem                         what is done
==============================  =================================================
``unreadable_segmentation``     a file that is not readable DICOM, or a SEG that
                                cannot be decoded: ignored
``superseded_segmentation``     several SEGs of one series: the latest (content
                                date and time) is used, the others ignored
``no_nodule_segment``           a SEG without a nodule segment: ignored
``no_segmentation``             an analysed CT study with ground truth but no SEG
                                of its series: counted as predicting no nodule
                                voxel
``segmentation_mismatch``       a SEG that does not fit its series' grid: the
                                study is left out of the segmentation figures
``bad_detection``               a candidate row with a missing or non-numeric
                                value: ignored
``detection_not_in_manifest``   candidates of a series no manifest study has:
                                ignored
``no_ground_truth``             an analysed CT study without annotations or
                                masks: left out of the segmentation figures
==============================  =================================================
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

import highdicom as hd
import numpy as np
from numpy.typing import NDArray
from pydicom.sr.codedict import codes

from medvision.data.manifest import ManifestRow, resolve
from medvision.dicom.reading import DicomReadError, iter_files, read_header
from medvision.evaluation.ct_detection import (
    ScanDetections,
    annotated_series,
    load_ground_truth,
)
from medvision.inference.scoring import Location
from medvision.pipeline.predictions_csv import DETECTION_COLUMNS
from validation.inputs import CsvReadError, InputProblem, read_csv_rows

#: Value of a fractional SEG at and above which a voxel counts as inside.
FRACTIONAL_INSIDE = 0.5


class CtProblemKind(StrEnum):
    """What went wrong with the segmentations or candidates (see the module docstring)."""

    UNREADABLE_SEGMENTATION = "unreadable_segmentation"
    SUPERSEDED_SEGMENTATION = "superseded_segmentation"
    NO_NODULE_SEGMENT = "no_nodule_segment"
    NO_SEGMENTATION = "no_segmentation"
    SEGMENTATION_MISMATCH = "segmentation_mismatch"
    BAD_DETECTION = "bad_detection"
    DETECTION_NOT_IN_MANIFEST = "detection_not_in_manifest"
    NO_GROUND_TRUTH = "no_ground_truth"


class CtInputsError(ValueError):
    """A segmentations folder or detections file that cannot be used at all."""


@dataclass(frozen=True)
class SeriesGeometry:
    """A CT series' slices in InstanceNumber order and its voxel size.

    Attributes
    ----------
    series_instance_uid
        The series.
    sop_instance_uids
        Its slices' SOPInstanceUIDs, in InstanceNumber order (the masks' slice order).
    spacing_mm
        ``(slice, row, column)`` voxel size: the median distance between
        neighbouring slice positions along the slice normal, then PixelSpacing.
    """

    series_instance_uid: str
    sop_instance_uids: tuple[str, ...]
    spacing_mm: tuple[float, float, float]


def series_geometry(study_folder: Path, series_instance_uid: str) -> SeriesGeometry:
    """Return the geometry of one CT series of a study folder.

    Raises
    ------
    ValueError
        If the folder has no slice of that series or the slices lack geometry.
    """
    slices = []
    for path in iter_files(study_folder):
        try:
            header = read_header(path)
        except DicomReadError:
            continue
        if str(header.get("SeriesInstanceUID", "")) == series_instance_uid:
            slices.append(header)
    if not slices:
        raise ValueError(f"{study_folder} has no slice of series {series_instance_uid}")
    slices.sort(key=lambda s: int(s.InstanceNumber))
    try:
        orientation = np.array([float(v) for v in slices[0].ImageOrientationPatient])
        normal = np.cross(orientation[:3], orientation[3:])
        positions = np.array(
            [[float(v) for v in s.ImagePositionPatient] for s in slices], dtype=np.float64
        )
        row_spacing, column_spacing = (float(v) for v in slices[0].PixelSpacing)
    except (AttributeError, ValueError, TypeError) as error:
        raise ValueError(
            f"series {series_instance_uid}: slices lack their geometry ({error})"
        ) from None
    along = positions @ normal
    steps = np.abs(np.diff(along))
    slice_spacing = (
        float(np.median(steps)) if steps.size else float(slices[0].get("SliceThickness", 1.0))
    )
    return SeriesGeometry(
        series_instance_uid,
        tuple(str(s.SOPInstanceUID) for s in slices),
        (slice_spacing, row_spacing, column_spacing),
    )


@dataclass(frozen=True)
class SegmentationFile:
    """A SEG object of a series: where it is and when it was made."""

    path: Path
    series_instance_uid: str
    made: str  # ContentDate + ContentTime, for picking the latest


def find_segmentations(folder: Path) -> tuple[dict[str, SegmentationFile], list[InputProblem]]:
    """Return the SEG objects below ``folder`` by referenced series (latest of each), and problems.

    Files that are DICOM but not SEG (the SR and Secondary Captures that
    ``--dicom-out`` writes beside the SEGs) are passed over without a problem.

    Raises
    ------
    CtInputsError
        If ``folder`` is not a folder.
    """
    if not folder.is_dir():
        raise CtInputsError(f"--segmentations: {folder} is not a folder")
    unreadable: list[str] = []
    found: dict[str, list[SegmentationFile]] = defaultdict(list)
    for path in iter_files(folder):
        try:
            header = read_header(path)
        except DicomReadError:
            unreadable.append(str(path))
            continue
        if str(header.get("Modality", "")) != "SEG":
            continue
        try:
            series = str(header.ReferencedSeriesSequence[0].SeriesInstanceUID)
        except (AttributeError, IndexError):
            unreadable.append(f"{path} (no ReferencedSeriesSequence)")
            continue
        made = f"{header.get('ContentDate', '')}{header.get('ContentTime', '')}"
        found[series].append(SegmentationFile(path, series, made))
    problems = []
    if unreadable:
        problems.append(
            InputProblem(CtProblemKind.UNREADABLE_SEGMENTATION, sorted(unreadable), "ignored")
        )
    latest: dict[str, SegmentationFile] = {}
    superseded: list[str] = []
    for series, files in sorted(found.items()):
        files.sort(key=lambda f: (f.made, str(f.path)))
        latest[series] = files[-1]
        superseded += [f"{f.path} (series {series})" for f in files[:-1]]
    if superseded:
        problems.append(
            InputProblem(
                CtProblemKind.SUPERSEDED_SEGMENTATION,
                superseded,
                "ignored: the latest SEG of the series (content date and time) is used",
            )
        )
    return latest, problems


def _is_nodule(segment: hd.seg.SegmentDescription) -> bool:
    label = str(segment.get("SegmentLabel", "")).strip().lower()
    types = segment.get("SegmentedPropertyTypeCodeSequence", [])
    return label == "nodule" or any(str(code.CodeValue) == codes.SCT.Nodule.value for code in types)


class NoNoduleSegmentError(ValueError):
    """A SEG without a segment that can be taken for the nodules."""


def segmentation_mask(path: Path, geometry: SeriesGeometry) -> NDArray[np.uint8]:
    """Return a SEG's nodule mask on its series' grid, ``(slices, rows, columns)``.

    Raises
    ------
    NoNoduleSegmentError
        If no segment is a nodule segment and there is more than one segment.
    ValueError
        If the SEG cannot be decoded or does not fit the series.
    """
    try:
        segmentation = hd.seg.segread(path)
    except Exception as error:  # highdicom raises many kinds on a bad object
        raise ValueError(f"{path}: not a decodable SEG ({type(error).__name__}: {error})") from None
    segments = list(segmentation.SegmentSequence)
    numbers = [int(s.SegmentNumber) for s in segments if _is_nodule(s)]
    if not numbers and len(segments) == 1:
        numbers = [int(segments[0].SegmentNumber)]
    if not numbers:
        raise NoNoduleSegmentError(f"{path}: none of its {len(segments)} segments is a nodule")
    try:
        pixels = segmentation.get_pixels_by_source_instance(
            list(geometry.sop_instance_uids),
            segment_numbers=numbers,
            assert_missing_frames_are_empty=True,
        )
    except Exception as error:  # highdicom: the error depends on what is wrong
        raise ValueError(
            f"{path}: does not fit series {geometry.series_instance_uid} "
            f"({type(error).__name__}: {error})"
        ) from None
    inside = np.asarray(pixels, dtype=np.float64) >= FRACTIONAL_INSIDE
    return np.asarray(inside.any(axis=-1), dtype=np.uint8)


def read_detections(
    path: Path, known_series: Iterable[str]
) -> tuple[dict[str, list[Location]], list[InputProblem]]:
    """Return the candidates of a LUNA16-format CSV by series, and the problems found.

    Parameters
    ----------
    path
        The CSV (columns :data:`DETECTION_COLUMNS`; others are ignored).
    known_series
        The series of the manifest's studies; candidates of other series are reported.

    Raises
    ------
    CtInputsError
        If the file cannot be read or lacks a column.
    """
    try:
        rows = read_csv_rows(path, DETECTION_COLUMNS)
    except CsvReadError as error:
        raise CtInputsError(
            f"--detections: {path}: {error} (the LUNA16 format: {', '.join(DETECTION_COLUMNS)})"
        ) from None
    known = set(known_series)
    by_series: dict[str, list[Location]] = defaultdict(list)
    bad: list[str] = []
    strangers: list[str] = []
    for number, row in enumerate(rows, start=1):
        try:
            centre = (float(row["coordX"]), float(row["coordY"]), float(row["coordZ"]))
            score = float(row["probability"])
        except (TypeError, ValueError):
            bad.append(f"row {number}")
            continue
        series = str(row["seriesuid"] or "").strip()
        if not series or not all(math.isfinite(v) for v in (*centre, score)):
            bad.append(f"row {number}")
        elif series not in known:
            strangers.append(f"row {number}")
        else:
            by_series[series].append(Location(series, centre, score=score))
    problems = []
    if bad:
        problems.append(InputProblem(CtProblemKind.BAD_DETECTION, bad, "ignored"))
    if strangers:
        problems.append(InputProblem(CtProblemKind.DETECTION_NOT_IN_MANIFEST, strangers, "ignored"))
    return dict(by_series), problems


@dataclass(frozen=True)
class CtScan:
    """One analysed CT study prepared for the segmentation figures."""

    detections: ScanDetections
    spacing_mm: tuple[float, float, float]
    has_segmentation: bool
    has_detections: bool


def ct_scans(
    rows: Sequence[ManifestRow],
    manifest: Path,
    *,
    segmentations: Path | None,
    detections: Path | None,
) -> tuple[list[CtScan], list[InputProblem]]:
    """Pair each analysed CT study with its ground truth, SEG mask and candidates.

    Parameters
    ----------
    rows
        The manifest rows of the analysed CT studies (those the figures count).
    manifest
        The manifest's path (ground-truth and study paths are relative to it).
    segmentations, detections
        The folder of SEG objects and the candidates CSV; either may be ``None``
        (then every scan has an empty mask, or no candidate, and the report says
        which figures were not computed).

    Raises
    ------
    CtInputsError
        If a given input cannot be used at all.
    """
    problems: list[InputProblem] = []
    series_of: dict[str, str] = {}
    no_truth: list[str] = []
    for row in rows:
        try:
            series_of[row.study_instance_uid] = annotated_series(row, manifest)
        except ValueError:
            no_truth.append(f"study {row.study_instance_uid}")
    seg_files: dict[str, SegmentationFile] = {}
    if segmentations is not None:
        seg_files, found = find_segmentations(segmentations)
        problems += found
    candidates: dict[str, list[Location]] = {}
    if detections is not None:
        candidates, found = read_detections(detections, series_of.values())
        problems += found
    scans: list[CtScan] = []
    absent: list[str] = []
    no_segment: list[str] = []
    mismatched: list[str] = []
    for row in rows:
        uid = row.study_instance_uid
        if uid not in series_of:
            continue
        series = series_of[uid]
        try:
            truth, truth_mask = load_ground_truth(row, manifest)
            geometry = series_geometry(resolve(manifest, row.path), series)
        except ValueError as error:
            no_truth.append(f"study {uid} ({error})")
            continue
        mask = np.zeros_like(truth_mask)
        if series in seg_files:
            try:
                mask = segmentation_mask(seg_files[series].path, geometry)
            except NoNoduleSegmentError:
                no_segment.append(str(seg_files[series].path))
                absent.append(f"study {uid}")
            except ValueError as error:
                mismatched.append(f"study {uid}: {error}")
                continue
            if mask.shape != truth_mask.shape:
                mismatched.append(
                    f"study {uid}: SEG grid {mask.shape}, ground truth {truth_mask.shape}"
                )
                continue
        elif segmentations is not None:
            absent.append(f"study {uid}")
        scans.append(
            CtScan(
                ScanDetections(uid, candidates.get(series, []), truth, mask, truth_mask),
                geometry.spacing_mm,
                has_segmentation=segmentations is not None,
                has_detections=detections is not None,
            )
        )
    for kind, where, action in (
        (CtProblemKind.NO_NODULE_SEGMENT, no_segment, "ignored"),
        (CtProblemKind.NO_SEGMENTATION, absent, "counted as predicting no nodule voxel"),
        (
            CtProblemKind.SEGMENTATION_MISMATCH,
            mismatched,
            "left out of the segmentation and detection figures",
        ),
        (
            CtProblemKind.NO_GROUND_TRUTH,
            no_truth,
            "left out of the segmentation and detection figures",
        ),
    ):
        if where:
            problems.append(InputProblem(kind, where, action))
    return scans, problems
