"""Where a CT segmenter's components are: the nodules it finds and misses, its false positives.

For each study of the given manifest splits (default ``tune``), the model's own chain and
sliding-window inference give the voxel probabilities in model space (RAS, 2 mm);
the served rule (:func:`~medvision.inference.ct.find_nodules`) gives the kept
components. Per study (with its device) it prints each ground-truth nodule (voxels,
mean HU, the median HU of its surroundings — the voxels 2 to 3 voxels beyond it,
:func:`~medvision.transforms.intensity.lesion_surroundings` —,
the highest probability inside it, found or not) and the false-positive components;
then a summary:

- ground-truth nodules found (a kept component overlaps them), by size, and those
  of 6 mm or more by device (``ManufacturerModelName``);
- false-positive components per scan, and how many are *embedded*: the mean HU of
  a 2-voxel shell around the component is above -500 HU, so the component sits in
  soft tissue (hilum, mediastinum, chest wall, vessel wall) rather than in aerated
  lung, where a nodule would be.

With ``--sweep``, it then re-applies the component rule with other probability
thresholds and smallest diameters to the same probability maps and prints, per
setting, the mean Dice over the scans with nodules, the sensitivity for nodules of
6 mm or more with every component kept and at no more than one false positive per
scan (FROC, component score its highest probability), and the false positives per
scan (the rules of :mod:`medvision.evaluation.ct_detection`, here in model space:
RAS, 2 mm voxels; the ground-truth centres and diameters are the annotations').
The served rule is threshold 0.5 and 3 mm.

With ``--mirror``, the logit map is instead the mean of the maps of the eight
mirror images of the volume (each axis flipped or not, the map flipped back; the
test-time mirroring of nnU-Net, Isensee et al. 2021): what averaging would change,
at eight times the inference cost. The product's scorer does not mirror.

Usage::

    python benchmarks/ct_components.py --model DIR/ct-unet.json \\
        --manifest build/bundled/ct/manifest.csv [--split tune [calibration ...]] \\
        [--studies N] [--sweep] [--mirror]
"""

from __future__ import annotations

import argparse
import itertools
import math
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from monai.inferers.inferer import SlidingWindowInferer
from numpy.typing import NDArray
from scipy import ndimage

from medvision.data.manifest import read_manifest
from medvision.evaluation.ct_detection import (
    ScanDetections,
    TruthNodule,
    evaluate_ct_detection,
    load_ground_truth,
)
from medvision.inference.ct import (
    CONNECTIVITY,
    SegmenterOnCpu,
    equivalent_diameter_mm,
    find_nodules,
    nodule_region,
    predict_logit_map,
)
from medvision.inference.scoring import Location
from medvision.transforms.ct import WINDOWS_HU
from medvision.transforms.intensity import lesion_surroundings
from medvision.transforms.loading import IMAGE_KEY, MASK_KEY, study_item

#: A component whose surrounding shell is denser than this (HU) sits in soft tissue.
EMBEDDED_SHELL_HU = -500.0
#: Nodule size bands (equivalent-sphere diameter in mm, model grid) for the summary.
SIZE_BANDS_MM = ((0.0, 6.0), (6.0, 10.0), (10.0, 100.0))
#: Nodules of at least this diameter (mm) are counted per device.
DEVICE_MIN_DIAMETER_MM = 6.0
#: ``--sweep``: component probability thresholds and smallest diameters (mm) tried.
SWEEP_THRESHOLDS = (0.3, 0.5, 0.7, 0.9)
SWEEP_DIAMETERS_MM = (3.0, 4.0, 5.0, 6.0)


@dataclass(frozen=True)
class _Scan:
    """What the sweep needs of one study: its logit map, grid and ground truth."""

    uid: str
    logits: NDArray[np.float32]
    affine: NDArray[np.float64]
    truth_mask: NDArray[np.bool_]
    truth: list[TruthNodule]
    region: NDArray[np.bool_] | None


def mirrored_logit_map(
    network: torch.nn.Module, inferer: SlidingWindowInferer, image: torch.Tensor
) -> NDArray[np.float32]:
    """Return the mean logit map of the volume's eight mirror images, each flipped back."""
    maps = []
    for count in range(4):
        for axes in itertools.combinations((1, 2, 3), count):  # the image's spatial axes
            volume = torch.flip(image, axes) if axes else image
            logits = predict_logit_map(network, inferer, volume, torch.device("cpu"))[0]
            maps.append(np.flip(logits, tuple(a - 1 for a in axes)) if axes else logits)
    return np.asarray(np.mean(maps, axis=0), dtype=np.float32)


