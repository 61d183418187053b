"""The modalities medvision serves and the findings each one reports."""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from medvision.choices import parse_choice


class Modality(StrEnum):
    """The four modalities (names used on the command line and in manifests)."""

    CXR = "cxr"
    FUNDUS = "fundus"
    MAMMO = "mammo"
    CT = "ct"

    @classmethod
    def parse(cls, text: str) -> Modality:
        """Parse a modality name, with a "did you mean" hint for near misses.

        Raises
        ------
        ValueError
            If ``text`` names no modality.
        """
        return parse_choice(cls, text, "modality")


#: Per modality, the binary findings reported (manifest columns, model outputs).
FINDINGS: dict[Modality, tuple[str, ...]] = {
    Modality.CXR: ("nodule", "pleural_effusion", "pneumothorax", "cardiomegaly"),
    Modality.FUNDUS: ("referable_dr",),
    Modality.MAMMO: ("malignancy", "malignancy_left", "malignancy_right"),
    Modality.CT: ("nodule",),
}

#: Per modality and finding, the phantom masks whose union is the finding's lesion
#: (referable DR shows as any of the four retinal lesions).
LESION_MASKS: dict[Modality, dict[str, tuple[str, ...]]] = {
    Modality.CXR: {finding: (finding,) for finding in FINDINGS[Modality.CXR]},
    Modality.FUNDUS: {
        "referable_dr": ("microaneurysm", "haemorrhage", "hard_exudate", "neovascularisation")
    },
    Modality.MAMMO: {finding: ("malignancy",) for finding in FINDINGS[Modality.MAMMO]},
    Modality.CT: {"nodule": ("nodule",)},
}

#: How people read each finding's name (legends, reports); the name itself otherwise.
FINDING_NAMES: dict[str, str] = {
    "nodule": "nodule",
    "pleural_effusion": "pleural effusion",
    "pneumothorax": "pneumothorax",
    "cardiomegaly": "cardiomegaly",
    "referable_dr": "referable diabetic retinopathy",
    "malignancy": "malignancy (either breast)",
    "malignancy_left": "malignancy, left breast",
    "malignancy_right": "malignancy, right breast",
}


def finding_name(finding: str) -> str:
    """Return the readable name of a finding (:data:`FINDING_NAMES`, else the name itself)."""
    return FINDING_NAMES.get(finding, finding.replace("_", " "))


#: The four views of a screening mammogram, in medvision's order: (ImageLaterality, ViewPosition).
MAMMOGRAPHY_VIEWS: tuple[tuple[str, str], ...] = (
    ("R", "CC"),
    ("L", "CC"),
    ("R", "MLO"),
    ("L", "MLO"),
)

#: Per modality, further ground-truth columns that are not binary findings.
EXTRA_COLUMNS: dict[Modality, tuple[str, ...]] = {
    Modality.CXR: (),
    Modality.FUNDUS: ("dr_grade",),
    Modality.MAMMO: ("breast_density",),
    Modality.CT: ("largest_nodule_mm",),
}


def mammography_view_rank(ds: Any) -> int:
    """Return a mammography image's place in :data:`MAMMOGRAPHY_VIEWS` (unknown views last)."""
    key = (str(getattr(ds, "ImageLaterality", "")), str(getattr(ds, "ViewPosition", "")))
    return MAMMOGRAPHY_VIEWS.index(key) if key in MAMMOGRAPHY_VIEWS else len(MAMMOGRAPHY_VIEWS)


def all_findings() -> tuple[str, ...]:
    """Every finding name of every modality, each once, in a stable order."""
    seen: dict[str, None] = {}
    for names in FINDINGS.values():
        for name in names:
            seen.setdefault(name, None)
    return tuple(seen)
