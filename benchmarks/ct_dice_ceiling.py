"""The best Dice a CT segmenter can reach through its chain's resampling.

A segmenter predicts on the chain's grid (RAS, ``spacing_mm``; 2 mm by default)
and its mask is mapped back onto the DICOM grid before Dice is measured
(:func:`medvision.inference.ct.study_score_from_logits`). A perfect network
predicts exactly the ground truth as the chain resamples it for training. This
script takes that mask, maps it back the way served masks are mapped, and
measures Dice against the ground truth on the DICOM grid — the ceiling that the
spacing alone sets — for the scans with nodules of the chosen splits, by the
size of each scan's largest nodule.

Usage::

    python benchmarks/ct_dice_ceiling.py --manifest build/bundled/ct-plus/manifest.csv \\
        [--splits tune test] [--spacing 2 2 2] [--spacing 1.5 1.5 1.5 ...]
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from monai.transforms.compose import Compose

from medvision.data.manifest import ManifestRow, read_manifest
from medvision.evaluation.ct_detection import TruthNodule, dice_coefficient, load_ground_truth
from medvision.inference.ct import in_instance_order
from medvision.transforms.chain import MapKind, to_original_grid
from medvision.transforms.ct import SPACING_MM, CtTransforms
from medvision.transforms.loading import IMAGE_KEY, MASK_KEY, study_item

#: Size classes (largest nodule of the scan, mm) the ceiling is reported by.
SIZE_CLASSES: tuple[tuple[float, float], ...] = ((0.0, 6.0), (6.0, 10.0), (10.0, math.inf))


def ceiling_dice(
    row: ManifestRow, manifest: Path, transforms: Compose
) -> tuple[float, list[TruthNodule]]:
    """Return the Dice of a scan's ground truth after the chain's round trip, and its nodules.

    ``transforms`` is the chain in evaluation mode with the nodule mask
    (``build(False, mask_key=MASK_KEY, ...)``). The mask is resampled onto the
    chain's grid as in training, taken as the prediction, mapped back as served
    masks are (:attr:`MapKind.LABEL`, then ``> 0.5``), and compared with the ground
    truth on the DICOM grid.
    """
    item = transforms(study_item(row, manifest))
    predicted = (np.asarray(item[MASK_KEY])[:1] > 0.5).astype(np.float32)
    back = to_original_grid(predicted, item, transforms, MapKind.LABEL)[0]
    mask = in_instance_order((back > 0.5).astype(np.uint8), item[IMAGE_KEY].meta)
    nodules, truth = load_ground_truth(row, manifest)
    return dice_coefficient(mask, truth), nodules


def size_class(largest_mm: float) -> str:
    """Return the label of the size class a scan's largest nodule falls in."""
    for low, high in SIZE_CLASSES:
        if low <= largest_mm < high:
            return f"{low:g}-{high:g} mm" if math.isfinite(high) else f">= {low:g} mm"
    raise ValueError(f"largest nodule of {largest_mm} mm is in no size class")


def main(argv: Sequence[str] | None = None) -> int:
    """Print the Dice ceiling of each spacing over the chosen splits' scans with nodules."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--manifest", type=Path, required=True)
    parser.add_argument("--splits", nargs="+", default=["tune", "test"])
    parser.add_argument(
        "--spacing",
        type=float,
        nargs=3,
        action="append",
        metavar="MM",
        help=f"chain spacing (R A S, mm); repeat to compare (default {SPACING_MM})",
    )
    args = parser.parse_args(argv)
    rows = [
        row
        for row in read_manifest(args.manifest)
        if row.split in args.splits and row.labels.get("nodule") == 1
    ]
    if not rows:
        parser.error(f"no study with a nodule in splits {args.splits} of {args.manifest}")
    for spacing in args.spacing or [list(SPACING_MM)]:
        chain = CtTransforms(spacing_mm=tuple(spacing))
        transforms = chain.build(False, mask_key=MASK_KEY, mask_names=("nodule",))
        by_class: dict[str, list[float]] = {}
        dice = []
        for row in rows:
            value, nodules = ceiling_dice(row, args.manifest, transforms)
            largest = max((nodule.diameter_mm for nodule in nodules), default=0.0)
            by_class.setdefault(size_class(largest), []).append(value)
            dice.append(value)
        print(
            f"spacing {' x '.join(f'{v:g}' for v in spacing)} mm: mean Dice ceiling "
            f"{np.mean(dice):.3f} over {len(dice)} scans with nodules (lowest {min(dice):.3f})"
        )
        for label in (size_class(low) for low, _ in SIZE_CLASSES):
            values = by_class.get(label, [])
            if values:
                print(f"  largest nodule {label}: {np.mean(values):.3f} ({len(values)} scans)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
