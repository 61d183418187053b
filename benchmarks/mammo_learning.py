"""What limits a mammography model: overfitting, pooling, or false-positive tissue?

For a registered mammography model and its training manifest, scores the views of
the ``train`` and ``tune`` splits with the model's own chain (whole views, as
served) and prints, per split:

- the per-view AUROC of the network's output (the view's breast label);
- on ``tune``, the same AUROC with the evidence map pooled otherwise: log-sum-exp
  at several sharpnesses, the maximum, and the mean of the top 4 cells;
- on ``tune``, how the cells of the evidence map that hold lesion pixels rank
  against the other breast cells (AUROC over cells): high here but low per view
  means normal tissue, somewhere in each view, looks like a lesion;
- on ``tune``, where that tissue is: for the views of breasts without cancer, the
  hottest breast cell (the one pooling weighs most), whether it lies on a benign
  lesion (the ``benign`` mask), at the breast's edge (a neighbouring cell mostly
  outside the breast: skin line, chest wall), and how dense it is (the share of the
  breast's cells darker than it), for all such views and for those hotter than the
  median lesion cell, with their counts per device and BI-RADS density.

A per-view AUROC far higher on ``train`` than on ``tune`` is overfitting.

Usage::

    python benchmarks/mammo_learning.py --models build/mammo-patch-run \\
        --manifest build/bundled/mammo/manifest.csv [--train-studies 150]
"""

from __future__ import annotations

import argparse
import json
import math
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sklearn.metrics import roc_auc_score

from medvision.data.manifest import ManifestRow, read_manifest, resolve
from medvision.modality import Modality
from medvision.models.networks import EvidenceMapDenseNet
from medvision.models.registry import load_model, load_registry
from medvision.training.classifier import LESION_MASK_KEY
from medvision.training.mammography import LESION_MASK_NAMES, view_items
from medvision.transforms.mammo import BENIGN_MASK, MammoTransforms

BATCH = 16


def _maps(network: EvidenceMapDenseNet, images: list[torch.Tensor]) -> torch.Tensor:
    with torch.no_grad():
        parts = [
            network.served_maps(torch.stack(images[i : i + BATCH]))[:, 0]
            for i in range(0, len(images), BATCH)
        ]
    return torch.cat(parts)


