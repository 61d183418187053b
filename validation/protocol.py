"""The pre-specified validation protocol: a YAML file, checked before any number is computed.

A protocol fixes, before the data are looked at, what is measured and what passes::

    name: Chest X-ray pleural effusion, multi-site standalone performance
    modality: cxr
    finding: pleural_effusion
    threshold: registry          # or a number in [0, 1]
    confidence: 0.95
    interval_method: wilson      # or clopper_pearson
    intended_use_prevalence: 0.05          # optional: PPV and NPV at this prevalence
    subgroups: [site, manufacturer_model, sex, age_band, ethnicity]
    age_bands: [18, 40, 65]                # optional: bands 18-39, 40-64, 65+
    intersections: [[site, manufacturer_model]]
    minimum_subgroup_size: 30
    cluster: patient_id                    # optional: CIs resample patients
    acceptance:
      sensitivity_lower_ci_min: 0.85
      specificity_lower_ci_min: 0.80

A CT protocol may also bound the segmenter's figures (:mod:`validation.segmentation`):
``dice_lower_ci_min``, ``detection_sensitivity_lower_ci_min`` and
``hd95_mm_upper_ci_max`` (mm; the *upper* interval limit must not exceed it), and
set ``min_nodule_diameter_mm`` (default 6) and ``max_false_positives_per_scan``
(default 1), where the detection sensitivity is read off the FROC.

Every key is checked: an unknown key is an error naming the known ones (a typo must
never silently drop a criterion), and so is an impossible value (a confidence of
1.5, a threshold outside [0, 1], a subgroup column the manifest cannot have, an
age band that does not increase). :func:`load_protocol` reports all problems of a
file at once, each with the key it concerns.
"""

from __future__ import annotations

import hashlib
import itertools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from medvision.modality import FINDINGS, Modality

#: Manifest columns a protocol may group by; ``age_band`` is derived from ``age``.
SUBGROUP_COLUMNS: tuple[str, ...] = (
    "site",
    "manufacturer",
    "manufacturer_model",
    "sex",
    "age_band",
    "ethnicity",
    "breast_density",
)
#: Acceptance criteria a protocol may state, each a bound on a figure's interval.
CRITERIA: tuple[str, ...] = (
    "sensitivity_lower_ci_min",
    "specificity_lower_ci_min",
    "ppv_lower_ci_min",
    "npv_lower_ci_min",
    "auroc_lower_ci_min",
    # CT segmenters only (validation.segmentation)
    "dice_lower_ci_min",
    "detection_sensitivity_lower_ci_min",
    "hd95_mm_upper_ci_max",
)
#: Criteria on the segmentation and detection figures, for CT protocols only.
SEGMENTATION_CRITERIA: tuple[str, ...] = (
    "dice_lower_ci_min",
    "detection_sensitivity_lower_ci_min",
    "hd95_mm_upper_ci_max",
)
LOWER_SUFFIX = "_lower_ci_min"
UPPER_SUFFIX = "_upper_ci_max"
REQUIRED_KEYS: tuple[str, ...] = ("name", "modality", "finding", "acceptance")
OPTIONAL_KEYS: tuple[str, ...] = (
    "threshold",
    "confidence",
    "interval_method",
    "intended_use_prevalence",
    "subgroups",
    "age_bands",
    "intersections",
    "minimum_subgroup_size",
    "cluster",
    "min_nodule_diameter_mm",
    "max_false_positives_per_scan",
)
#: Keys that only a CT protocol may state.
CT_KEYS: tuple[str, ...] = ("min_nodule_diameter_mm", "max_false_positives_per_scan")
INTERVAL_METHODS: tuple[str, ...] = ("wilson", "clopper_pearson")
#: The threshold value meaning "the model's registered operating threshold".
FROM_REGISTRY = "registry"


class ProtocolError(ValueError):
    """A protocol file that cannot be used; the message lists every problem found."""


