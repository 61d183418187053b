"""How should a mammography model's evidence become a breast's score?

For a registered mammography model and a manifest, scores every view with the
model's own chain and network (whole views, as served) and prints the per-breast
AUROC (on logits, before calibration) of:

- ``served``: the mean of the views' pooled logits (what the scorer reports);
- ``view maximum``: the mean of the views' hottest breast pixel;
- ``two-view, tolerance T``: two-view correspondence. A lesion lies at one distance
  from the nipple, so it shows at about that depth on the CC and on the MLO view of
  its breast, while the dense tissue that looks suspicious on one view
  (``benchmarks/mammo_learning.py``) need not on the other; computer-aided detection
  has long used this (Paquerault et al. 2002; van Engeland and Karssemeijer 2007).
  Per breast, each view's *depth profile* (its highest evidence at each distance
  from the nipple, the breast's farthest pixel from the chest wall, in 2 mm bins on
  the source pixel grid), widened by T mm either way, and the highest mean of the
  two views' profiles over depth. With an unbounded tolerance this is the view
  maximum. Where the manifest has lesion masks, the script first checks this
  geometry: for each malignant breast with both views, how far apart the
  ground-truth lesion's depths (its nearest point to the nipple) are on the two.

``--looks N`` scores with N test-time looks (mirror images averaged before pooling,
``test_time_looks`` of :class:`~medvision.models.networks.EvidenceMapDenseNet`)
instead of the model's own number.

Usage::

    python benchmarks/mammo_aggregation.py --models build/s19/mammo-control \\
        --manifest build/acc-mammo/held-out/manifest.csv [--split test] [--looks 4]
"""

from __future__ import annotations

import argparse
import warnings
from pathlib import Path

import numpy as np
import torch
from numpy.typing import NDArray
from sklearn.metrics import roc_auc_score
from torch.nn import functional
from tqdm import tqdm

from medvision.data.manifest import read_manifest, resolve
from medvision.inference.mammography import (
    BREAST_FINDINGS,
    MammographyScorer,
    breast_logit,
    evaluation_transforms,
    views_by_breast,
)
from medvision.models.networks import EvidenceMapDenseNet, check_looks
from medvision.models.registry import load_model, load_registry
from medvision.transforms.chain import MapKind, to_original_grid
from medvision.transforms.loading import IMAGE_KEY, study_item

BIN_MM = 2.0
TOLERANCES_MM = (0.0, 4.0, 8.0, 12.0, 16.0, 24.0, 32.0)


