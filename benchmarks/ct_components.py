"""Where a CT segmenter's components are: the nodules it finds and misses, its false positives.

For each study of one manifest split (default ``tune``), the model's own chain and
sliding-window inference give the voxel probabilities in model space (RAS, 2 mm);
the served rule (:func:`~medvision.inference.ct.find_nodules`) gives the kept
components. Per study it prints each ground-truth nodule (voxels, mean HU, the
highest probability inside it, found or not) and the false-positive components;
then a summary:

- ground-truth nodules found (a kept component overlaps them), by size;
- false-positive components per scan, and how many are *embedded*: the mean HU of
  a 2-voxel shell around the component is above -500 HU, so the component sits in
  soft tissue (hilum, mediastinum, chest wall, vessel wall) rather than in aerated
  lung, where a nodule would be.

Usage::

    python benchmarks/ct_components.py --model DIR/ct-unet.json \\
        --manifest build/bundled/ct/manifest.csv [--split tune] [--studies N]
"""

from __future__ import annotations

import argparse
import warnings
from pathlib import Path

import numpy as np
import torch
from scipy import ndimage

from medvision.data.manifest import read_manifest
from medvision.inference.ct import (
    CONNECTIVITY,
    ct_chain,
    equivalent_diameter_mm,
    find_nodules,
    predict_logit_map,
    window_size,
)
from medvision.models.registry import load_model, read_entry
from medvision.transforms.ct import WINDOWS_HU, sliding_window_inferer
from medvision.transforms.loading import IMAGE_KEY, MASK_KEY, study_item

#: A component whose surrounding shell is denser than this (HU) sits in soft tissue.
EMBEDDED_SHELL_HU = -500.0
#: Nodule size bands (equivalent-sphere diameter in mm, model grid) for the summary.
SIZE_BANDS_MM = ((0.0, 6.0), (6.0, 10.0), (10.0, 100.0))


def main() -> None:
    """Print one block per study and the summary."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, required=True, help="registry entry (.json)")
    parser.add_argument("--manifest", type=Path, required=True)
    parser.add_argument("--split", default="tune")
    parser.add_argument("--studies", type=int, default=None, help="at most this many")
    args = parser.parse_args()
    warnings.filterwarnings("ignore", category=UserWarning)
    entry = read_entry(args.model)
    network = load_model(entry, args.model.parent).float().eval()
    chain = ct_chain(entry)
    transforms = chain.build(False, mask_key=MASK_KEY, mask_names=entry.findings)
    inferer = sliding_window_inferer(window_size(entry))
    low, high = WINDOWS_HU[chain.window]
    rows = [row for row in read_manifest(args.manifest) if row.split == args.split]
    rows = rows[: args.studies] if args.studies else rows
    found_by_band = [[0, 0] for _ in SIZE_BANDS_MM]
    false_positives = embedded = 0
    for row in rows:
        item = transforms(study_item(row, args.manifest))
        hu = low + np.asarray(item[IMAGE_KEY][0], dtype=np.float64) * (high - low)
        truth = np.asarray(item[MASK_KEY][0]) > 0.5
        logits = predict_logit_map(network, inferer, item[IMAGE_KEY], torch.device("cpu"))[0]
        probability = 1.0 / (1.0 + np.exp(-logits.astype(np.float64)))
        affine = np.asarray(item[IMAGE_KEY].affine)
        voxel_mm3 = abs(float(np.linalg.det(affine[:3, :3])))
        kept, components = find_nodules(logits, affine)
        print(f"{row.study_instance_uid} nodule={row.labels.get('nodule')}")
        labels, count = ndimage.label(truth, structure=CONNECTIVITY)
        for index in range(1, count + 1):
            inside = labels == index
            diameter = equivalent_diameter_mm(float(inside.sum()) * voxel_mm3)
            found = bool((kept[inside] > 0).any())
            band = next(i for i, (a, b) in enumerate(SIZE_BANDS_MM) if a <= diameter < b)
            found_by_band[band][0] += int(found)
            found_by_band[band][1] += 1
            print(
                f"  nodule {int(inside.sum()):>4} voxels ({diameter:4.1f} mm) "
                f"{hu[inside].mean():7.0f} HU  max p {probability[inside].max():.2f}  "
                f"{'found' if found else 'missed'}"
            )
        for component in components:
            region = kept == component.label
            if truth[region].any():
                continue
            shell = ndimage.binary_dilation(region, iterations=2) & ~region
            shell_hu = float(hu[shell].mean())
            false_positives += 1
            embedded += int(shell_hu > EMBEDDED_SHELL_HU)
            print(
                f"  false positive {component.voxels:>4} voxels p {component.probability:.2f}  "
                f"{hu[region].mean():7.0f} HU, shell {shell_hu:7.0f} HU"
            )
    print(f"\n{len(rows)} studies of split {args.split}")
    for (a, b), (hits, total) in zip(SIZE_BANDS_MM, found_by_band, strict=True):
        print(f"nodules {a:g}-{b:g} mm: {hits} of {total} found")
    print(
        f"false-positive components: {false_positives} ({false_positives / max(len(rows), 1):.2f}"
        f" per scan), {embedded} embedded in soft tissue (shell > {EMBEDDED_SHELL_HU:g} HU)"
    )


if __name__ == "__main__":
    main()
