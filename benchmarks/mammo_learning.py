"""What limits a mammography model: overfitting, pooling, or false-positive tissue?

For a registered mammography model and its training manifest, scores the views of
the ``train`` and ``tune`` splits with the model's own chain (whole views, as
served) and prints, per split:

- the per-view AUROC of the network's output (the view's breast label);
- on ``tune``, the same AUROC with the evidence map pooled otherwise: log-sum-exp
  at several sharpnesses, the maximum, and the mean of the top 4 cells;
- on ``tune``, how the cells of the evidence map that hold lesion pixels rank
  against the other breast cells (AUROC over cells): high here but low per view
  means normal tissue, somewhere in each view, looks like a lesion.

A per-view AUROC far higher on ``train`` than on ``tune`` is overfitting.

Usage::

    python benchmarks/mammo_learning.py --models build/mammo-patch-run \\
        --manifest build/bundled/mammo/manifest.csv [--train-studies 150]
"""

from __future__ import annotations

import argparse
import math
import warnings
from pathlib import Path

import numpy as np
import torch
from sklearn.metrics import roc_auc_score

from medvision.data.manifest import read_manifest
from medvision.modality import Modality
from medvision.models.networks import EvidenceMapDenseNet
from medvision.models.registry import load_model, load_registry
from medvision.training.classifier import LESION_MASK_KEY
from medvision.training.mammography import LESION_MASK_NAMES, view_items
from medvision.transforms.mammo import MammoTransforms

BATCH = 16


def _maps(network: EvidenceMapDenseNet, images: list[torch.Tensor]) -> torch.Tensor:
    with torch.no_grad():
        parts = [
            network.evidence_maps(torch.stack(images[i : i + BATCH]))[:, 0]
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
        transforms = chain.build(False, mask_key=LESION_MASK_KEY, mask_names=LESION_MASK_NAMES)
        views = view_items(chosen, args.manifest, transforms, progress=False)
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
        lesion_peaks, tissue = [], []
        for view, cells in zip(views, maps.numpy(), strict=True):
            rows_per_cell = view["image"].shape[1] // cells.shape[0]
            columns_per_cell = view["image"].shape[2] // cells.shape[1]
            shape = (cells.shape[0], rows_per_cell, cells.shape[1], columns_per_cell)
            height, width = cells.shape[0] * rows_per_cell, cells.shape[1] * columns_per_cell
            lesion = view[LESION_MASK_KEY][0, :height, :width].numpy().reshape(shape) > 0.5
            breast = view["image"][0, :height, :width].numpy().reshape(shape) > 0.1
            lesion_cells = lesion.any(axis=(1, 3))
            breast_cells = breast.mean(axis=(1, 3)) > 0.5
            if lesion_cells.any():
                lesion_peaks.append(float(cells[lesion_cells].max()))
            tissue.extend(cells[breast_cells & ~lesion_cells].tolist())
        truth = [1] * len(lesion_peaks) + [0] * len(tissue)
        cell_auroc = roc_auc_score(truth, lesion_peaks + tissue)
        print(
            f"  lesion views' hottest lesion cell vs other breast cells: AUROC {cell_auroc:.3f} "
            f"({len(lesion_peaks)} lesion views, {len(tissue)} breast cells, "
            f"{len(tissue) / max(len(views), 1):.0f} per view)"
        )


if __name__ == "__main__":
    main()
