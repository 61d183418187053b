"""A study's findings as a DICOM Comprehensive 3D SR following TID 1500 (Measurement Report).

One SR document per analysed study (written with highdicom), referencing the study's
source images as evidence. The root is TID 1500 "Imaging Measurement Report"; the
observer is the device (medvision, with the model's name). Each finding of each
model gives measurement groups (one per place the finding is shown; one without a
place when there is none):

- **finding type**: the finding's code (:data:`FINDING_CODES`: SNOMED CT where the
  DICOM standard's code tables have the concept, else the private scheme
  :data:`PRIVATE_SCHEME`, declared in the document's Coding Scheme Identification);
- **qualitative evaluation** "Presence of property" (DCM 121052): Present (SCT
  52101004) when the finding is flagged, Absent (SCT 272519000) when not; where the
  model grades the finding (the DR grade on ``referable_dr``), a second one,
  "Severity" (SCT 246112005), whose value is the grade (:data:`GRADE_CODES`, private
  scheme: the standard's code tables have no DR severity levels);
- **measurements**: the calibrated probability (DCM 122157 "Probability") and the
  threshold it was judged against (DCM 122411 "Threshold Value"), unit UCUM ``1``;
  for a CT nodule also its diameter (SCT 81827009, mm);
- **algorithm identification**: the model's name and version, and its weights'
  SHA-256 as a parameter;
- **place** (TID 1410 / 1411): a 2-D finding with a heatmap, a point at the heatmap's
  peak on its source image (SCOORD, pixel centre); a mammography finding without a
  heatmap, the scorer's point on each view; a CT nodule, a 3-D point at its centre
  in the series' frame of reference (SCOORD3D, mm). A finding with no place is an
  image-level group (TID 1501) that references the source images.

:func:`study_report` assembles the document; a re-analysis passes the documents it
supersedes, which the new one lists in its Predecessor Documents Sequence.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import highdicom as hd
import numpy as np
from pydicom import Dataset
from pydicom.sequence import Sequence as DicomSequence
from pydicom.sr.codedict import codes
from pydicom.sr.coding import Code
from pydicom.uid import generate_uid

from medvision import __version__

if TYPE_CHECKING:
    from medvision.pipeline.results import StudyResult
from medvision.explain.heatmaps import Heatmap
from medvision.grading import DR_GRADE, Grade
from medvision.inference.scoring import Location
from medvision.modality import Modality

#: The private coding scheme of findings without a code in the standard's tables.
PRIVATE_SCHEME = "99MEDVISION"
#: Coded concept of every finding medvision reports.
FINDING_CODES: dict[str, Code] = {
    "nodule": codes.SCT.Nodule,
    "pleural_effusion": codes.SCT.PleuralEffusion,
    "pneumothorax": codes.SCT.Pneumothorax,
    "cardiomegaly": codes.SCT.Cardiomegaly,
    "referable_dr": Code("RDR", PRIVATE_SCHEME, "Referable diabetic retinopathy"),
    "malignancy": Code("MAL", PRIVATE_SCHEME, "Malignancy in either breast"),
    "malignancy_left": Code("MALL", PRIVATE_SCHEME, "Malignancy in the left breast"),
    "malignancy_right": Code("MALR", PRIVATE_SCHEME, "Malignancy in the right breast"),
}
#: Per grading scale, the coded value of each grade (private scheme).
GRADE_CODES: dict[str, tuple[Code, ...]] = {
    DR_GRADE.name: tuple(
        Code(f"DRG{k}", PRIVATE_SCHEME, f"{DR_GRADE.title} {k}: {level}")
        for k, level in enumerate(DR_GRADE.levels)
    )
}
SEVERITY = codes.SCT.Severity
PRESENCE = codes.DCM.PresenceOfProperty
PRESENT = codes.SCT.Present
ABSENT = codes.SCT.Absent
PROBABILITY = codes.DCM.Probability
THRESHOLD = codes.DCM.ThresholdValue
DIAMETER = codes.SCT.Diameter
UNITY = Code("1", "UCUM", "no units")
MILLIMETRE = Code("mm", "UCUM", "millimeter")
#: SeriesDescription of the SR series (LO: at most 64 characters).
SERIES_DESCRIPTION = "AI findings (medvision) - not for primary diagnosis"
#: SeriesNumber of the SR series medvision adds to a study.
SR_SERIES_NUMBER = 9002


def _source_for_region(source: Dataset) -> hd.sr.SourceImageForRegion:
    return hd.sr.SourceImageForRegion(str(source.SOPClassUID), str(source.SOPInstanceUID))


def _planar_point(row: float, column: float, source: Dataset) -> hd.sr.ImageRegion:
    # SCOORD pixel coordinates: (column, row), (0, 0) the top left corner of the image,
    # so the centre of pixel (r, c) is (c + 0.5, r + 0.5).
    return hd.sr.ImageRegion(
        graphic_type=hd.sr.GraphicTypeValues.POINT,
        graphic_data=np.array([[column + 0.5, row + 0.5]]),
        source_image=_source_for_region(source),
    )


def _spatial_point(location: Location, frame_of_reference_uid: str) -> hd.sr.ImageRegion3D:
    return hd.sr.ImageRegion3D(
        graphic_type=hd.sr.GraphicTypeValues3D.POINT,
        graphic_data=np.array([list(location.centre)], dtype=float),
        frame_of_reference_uid=frame_of_reference_uid,
    )


def _places(
    modality: Modality,
    heatmaps: Sequence[Heatmap],
    locations: Sequence[Location],
    sources: dict[str, Dataset],
) -> list[tuple[hd.sr.ImageRegion | hd.sr.ImageRegion3D, float | None]]:
    """Return the finding's regions, each with a diameter in mm where the model measures one.

    Where the heatmaps point, except for CT with nodules: a nodule's centre in
    patient coordinates with its diameter says more than the heatmap's peak on one
    slice.
    """
    heat_points: list[tuple[hd.sr.ImageRegion | hd.sr.ImageRegion3D, float | None]] = [
        (_planar_point(*h.peak, sources[h.referenced_uid]), None)
        for h in heatmaps
        if h.referenced_uid in sources
    ]
    if heat_points and not (modality == Modality.CT and locations):
        return heat_points
    places: list[tuple[hd.sr.ImageRegion | hd.sr.ImageRegion3D, float | None]] = []
    for location in locations:
        if modality == Modality.CT:
            frame = next(
                (
                    str(s.FrameOfReferenceUID)
                    for s in sources.values()
                    if str(s.SeriesInstanceUID) == location.referenced_uid
                ),
                None,
            )
            if frame is not None and len(location.centre) == 3:
                places.append((_spatial_point(location, frame), location.diameter_mm))
        elif location.referenced_uid in sources and len(location.centre) == 2:
            row, column = location.centre
            places.append((_planar_point(row, column, sources[location.referenced_uid]), None))
    return places


def finding_groups(
    finding: str,
    probability: float,
    threshold: float,
    flagged: bool,
    algorithm: hd.sr.AlgorithmIdentification,
    places: Sequence[tuple[hd.sr.ImageRegion | hd.sr.ImageRegion3D, float | None]],
    sources: Sequence[Dataset],
    grade: Grade | None = None,
) -> list[
    hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations
    | hd.sr.MeasurementsAndQualitativeEvaluations
]:
    """Return the TID 1500 measurement groups of one finding (see the module docstring).

    Raises
    ------
    KeyError
        For a finding without a code in :data:`FINDING_CODES`.
    """
    code = FINDING_CODES[finding]
    evaluation = [hd.sr.QualitativeEvaluation(PRESENCE, PRESENT if flagged else ABSENT)]
    if grade is not None:
        evaluation.append(
            hd.sr.QualitativeEvaluation(SEVERITY, GRADE_CODES[grade.scale][grade.value])
        )

    def measurements(diameter: float | None) -> list[hd.sr.Measurement]:
        values = [
            hd.sr.Measurement(PROBABILITY, probability, UNITY),
            hd.sr.Measurement(THRESHOLD, threshold, UNITY),
        ]
        if diameter is not None:
            values.append(hd.sr.Measurement(DIAMETER, diameter, MILLIMETRE))
        return values

    if not places:
        identifier = hd.sr.TrackingIdentifier(uid=generate_uid(), identifier=f"{finding}")
        return [
            hd.sr.MeasurementsAndQualitativeEvaluations(
                tracking_identifier=identifier,
                finding_type=code,
                algorithm_id=algorithm,
                measurements=measurements(None),
                qualitative_evaluations=evaluation,
                source_images=[
                    hd.sr.SourceImageForMeasurementGroup(
                        str(source.SOPClassUID), str(source.SOPInstanceUID)
                    )
                    for source in sources
                ]
                or None,
            )
        ]
    groups: list[
        hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations
        | hd.sr.MeasurementsAndQualitativeEvaluations
    ] = []
    for number, (region, diameter) in enumerate(places, start=1):
        identifier = hd.sr.TrackingIdentifier(uid=generate_uid(), identifier=f"{finding} #{number}")
        groups.append(
            hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations(
                tracking_identifier=identifier,
                referenced_region=region,
                finding_type=code,
                algorithm_id=algorithm,
                measurements=measurements(diameter),
                qualitative_evaluations=evaluation,
            )
        )
    return groups


def _declare_private_scheme(report: Dataset) -> None:
    item = Dataset()
    item.CodingSchemeDesignator = PRIVATE_SCHEME
    item.CodingSchemeName = "medvision findings"
    item.CodingSchemeResponsibleOrganization = "medvision"
    existing = list(report.get("CodingSchemeIdentificationSequence", []))
    report.CodingSchemeIdentificationSequence = DicomSequence([*existing, item])


def study_report(
    result: StudyResult,
    sources: Sequence[Dataset],
    *,
    series_instance_uid: str,
    instance_number: int = 1,
    supersedes: Sequence[Dataset] = (),
) -> hd.sr.Comprehensive3DSR:
    """Return the TID 1500 SR document of one analysed study (see the module docstring).

    Parameters
    ----------
    result
        The study's findings (:class:`medvision.pipeline.results.StudyResult`).
    sources
        The study's source images (headers suffice): the document's evidence, and
        where points are placed.
    series_instance_uid, instance_number
        Where the document goes (:data:`SR_SERIES_NUMBER` is the series number).
    supersedes
        Earlier medvision SR documents of the same study that this one replaces.

    Raises
    ------
    ValueError
        If ``sources`` is empty or holds images of another study.
    """
    if not sources:
        raise ValueError(f"study {result.study_instance_uid}: an SR needs its source images")
    others = {str(s.StudyInstanceUID) for s in sources} - {result.study_instance_uid}
    if others:
        raise ValueError(
            f"study {result.study_instance_uid}: source images of other studies given "
            f"({', '.join(sorted(others))})"
        )
    by_uid = {str(source.SOPInstanceUID): source for source in sources}
    models = sorted({finding.model_name for finding in result.findings})
    device = hd.sr.DeviceObserverIdentifyingAttributes(
        uid=generate_uid(entropy_srcs=["medvision", *models]),
        name="medvision",
        manufacturer_name="medvision",
        model_name=", ".join(models)[:64],
    )
    context = hd.sr.ObservationContext(
        observer_device_context=hd.sr.ObserverContext(codes.DCM.Device, device)
    )
    groups: list[
        hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations
        | hd.sr.MeasurementsAndQualitativeEvaluations
    ] = []
    for finding in result.findings:
        algorithm = hd.sr.AlgorithmIdentification(
            name=finding.model_name,
            version=finding.model_version,
            parameters=[f"weights SHA-256 {finding.weights_sha256}"],
        )
        places = _places(result.modality, finding.heatmaps, finding.locations, by_uid)
        groups += finding_groups(
            finding.name,
            finding.probability,
            finding.threshold,
            finding.flagged,
            algorithm,
            places,
            sources,
            finding.grade,
        )
    procedure = (
        codes.SCT.Mammography if result.modality == Modality.MAMMO else codes.SCT.ImagingProcedure
    )
    report = hd.sr.MeasurementReport(
        observation_context=context,
        procedure_reported=procedure,
        imaging_measurements=groups,
    )
    document = hd.sr.Comprehensive3DSR(
        evidence=list(sources),
        content=report,
        series_instance_uid=series_instance_uid,
        series_number=SR_SERIES_NUMBER,
        sop_instance_uid=generate_uid(),
        instance_number=instance_number,
        manufacturer="medvision",
        is_complete=True,
        is_final=False,
        is_verified=False,
        series_description=SERIES_DESCRIPTION,
        previous_versions=list(supersedes) or None,
    )
    document.SoftwareVersions = __version__
    _declare_private_scheme(document)
    return document
