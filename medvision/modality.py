"""The modalities medvision serves and the findings each one reports."""

from __future__ import annotations

from enum import StrEnum

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

#: Per modality, further ground-truth columns that are not binary findings.
EXTRA_COLUMNS: dict[Modality, tuple[str, ...]] = {
    Modality.CXR: (),
    Modality.FUNDUS: ("dr_grade",),
    Modality.MAMMO: ("breast_density",),
    Modality.CT: ("largest_nodule_mm",),
}


def all_findings() -> tuple[str, ...]:
    """Every finding name of every modality, each once, in a stable order."""
    seen: dict[str, None] = {}
    for names in FINDINGS.values():
        for name in names:
            seen.setdefault(name, None)
    return tuple(seen)