def depth_profile(
    evidence: NDArray[np.float32], breast: NDArray[np.bool_], laterality: str, spacing_mm: float
) -> NDArray[np.float64]:
    """Highest evidence per ``BIN_MM`` bin of distance from the nipple (displayed grid)."""
    columns = np.nonzero(breast.any(axis=0))[0]
    nipple = columns.max() if laterality == "L" else columns.min()
    depth = np.abs(nipple - np.arange(breast.shape[1])) * spacing_mm
    bins = (depth // BIN_MM).astype(int)
    masked = np.where(breast, evidence, -np.inf).max(axis=0)
    profile = np.full(int(bins.max()) + 1, -np.inf)
    np.maximum.at(profile, bins, masked)
    return profile


def widen(profile: NDArray[np.float64], tolerance_mm: float) -> NDArray[np.float64]:
    """Each bin's highest value within ``tolerance_mm`` either way."""
    reach = round(tolerance_mm / BIN_MM)
    padded = np.pad(profile, reach, constant_values=-np.inf)
    return np.max([padded[i : i + profile.size] for i in range(2 * reach + 1)], axis=0)


def two_view(profiles: list[NDArray[np.float64]], tolerance_mm: float) -> float:
    """Highest mean over depth of the views' widened profiles (one view: its maximum)."""
    if len(profiles) == 1:
        return float(np.max(profiles[0]))
    size = max(p.size for p in profiles)
    stacked = [
        np.pad(widen(p, tolerance_mm), (0, size - p.size), constant_values=-np.inf)
        for p in profiles
    ]
    summed = np.mean(stacked, axis=0)
    return float(np.max(summed))


def main() -> None:
    """Print the figures (see the module docstring)."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--models", type=Path, required=True)
    parser.add_argument("--manifest", type=Path, required=True)
    parser.add_argument("--name", default="mammo-densenet")
    parser.add_argument("--split", nargs="+", default=None)
    parser.add_argument("--studies", type=int, default=None)
    parser.add_argument(
        "--looks", type=int, default=None, help="test-time looks (default: the model's)"
    )
    args = parser.parse_args()
    warnings.filterwarnings("ignore", category=UserWarning)
    entry = load_registry(args.models)[args.name]
    network = load_model(entry, args.models).eval()
    if not isinstance(network, EvidenceMapDenseNet):
        raise SystemExit(f"{args.name} has no evidence maps")
    if args.looks is not None:
        check_looks(args.looks)
        network.test_time_looks = args.looks
    transforms = evaluation_transforms(entry)
    scorer = MammographyScorer()
    rows = [r for r in read_manifest(args.manifest) if args.split is None or r.split in args.split]
    rows = rows[: args.studies]
    labels: list[int] = []
    depth_gaps: list[float] = []
    scores: dict[str, list[float]] = {"served": [], "view maximum": []}
    for tolerance in TOLERANCES_MM:
        scores[f"two-view, tolerance {tolerance:g} mm"] = []
    for row in tqdm(rows, desc="scoring", unit="study"):
        study = scorer.prepare(entry, study_item(row, args.manifest))
        images = torch.stack([v[IMAGE_KEY].as_tensor() for v in study.inputs])
        with torch.no_grad():
            maps = network.served_maps(images)[:, :1]
            pooled = network.pool(maps)[:, 0].numpy()
            up = functional.interpolate(maps, size=images.shape[-2:], mode="nearest")
        masks = np.load(resolve(args.manifest, row.masks)) if row.masks is not None else None
        profiles: list[NDArray[np.float64]] = []
        maxima: list[float] = []
        lesion_depths: dict[str, list[float]] = {}
        for view, evidence, image in zip(study.inputs, up, images, strict=True):
            source = to_original_grid(evidence, view, transforms, MapKind.CONTINUOUS)[0]
            breast = to_original_grid(image, view, transforms, MapKind.CONTINUOUS)[0] > 0.1
            laterality = str(view[IMAGE_KEY].meta["laterality"])
            spacing = float(view[IMAGE_KEY].meta["pixel_spacing"][1])
            profiles.append(depth_profile(source, breast, laterality, spacing))
            uid = str(view[IMAGE_KEY].meta["sop_instance_uids"][0])
            if masks is not None and f"{uid}__malignancy" in masks.files:
                lesion = masks[f"{uid}__malignancy"] > 0
                if lesion.any():
                    depths = depth_profile(lesion.astype(np.float32), breast, laterality, spacing)
                    nearest = int(np.argmax(depths > 0))
                    lesion_depths.setdefault(laterality, []).append(nearest * BIN_MM)
            maxima.append(float(np.max(np.where(breast, source, -np.inf))))
        depth_gaps += [abs(d[0] - d[1]) for d in lesion_depths.values() if len(d) == 2]
        for laterality, indices in views_by_breast(study).items():
            labels.append(int(row.labels[BREAST_FINDINGS[laterality]]))
            scores["served"].append(breast_logit([float(pooled[i]) for i in indices]))
            scores["view maximum"].append(float(np.mean([maxima[i] for i in indices])))
            for tolerance in TOLERANCES_MM:
                scores[f"two-view, tolerance {tolerance:g} mm"].append(
                    two_view([profiles[i] for i in indices], tolerance)
                )
    print(f"{len(rows)} studies, {len(labels)} breasts, {sum(labels)} malignant")
    if depth_gaps:
        print(
            f"  lesion depth, CC against MLO, over {len(depth_gaps)} malignant breasts: "
            f"{np.median(depth_gaps):g} mm apart in the median, {np.max(depth_gaps):g} mm at most"
        )
    for name, values in scores.items():
        print(f"  {name}: per-breast AUROC {roc_auc_score(labels, values):.3f}")


if __name__ == "__main__":
    main()
