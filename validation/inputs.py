"""Join a predictions CSV with a labelled manifest for one protocol; report every mismatch.

The predictions CSV is ``medvision predict``'s format (``docs/predictions.md``), or
another vendor's in the same columns: ``study_instance_uid, finding, probability,
threshold, flagged`` (site, device and demographics are taken from the manifest,
the reference). Only rows of the protocol's finding take part. Nothing is dropped
silently: each problem is an :class:`InputProblem` saying which rows (1-based data
rows of the CSV, or manifest StudyInstanceUIDs) and what was done.

============================  ===================================================
problem                       what is done
============================  ===================================================
``unknown_finding``           rows naming a finding no modality has: ignored
``bad_value``                 rows with a probability that is not a number in
                              [0, 1], a bad threshold or a flagged other than 0/1:
                              ignored
``conflicting_duplicates``    several rows for one study that disagree: all
                              ignored (the study counts as not analysed)
``duplicate_rows``            several identical rows for one study: counted once
``not_in_manifest``           predictions for studies the manifest lacks: ignored
``not_analysed``              manifest studies of the modality without a
                              prediction: excluded from the figures and counted
                              per subgroup as not analysed (ungradable)
``not_assessed``              manifest studies without a reference label for the
                              finding: excluded
============================  ===================================================

With a fixed threshold in the protocol, ``flagged`` is recomputed as ``probability
>= threshold``; with ``registry`` the CSV's own decision is used.
"""

from __future__ import annotations

import csv
import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

from medvision.data.manifest import ManifestRow, read_manifest
from medvision.modality import all_findings
from validation.protocol import FROM_REGISTRY, Protocol
from validation.subgroups import Case

#: Columns the predictions CSV must have.
REQUIRED_PREDICTION_COLUMNS: tuple[str, ...] = (
    "study_instance_uid",
    "finding",
    "probability",
    "threshold",
    "flagged",
)


class ProblemKind(StrEnum):
    """What went wrong between the predictions and the manifest (see the module docstring)."""

    UNKNOWN_FINDING = "unknown_finding"
    BAD_VALUE = "bad_value"
    CONFLICTING_DUPLICATES = "conflicting_duplicates"
    DUPLICATE_ROWS = "duplicate_rows"
    NOT_IN_MANIFEST = "not_in_manifest"
    NOT_ANALYSED = "not_analysed"
    NOT_ASSESSED = "not_assessed"


@dataclass(frozen=True)
class InputProblem:
    """One kind of mismatch: where it is and what was done about it."""

    kind: StrEnum  # ProblemKind, or validation.ct_inputs.CtProblemKind
    where: list[str]
    action: str

    def __str__(self) -> str:
        """One line: kind, count, action and the first places."""
        shown = ", ".join(self.where[:5]) + (" ..." if len(self.where) > 5 else "")
        return f"{self.kind.value} ({len(self.where)}): {self.action} [{shown}]"


@dataclass
class ValidationInputs:
    """The cases a protocol is computed on, what could not be used, and why."""

    cases: list[Case]
    not_analysed: list[ManifestRow] = field(default_factory=list)
    problems: list[InputProblem] = field(default_factory=list)
    models: list[ModelIdentity] = field(default_factory=list)
    splits: dict[str, int] = field(default_factory=dict)


#: The predictions CSV's optional columns that identify the model.
MODEL_COLUMNS: tuple[str, ...] = ("model_name", "model_version", "weights_sha256")
#: Manifest splits used to develop a model: cases from them are not independent test data.
DEVELOPMENT_SPLITS: tuple[str, ...] = ("train", "tune", "calibration")


@dataclass(frozen=True)
class ModelIdentity:
    """A model named by the predictions of the protocol's finding, and how many rows name it.

    Empty fields mean the predictions CSV does not state them (another system's
    CSV may leave the model columns out).
    """

    name: str
    version: str
    weights_sha256: str
    rows: int


def model_identities(predictions: list[dict[str, str]], finding: str) -> list[ModelIdentity]:
    """Return the distinct models the rows of ``finding`` name, most rows first."""
    counts: dict[tuple[str, str, str], int] = defaultdict(int)
    for row in predictions:
        if row.get("finding") == finding:
            name, version, weights = (str(row.get(c) or "").strip() for c in MODEL_COLUMNS)
            counts[(name, version, weights)] += 1
    ranked = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
    return [ModelIdentity(*identity, rows) for identity, rows in ranked]


class PredictionsError(ValueError):
    """A predictions file that cannot be read at all (missing columns, unreadable)."""


def _parsed(row: dict[str, str]) -> tuple[float, float, int] | None:
    try:
        probability, threshold = float(row["probability"]), float(row["threshold"])
    except ValueError:
        return None
    if not (0.0 <= probability <= 1.0 and 0.0 <= threshold <= 1.0) or math.isnan(probability):
        return None
    if row["flagged"] not in ("0", "1"):
        return None
    return probability, threshold, int(row["flagged"])


def manifest_attributes(row: ManifestRow) -> dict[str, str | int | None]:
    """Return the attributes subgroups are formed from: site, device, demographics, extras."""
    return {
        "site": row.site,
        "manufacturer": row.manufacturer,
        "manufacturer_model": row.manufacturer_model,
        "sex": row.sex,
        "age": row.age,
        "ethnicity": row.ethnicity,
        "patient_id": row.patient_id,
        **row.extra,
    }