@dataclass(frozen=True)
class Protocol:
    """A checked validation protocol (see the module docstring for each field)."""

    name: str
    modality: Modality
    finding: str
    acceptance: dict[str, float]
    threshold: float | str = FROM_REGISTRY
    confidence: float = 0.95
    interval_method: str = "wilson"
    intended_use_prevalence: float | None = None
    subgroups: tuple[str, ...] = ()
    age_bands: tuple[int, ...] = ()
    intersections: tuple[tuple[str, ...], ...] = ()
    minimum_subgroup_size: int = 30
    cluster: str | None = None
    min_nodule_diameter_mm: float = 6.0
    max_false_positives_per_scan: float = 1.0
    sha256: str = field(default="", compare=False)


def criterion_figure(criterion: str) -> tuple[str, bool]:
    """Return the figure a criterion bounds and whether it bounds the upper interval limit.

    ``sensitivity_lower_ci_min`` gives ``("sensitivity", False)``: the lower limit
    must reach the bound; ``hd95_mm_upper_ci_max`` gives ``("hd95_mm", True)``: the
    upper limit must not exceed it.
    """
    if criterion.endswith(UPPER_SUFFIX):
        return criterion.removesuffix(UPPER_SUFFIX), True
    return criterion.removesuffix(LOWER_SUFFIX), False


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _fraction(problems: list[str], key: str, value: Any, *, open_interval: bool) -> None:
    if not _is_number(value):
        problems.append(f"{key}: expected a number, got {value!r}")
    elif open_interval and not 0.0 < value < 1.0:
        problems.append(f"{key}: must be strictly between 0 and 1, got {value}")
    elif not open_interval and not 0.0 <= value <= 1.0:
        problems.append(f"{key}: must be between 0 and 1, got {value}")


def _check(raw: dict[str, Any], problems: list[str]) -> None:
    known = REQUIRED_KEYS + OPTIONAL_KEYS
    for key in raw:
        if key not in known:
            problems.append(f"unknown key '{key}' (known keys: {', '.join(known)})")
    for key in REQUIRED_KEYS:
        if key not in raw:
            problems.append(f"missing key '{key}'")
    modality = str(raw.get("modality", ""))
    if "modality" in raw and modality not in [m.value for m in Modality]:
        problems.append(f"modality: unknown modality {modality!r} (cxr, fundus, mammo or ct)")
    elif "modality" in raw and "finding" in raw:
        findings = FINDINGS[Modality(modality)]
        if raw["finding"] not in findings:
            problems.append(
                f"finding: {raw['finding']!r} is not a {modality} finding ({', '.join(findings)})"
            )
    threshold = raw.get("threshold", FROM_REGISTRY)
    if threshold != FROM_REGISTRY:
        _fraction(problems, "threshold", threshold, open_interval=False)
    _fraction(problems, "confidence", raw.get("confidence", 0.95), open_interval=True)
    if raw.get("interval_method", "wilson") not in INTERVAL_METHODS:
        problems.append(
            f"interval_method: {raw['interval_method']!r} is not one of "
            f"{', '.join(INTERVAL_METHODS)}"
        )
    if raw.get("intended_use_prevalence") is not None:
        _fraction(
            problems, "intended_use_prevalence", raw["intended_use_prevalence"], open_interval=True
        )
    subgroups = raw.get("subgroups", [])
    if not isinstance(subgroups, list):
        problems.append(f"subgroups: expected a list of columns, got {subgroups!r}")
        subgroups = []
    for column in subgroups:
        if column not in SUBGROUP_COLUMNS:
            problems.append(
                f"subgroups: unknown column {column!r} (known: {', '.join(SUBGROUP_COLUMNS)})"
            )
    bands = raw.get("age_bands", [])
    if "age_band" in subgroups and not bands:
        problems.append("age_bands: needed when subgroups include age_band")
    if bands and (
        not isinstance(bands, list)
        or not all(isinstance(b, int) and not isinstance(b, bool) and b >= 0 for b in bands)
        or any(b >= c for b, c in itertools.pairwise(bands))
    ):
        problems.append(f"age_bands: expected increasing whole years, got {bands!r}")
    for group in raw.get("intersections", []):
        if not isinstance(group, list) or len(group) < 2:
            problems.append(f"intersections: each is a list of two or more columns, got {group!r}")
        elif any(column not in subgroups for column in group):
            problems.append(f"intersections: {group!r} uses a column not among the subgroups")
    size = raw.get("minimum_subgroup_size", 30)
    if not isinstance(size, int) or isinstance(size, bool) or size < 1:
        problems.append(
            f"minimum_subgroup_size: expected a whole number of 1 or more, got {size!r}"
        )
    if raw.get("cluster") not in (None, "patient_id"):
        problems.append(f"cluster: only patient_id can cluster cases, got {raw['cluster']!r}")
    is_ct = modality == Modality.CT.value
    for key in CT_KEYS:
        if key in raw and not is_ct:
            problems.append(f"{key}: applies to CT protocols only (modality is {modality!r})")
    diameter = raw.get("min_nodule_diameter_mm", 6.0)
    if not _is_number(diameter) or diameter < 0:
        problems.append(f"min_nodule_diameter_mm: expected mm of 0 or more, got {diameter!r}")
    rate = raw.get("max_false_positives_per_scan", 1.0)
    if not _is_number(rate) or not rate > 0:
        problems.append(f"max_false_positives_per_scan: expected a positive number, got {rate!r}")
    acceptance = raw.get("acceptance", {})
    if not isinstance(acceptance, dict) or not acceptance:
        problems.append("acceptance: expected at least one criterion")
        return
    for criterion, bound in acceptance.items():
        if criterion not in CRITERIA:
            problems.append(
                f"acceptance: unknown criterion {criterion!r} (known: {', '.join(CRITERIA)})"
            )
        elif criterion in SEGMENTATION_CRITERIA and not is_ct:
            problems.append(f"acceptance: {criterion} applies to CT protocols only")
        elif criterion_figure(criterion)[0] == "hd95_mm":
            if not _is_number(bound) or not bound > 0:
                problems.append(f"acceptance.{criterion}: expected mm above 0, got {bound!r}")
        else:
            _fraction(problems, f"acceptance.{criterion}", bound, open_interval=False)


