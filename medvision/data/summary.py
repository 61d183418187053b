"""Summaries of a manifest: counts per modality, site, device and split, and prevalence.

The summary is data first (:func:`summarise`), rendered for people by
:func:`format_summary`.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

from medvision.data.manifest import ManifestRow
from medvision.modality import FINDINGS, Modality


@dataclass(frozen=True)
class FindingCount:
    """Positive and assessed studies for one finding."""

    positive: int
    assessed: int

    @property
    def prevalence(self) -> float:
        """Share of assessed studies that are positive (0 when none were assessed)."""
        return self.positive / self.assessed if self.assessed else 0.0


@dataclass(frozen=True)
class ModalitySummary:
    """Counts for the studies of one modality."""

    studies: int
    sites: dict[str, int] = field(default_factory=dict)
    devices: dict[str, int] = field(default_factory=dict)
    splits: dict[str, int] = field(default_factory=dict)
    findings: dict[str, FindingCount] = field(default_factory=dict)


def summarise(rows: Sequence[ManifestRow]) -> dict[Modality, ModalitySummary]:
    """Count the studies of ``rows`` per modality, site, device, split and finding."""
    summary: dict[Modality, ModalitySummary] = {}
    for modality in Modality:
        subset = [row for row in rows if row.modality == modality]
        if not subset:
            continue
        findings = {
            name: FindingCount(
                positive=sum(row.labels.get(name) == 1 for row in subset),
                assessed=sum(name in row.labels for row in subset),
            )
            for name in FINDINGS[modality]
        }
        summary[modality] = ModalitySummary(
            studies=len(subset),
            sites=dict(sorted(Counter(row.site for row in subset).items())),
            devices=dict(sorted(Counter(row.manufacturer_model for row in subset).items())),
            splits=dict(sorted(Counter(row.split for row in subset).items())),
            findings=findings,
        )
    return summary


def format_summary(summary: dict[Modality, ModalitySummary]) -> str:
    """Render a summary as plain text for a terminal."""
    lines: list[str] = []
    for modality, part in summary.items():
        lines.append(f"{modality.value}: {part.studies} studies")
        lines.append("  sites:    " + ", ".join(f"{k} {v}" for k, v in part.sites.items()))
        lines.append("  devices:  " + ", ".join(f"{k} {v}" for k, v in part.devices.items()))
        splits = ", ".join(f"{k or '(none)'} {v}" for k, v in part.splits.items())
        lines.append("  splits:   " + splits)
        for name, count in part.findings.items():
            lines.append(
                f"  {name:<18} {count.positive:>5} / {count.assessed:<5} positive "
                f"({100 * count.prevalence:.1f} %)"
            )
    return "\n".join(lines)
