"""Where a mammography model's per-breast AUROC is lost: by device, density and lesion.

Scores the studies of the chosen manifest splits with the model's own scorer (raw
per-breast logits, the mean of the breast's view logits), then prints the
per-breast AUROC (left and right breasts pooled as cases):

- over all breasts;
- for the malignant breasts of one stratum against all other breasts: by the
  breast (left or right), the study's device (``manufacturer_model``), its
  BI-RADS density, and the largest malignant lesion's kind, morphology and size;
- within each device (that device's malignant breasts against its other breasts),
  with the mean logit of each group, to tell a device's weak ranking from a shift
  of its scores;
- benign distractors: the mean logit of other breasts with and without a benign
  lesion, and the AUROC against each;
- contralateral subtraction: ``breast - alpha * other breast`` for a few alphas,
  to see whether a woman's other breast calibrates away the score of her tissue.

Usage::

    python benchmarks/mammo_strata.py --model DIR/mammo-densenet.json \\
        --manifest build/bundled/mammo/manifest.csv [--splits tune test]
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from sklearn.metrics import roc_auc_score

from medvision.calibration.refit import score_rows
from medvision.data.manifest import read_manifest, resolve
from medvision.models.registry import load_model, read_entry

#: Size classes of the largest malignant lesion of a breast (mm).
SIZE_CLASSES: tuple[tuple[float, float], ...] = ((0.0, 8.0), (8.0, 12.0), (12.0, 16.0), (16.0, 1e9))
#: Weights of the other breast's logit subtracted from a breast's.
ALPHAS: tuple[float, ...] = (0.0, 0.25, 0.5, 1.0)


@dataclass(frozen=True)
class Breast:
    """One breast as a case: its logit, the other breast's, and what it holds."""

    logit: float
    other_logit: float
    malignant: bool
    device: str
    density: str
    benign_lesion: bool
    side: str = ""
    kind: str = ""
    morphology: str = ""
    size_mm: float = 0.0


def size_class(size_mm: float) -> str:
    """Return the label of the size class (:data:`SIZE_CLASSES`) of a lesion size."""
    for low, high in SIZE_CLASSES:
        if low <= size_mm < high:
            return f"{low:g}-{high:g} mm" if high < 1e9 else f">= {low:g} mm"
    raise ValueError(f"lesion size {size_mm} mm is in no size class")


def auroc(positive: Sequence[float], negative: Sequence[float]) -> float:
    """Return the AUROC of positive against negative scores."""
    labels = np.r_[np.ones(len(positive)), np.zeros(len(negative))]
    return float(roc_auc_score(labels, np.r_[positive, negative]))


def main(argv: Sequence[str] | None = None) -> int:
    """Score the splits and print the strata (see the module docstring)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--manifest", type=Path, required=True)
    parser.add_argument("--splits", nargs="+", default=["tune", "test"])
    args = parser.parse_args(argv)
    entry = read_entry(args.model)
    network = load_model(entry, args.model.parent)
    rows = [row for row in read_manifest(args.manifest) if row.split in args.splits]
    scores = score_rows(network, entry, rows, args.manifest, torch.device("cpu"), progress=False)
    findings = list(entry.findings)
    side_column = {"L": findings.index("malignancy_left"), "R": findings.index("malignancy_right")}
    breasts: list[Breast] = []
    for index, row in enumerate(rows):
        if row.annotations is None:
            parser.error(f"study {row.study_instance_uid} has no annotations file")
        annotations = json.loads(resolve(args.manifest, row.annotations).read_text())
        for side, other in (("L", "R"), ("R", "L")):
            lesions = [lesion for lesion in annotations["lesions"] if lesion["laterality"] == side]
            malignant = [lesion for lesion in lesions if lesion["malignant"]]
            largest = max(malignant, key=lambda lesion: lesion["size_mm"], default=None)
            breasts.append(
                Breast(
                    logit=float(scores.logits[index, side_column[side]]),
                    other_logit=float(scores.logits[index, side_column[other]]),
                    malignant=bool(scores.labels[index, side_column[side]]),
                    device=row.manufacturer_model,
                    density=str(annotations.get("breast_density", "")),
                    benign_lesion=any(not lesion["malignant"] for lesion in lesions),
                    side=side,
                    kind=largest["kind"] if largest else "",
                    morphology=largest["morphology"] if largest else "",
                    size_mm=float(largest["size_mm"]) if largest else 0.0,
                )
            )
    positive = [b for b in breasts if b.malignant]
    negative = [b for b in breasts if not b.malignant]
    negative_logits = [b.logit for b in negative]
    print(
        f"{args.model.name} on {', '.join(args.splits)} of {args.manifest}: per-breast AUROC "
        f"{auroc([b.logit for b in positive], negative_logits):.3f} "
        f"({len(positive)} malignant breasts, {len(negative)} others)"
    )
    print("malignant breasts of one stratum against all other breasts:")
    strata: dict[str, Callable[[Breast], str]] = {
        "breast": lambda b: b.side,
        "device": lambda b: b.device,
        "density": lambda b: b.density,
        "lesion kind": lambda b: b.kind,
        "morphology": lambda b: b.morphology,
        "largest lesion": lambda b: size_class(b.size_mm),
    }
    size_order = [size_class(low) for low, _ in SIZE_CLASSES]
    for name, key in strata.items():
        values = {key(b) for b in positive}
        ordered = sorted(values)
        if name == "largest lesion":
            ordered = [value for value in size_order if value in values]
        for value in ordered:
            chosen = [b.logit for b in positive if key(b) == value]
            print(f"  {name} {value}: {auroc(chosen, negative_logits):.3f} ({len(chosen)})")
    print("within each device:")
    for device in sorted({b.device for b in breasts}):
        pos = [b.logit for b in positive if b.device == device]
        neg = [b.logit for b in negative if b.device == device]
        print(
            f"  {device}: {auroc(pos, neg):.3f} ({len(pos)} malignant, mean logit "
            f"{np.mean(pos):.2f}; {len(neg)} others, mean logit {np.mean(neg):.2f})"
        )
    benign = [b.logit for b in negative if b.benign_lesion]
    clean = [b.logit for b in negative if not b.benign_lesion]
    malignant_logits = [b.logit for b in positive]
    print(
        f"other breasts with a benign lesion: mean logit {np.mean(benign):.2f} ({len(benign)}), "
        f"AUROC against them {auroc(malignant_logits, benign):.3f}; without: mean logit "
        f"{np.mean(clean):.2f} ({len(clean)}), AUROC {auroc(malignant_logits, clean):.3f}"
    )
    for alpha in ALPHAS:
        shifted = [b.logit - alpha * b.other_logit for b in breasts]
        labels = [b.malignant for b in breasts]
        print(
            f"contralateral subtraction alpha {alpha:g}: per-breast AUROC "
            f"{roc_auc_score(labels, shifted):.3f}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