class CsvReadError(ValueError):
    """A CSV file that cannot be read, or lacks a required column (the message says which)."""


def read_csv_rows(path: Path, required: Sequence[str]) -> list[dict[str, str]]:
    """Return the rows of a UTF-8 CSV file that has every ``required`` column.

    Raises
    ------
    CsvReadError
        If the file cannot be opened or decoded, is not CSV, or lacks a required
        column; the message (without the path) says which.
    """
    try:
        with path.open(newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle)
            missing = [c for c in required if c not in (reader.fieldnames or [])]
            if missing:
                raise CsvReadError(f"missing column(s) {', '.join(missing)}")
            return list(reader)
    except OSError as error:
        raise CsvReadError(f"cannot be read ({error.strerror})") from None
    except (UnicodeDecodeError, csv.Error) as error:
        raise CsvReadError(f"is not a UTF-8 CSV file ({error})") from None


def read_predictions(path: Path) -> list[dict[str, str]]:
    """Read a predictions CSV.

    Raises
    ------
    PredictionsError
        If it cannot be read or lacks a required column.
    """
    try:
        return read_csv_rows(path, REQUIRED_PREDICTION_COLUMNS)
    except CsvReadError as error:
        raise PredictionsError(f"{path}: {error}") from None


def join_inputs(
    predictions: list[dict[str, str]], manifest: list[ManifestRow], protocol: Protocol
) -> ValidationInputs:
    """Return the protocol's cases and every mismatch (see the module docstring)."""
    known = set(all_findings())
    found: dict[str, list[tuple[int, tuple[float, float, int]]]] = defaultdict(list)
    unknown, bad = [], []
    for number, row in enumerate(predictions, start=1):
        if row["finding"] not in known:
            unknown.append(f"row {number}")
            continue
        if row["finding"] != protocol.finding:
            continue
        values = _parsed(row)
        if values is None:
            bad.append(f"row {number}")
            continue
        found[row["study_instance_uid"]].append((number, values))
    problems: list[InputProblem] = []
    if unknown:
        problems.append(InputProblem(ProblemKind.UNKNOWN_FINDING, unknown, "ignored"))
    if bad:
        problems.append(InputProblem(ProblemKind.BAD_VALUE, bad, "ignored"))
    conflicting, duplicated = [], []
    usable: dict[str, tuple[float, float, int]] = {}
    for uid, entries in found.items():
        distinct = {values for _, values in entries}
        if len(distinct) > 1:
            conflicting.append(f"study {uid} (rows {', '.join(str(n) for n, _ in entries)})")
        else:
            if len(entries) > 1:
                duplicated.append(f"study {uid} (rows {', '.join(str(n) for n, _ in entries)})")
            usable[uid] = entries[0][1]
    if conflicting:
        problems.append(
            InputProblem(
                ProblemKind.CONFLICTING_DUPLICATES,
                conflicting,
                "all ignored; the study counts as not analysed",
            )
        )
    if duplicated:
        problems.append(InputProblem(ProblemKind.DUPLICATE_ROWS, duplicated, "counted once"))
    in_manifest = {
        row.study_instance_uid: row for row in manifest if row.modality == protocol.modality
    }
    strangers = sorted(set(usable) - set(in_manifest))
    if strangers:
        problems.append(
            InputProblem(
                ProblemKind.NOT_IN_MANIFEST, [f"study {uid}" for uid in strangers], "ignored"
            )
        )
    cases: list[Case] = []
    not_analysed: list[ManifestRow] = []
    unassessed: list[str] = []
    for uid, study in in_manifest.items():
        if protocol.finding not in study.labels:
            unassessed.append(f"study {uid}")
            continue
        if uid not in usable:
            not_analysed.append(study)
            continue
        probability, _, flagged = usable[uid]
        if protocol.threshold != FROM_REGISTRY:
            flagged = int(probability >= float(protocol.threshold))
        label = study.labels[protocol.finding]
        cases.append(Case(uid, label, probability, flagged, manifest_attributes(study)))
    if not_analysed:
        problems.append(
            InputProblem(
                ProblemKind.NOT_ANALYSED,
                [f"study {study.study_instance_uid}" for study in not_analysed],
                "excluded from the figures; counted as not analysed per subgroup",
            )
        )
    if unassessed:
        problems.append(
            InputProblem(ProblemKind.NOT_ASSESSED, unassessed, "excluded (no reference label)")
        )
    splits: dict[str, int] = defaultdict(int)
    for case in cases:
        splits[in_manifest[case.study_instance_uid].split or "unstated"] += 1
    return ValidationInputs(
        cases,
        not_analysed,
        problems,
        model_identities(predictions, protocol.finding),
        dict(sorted(splits.items())),
    )


def load_inputs(predictions: Path, manifest: Path, protocol: Protocol) -> ValidationInputs:
    """Read both files and join them (:func:`join_inputs`).

    Raises
    ------
    PredictionsError
        If the predictions cannot be read.
    medvision.data.manifest.ManifestError
        If the manifest cannot be read (its reader names the row and why).
    """
    return join_inputs(read_predictions(predictions), read_manifest(manifest), protocol)