def main() -> None:
    """Print the figures (see the module docstring)."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--models", type=Path, required=True)
    parser.add_argument("--manifest", type=Path, required=True)
    parser.add_argument("--name", default="mammo-densenet")
    parser.add_argument("--train-studies", type=int, default=150)
    args = parser.parse_args()
    warnings.filterwarnings("ignore", category=UserWarning)
    entry = load_registry(args.models)[args.name]
    if entry.modality != Modality.MAMMO:
        raise SystemExit(f"{args.name} is a {entry.modality.value} model, not mammography")
    network = load_model(entry, args.models).eval()
    if not isinstance(network, EvidenceMapDenseNet):
        raise SystemExit(f"{args.name} has no evidence maps")
    chain = MammoTransforms.from_parameters(entry.transforms["parameters"])
    rows = read_manifest(args.manifest)
    for split, limit in (("train", args.train_studies), ("tune", None)):
        chosen = [r for r in rows if r.split == split][:limit]
        transforms = chain.build(
            False, mask_key=LESION_MASK_KEY, mask_names=(*LESION_MASK_NAMES, BENIGN_MASK)
        )
        views, strata = [], []
        for row in chosen:
            study_views = view_items([row], args.manifest, transforms, progress=False)
            views += study_views
            strata += [_stratum(row, args.manifest)] * len(study_views)
        labels = np.array([float(v["label"][0]) for v in views])
        maps = _maps(network, [v["image"] for v in views])
        flat = maps.flatten(1)
        served = network.pool(maps[:, None])[:, 0].numpy()
        print(
            f"{split}: {len(chosen)} studies, {len(views)} views ({int(labels.sum())} of "
            f"malignant breasts): per-view AUROC {roc_auc_score(labels, served):.3f}"
        )
        if split != "tune":
            continue
        for sharpness in (1.0, 5.0, 20.0, 50.0):
            pooled = (torch.logsumexp(sharpness * flat, 1) - math.log(flat.shape[1])) / sharpness
            print(f"  log-sum-exp r={sharpness:g}: {roc_auc_score(labels, pooled.numpy()):.3f}")
        print(f"  maximum: {roc_auc_score(labels, flat.amax(1).numpy()):.3f}")
        top = torch.topk(flat, 4, dim=1).values.mean(1)
        print(f"  mean of the top 4 cells: {roc_auc_score(labels, top.numpy()):.3f}")
        lesion_peaks, tissue, normal_peaks = [], [], []
        for view, cells, stratum in zip(views, maps.numpy(), strata, strict=True):
            grid = _cells(view, cells.shape)
            if grid.lesion.any():
                lesion_peaks.append(float(cells[grid.lesion].max()))
            tissue.extend(cells[grid.breast & ~grid.lesion].tolist())
            if float(view["label"][0]) == 0.0 and grid.breast.any():
                normal_peaks.append(_peak(cells, grid, stratum))
        truth = [1] * len(lesion_peaks) + [0] * len(tissue)
        cell_auroc = roc_auc_score(truth, lesion_peaks + tissue)
        print(
            f"  lesion views' hottest lesion cell vs other breast cells: AUROC {cell_auroc:.3f} "
            f"({len(lesion_peaks)} lesion views, {len(tissue)} breast cells, "
            f"{len(tissue) / max(len(views), 1):.0f} per view)"
        )
        median_lesion = float(np.median(lesion_peaks))
        hot = [peak for peak in normal_peaks if peak.logit > median_lesion]
        print(f"  hottest breast cell of the {len(normal_peaks)} views of breasts without cancer:")
        print(f"    {_describe(normal_peaks)}")
        print(f"  the {len(hot)} of them hotter than the median lesion cell ({median_lesion:.2f}):")
        print(f"    {_describe(hot)}")
        for key in ("device", "density"):
            counts = {
                value: f"{sum(getattr(p, key) == value for p in hot)} of "
                f"{sum(getattr(p, key) == value for p in normal_peaks)}"
                for value in sorted({getattr(p, key) for p in normal_peaks})
            }
            print(f"    by {key}: " + ", ".join(f"{k} {v}" for k, v in counts.items()))


@dataclass(frozen=True)
class _Stratum:
    device: str
    density: str


@dataclass(frozen=True)
class _Grid:
    breast: np.ndarray
    lesion: np.ndarray
    benign: np.ndarray
    brightness: np.ndarray


@dataclass(frozen=True)
class _Peak:
    logit: float
    on_benign: bool
    view_has_benign: bool
    at_edge: bool
    density_rank: float
    device: str
    density: str


def _stratum(row: ManifestRow, manifest: Path) -> _Stratum:
    density = ""
    if row.annotations is not None:
        annotations = json.loads(resolve(manifest, row.annotations).read_text())
        density = str(annotations.get("breast_density", ""))
    return _Stratum(row.manufacturer_model, density)


def _cells(view: dict[str, Any], grid_shape: tuple[int, ...]) -> _Grid:
    """Per evidence cell: mostly breast, holds lesion or benign pixels, mean brightness."""
    rows_per_cell = view["image"].shape[1] // grid_shape[0]
    columns_per_cell = view["image"].shape[2] // grid_shape[1]
    shape = (grid_shape[0], rows_per_cell, grid_shape[1], columns_per_cell)
    height, width = grid_shape[0] * rows_per_cell, grid_shape[1] * columns_per_cell
    image = view["image"][0, :height, :width].numpy().reshape(shape)
    masks = view[LESION_MASK_KEY][:, :height, :width].numpy()
    return _Grid(
        breast=(image > 0.1).mean(axis=(1, 3)) > 0.5,
        lesion=(masks[0].reshape(shape) > 0.5).any(axis=(1, 3)),
        benign=(masks[1].reshape(shape) > 0.5).any(axis=(1, 3)),
        brightness=image.mean(axis=(1, 3)),
    )


def _peak(cells: np.ndarray, grid: _Grid, stratum: _Stratum) -> _Peak:
    """Describe the hottest breast cell of a view."""
    row, column = np.unravel_index(np.argmax(np.where(grid.breast, cells, -np.inf)), cells.shape)
    around = grid.breast[max(row - 1, 0) : row + 2, max(column - 1, 0) : column + 2]
    edge = bool((~around).any()) or column == 0 or row in (0, cells.shape[0] - 1)
    brightness = grid.brightness[grid.breast]
    return _Peak(
        logit=float(cells[row, column]),
        on_benign=bool(grid.benign[row, column]),
        view_has_benign=bool(grid.benign.any()),
        at_edge=edge,
        density_rank=float((brightness < grid.brightness[row, column]).mean()),
        device=stratum.device,
        density=stratum.density,
    )


def _describe(peaks: list[_Peak]) -> str:
    if not peaks:
        return "none"
    with_benign = [p for p in peaks if p.view_has_benign]
    return (
        f"on a benign lesion {sum(p.on_benign for p in with_benign)} of the "
        f"{len(with_benign)} views holding one; at the breast's edge "
        f"{np.mean([p.at_edge for p in peaks]):.2f}; denser than "
        f"{np.median([p.density_rank for p in peaks]):.2f} of the breast's cells (median)"
    )


if __name__ == "__main__":
    main()