def parse_protocol(text: str, source: str = "protocol") -> Protocol:
    """Parse and check a protocol's YAML text; see the module docstring.

    Raises
    ------
    ProtocolError
        Listing every problem, one per line, each prefixed with ``source``.
    """
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise ProtocolError(f"{source}: not valid YAML ({error})") from None
    if not isinstance(raw, dict):
        raise ProtocolError(f"{source}: expected a mapping of keys to values")
    problems: list[str] = []
    _check(raw, problems)
    if problems:
        raise ProtocolError("\n".join(f"{source}: {problem}" for problem in problems))
    return Protocol(
        name=str(raw["name"]),
        modality=Modality(raw["modality"]),
        finding=str(raw["finding"]),
        acceptance={key: float(value) for key, value in raw["acceptance"].items()},
        threshold=raw.get("threshold", FROM_REGISTRY),
        confidence=float(raw.get("confidence", 0.95)),
        interval_method=str(raw.get("interval_method", "wilson")),
        intended_use_prevalence=raw.get("intended_use_prevalence"),
        subgroups=tuple(raw.get("subgroups", [])),
        age_bands=tuple(raw.get("age_bands", [])),
        intersections=tuple(tuple(group) for group in raw.get("intersections", [])),
        minimum_subgroup_size=int(raw.get("minimum_subgroup_size", 30)),
        cluster=raw.get("cluster"),
        min_nodule_diameter_mm=float(raw.get("min_nodule_diameter_mm", 6.0)),
        max_false_positives_per_scan=float(raw.get("max_false_positives_per_scan", 1.0)),
        sha256=hashlib.sha256(text.encode("utf-8")).hexdigest(),
    )


def load_protocol(path: Path) -> Protocol:
    """Read and check a protocol file (its SHA-256 goes into the report's reproducibility block).

    Raises
    ------
    ProtocolError
        If the file cannot be read or the protocol has problems (all listed).
    """
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise ProtocolError(f"{path}: cannot be read ({error.strerror})") from None
    return parse_protocol(text, str(path))