def sweep(scans: list[_Scan]) -> None:
    """Print the figures of each (threshold, smallest diameter) of the component rule."""
    print(
        "\nthreshold  min mm  mean Dice  sensitivity (all kept)  FP/scan  "
        "sensitivity at <= 1 FP/scan"
    )
    for threshold in SWEEP_THRESHOLDS:
        for diameter in SWEEP_DIAMETERS_MM:
            detections = []
            for scan in scans:
                kept, components = find_nodules(
                    scan.logits,
                    scan.affine,
                    region=scan.region,
                    threshold=threshold,
                    min_volume_mm3=math.pi / 6.0 * diameter**3,
                )
                predicted = [
                    Location("", c.centre_mm, c.diameter_mm, c.probability) for c in components
                ]
                detections.append(
                    ScanDetections(scan.uid, predicted, scan.truth, kept > 0, scan.truth_mask)
                )
            figures = evaluate_ct_detection(detections)
            print(
                f"{threshold:9.1f}  {diameter:6.0f}  {figures.mean_dice:9.3f}  "
                f"{figures.sensitivity:22.3f}  {figures.false_positives_per_scan:7.2f}  "
                f"{figures.sensitivity_at_max_false_positives:27.3f}"
            )


def main() -> None:
    """Print one block per study and the summary."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, required=True, help="registry entry (.json)")
    parser.add_argument("--manifest", type=Path, required=True)
    parser.add_argument("--split", nargs="+", default=["tune"], help="one or more splits")
    parser.add_argument("--studies", type=int, default=None, help="at most this many")
    parser.add_argument("--sweep", action="store_true", help="also try other component rules")
    parser.add_argument(
        "--mirror", action="store_true", help="average the logits of the 8 mirror images"
    )
    args = parser.parse_args()
    warnings.filterwarnings("ignore", category=UserWarning)
    segmenter = SegmenterOnCpu.load(args.model)
    network, chain = segmenter.network, segmenter.chain
    transforms, inferer = segmenter.transforms, segmenter.inferer
    low, high = WINDOWS_HU[chain.window]
    rows = [row for row in read_manifest(args.manifest) if row.split in args.split]
    rows = rows[: args.studies] if args.studies else rows
    found_by_band = [[0, 0] for _ in SIZE_BANDS_MM]
    found_by_device: dict[str, list[int]] = {}
    false_positives = embedded = 0
    scans: list[_Scan] = []
    for row in rows:
        item = transforms(study_item(row, args.manifest))
        hu = low + np.asarray(item[IMAGE_KEY][0], dtype=np.float64) * (high - low)
        truth = np.asarray(item[MASK_KEY][0]) > 0.5
        logits = (
            mirrored_logit_map(network, inferer, item[IMAGE_KEY].as_tensor())
            if args.mirror
            else predict_logit_map(network, inferer, item[IMAGE_KEY], torch.device("cpu"))[0]
        )
        probability = 1.0 / (1.0 + np.exp(-logits.astype(np.float64)))
        affine = np.asarray(item[IMAGE_KEY].affine)
        voxel_mm3 = abs(float(np.linalg.det(affine[:3, :3])))
        region = nodule_region(item[IMAGE_KEY], chain.window)
        kept, components = find_nodules(logits, affine, region=region)
        if args.sweep:
            nodules, _ = load_ground_truth(row, args.manifest)
            scans.append(_Scan(row.study_instance_uid, logits, affine, truth, nodules, region))
        print(
            f"{row.study_instance_uid} nodule={row.labels.get('nodule')} {row.manufacturer_model}"
        )
        labels, count = ndimage.label(truth, structure=CONNECTIVITY)
        for index in range(1, count + 1):
            inside = labels == index
            diameter = equivalent_diameter_mm(float(inside.sum()) * voxel_mm3)
            found = bool((kept[inside] > 0).any())
            band = next(i for i, (a, b) in enumerate(SIZE_BANDS_MM) if a <= diameter < b)
            found_by_band[band][0] += int(found)
            found_by_band[band][1] += 1
            if diameter >= DEVICE_MIN_DIAMETER_MM:
                tally = found_by_device.setdefault(row.manufacturer_model, [0, 0])
                tally[0] += int(found)
                tally[1] += 1
            surround = lesion_surroundings(inside)
            print(
                f"  nodule {int(inside.sum()):>4} voxels ({diameter:4.1f} mm) "
                f"{hu[inside].mean():7.0f} HU, surroundings {np.median(hu[surround]):7.0f} HU  "
                f"max p {probability[inside].max():.2f}  {'found' if found else 'missed'}"
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
    print(f"\n{len(rows)} studies of split(s) {', '.join(args.split)}")
    for (a, b), (hits, total) in zip(SIZE_BANDS_MM, found_by_band, strict=True):
        print(f"nodules {a:g}-{b:g} mm: {hits} of {total} found")
    for device, (hits, total) in sorted(found_by_device.items()):
        print(f"nodules >= {DEVICE_MIN_DIAMETER_MM:g} mm on {device}: {hits} of {total} found")
    print(
        f"false-positive components: {false_positives} ({false_positives / max(len(rows), 1):.2f}"
        f" per scan), {embedded} embedded in soft tissue (shell > {EMBEDDED_SHELL_HU:g} HU)"
    )
    if args.sweep:
        sweep(scans)


if __name__ == "__main__":
    main()
