"""Does a second-stage candidate classifier find the nodules the CT segmenter misses?

Computer-aided detection of lung nodules is often built in two stages (the LUNA16
systems; Setio et al. 2017): a sensitive candidate detector, then a classifier that
scores each candidate ("false-positive reduction"). This benchmark tries that on the
phantoms, beside the segmenter:

1. **Candidates**: the local maxima (3 x 3 x 3) of the Hessian dot filter
   (:mod:`medvision.transforms.enhancement`, the CT chain's second channel) above
   ``--min-dot`` inside the lung region (:func:`~medvision.inference.ct.nodule_region`),
   in model space (RAS, 2 mm), each with a box of the windowed image and the dot
   channel around it. A candidate is positive when it lies inside a ground-truth
   nodule grown by one voxel. For training, every positive and at most ``--negatives``
   negatives a scan are kept (two thirds the strongest dot responses, one third drawn
   at random from the rest); for evaluation, every candidate.
2. **Classifier**: a small 3-D CNN (four convolution stages of 8-64 channels, batch
   normalisation, global average pooling) on 24-voxel boxes, trained with binary
   cross-entropy on batches of 16 positives and 48 negatives, each box shifted by up
   to 2 voxels, mirrored and turned in the axial plane at random; AdamW with a
   one-cycle learning rate (peak 2e-3).
3. **Figures**: candidates closer than 3 voxels to a higher-scoring one are dropped
   (non-maximum suppression), and the rest are scored by the product's FROC rules
   (:mod:`medvision.evaluation.ct_detection`: LUNA16 matching, nodules of 6 mm or
   more) — once scored by the dot response alone, once by the classifier — at 1/8 to
   8 false positives per scan. Then one line per nodule of 6 mm or more: device,
   diameter, its best candidate's dot response and classifier logit, and how many
   false positives of its scan score above it.

The model given (``--model``) supplies the chain (it must use ``--dot-enhancement``);
its network is not run. Holding every box in memory takes about 70 kB a candidate
(about 5 GB for the 496 training scans of ``build/bundled/ct-plus``).

Usage::

    python benchmarks/ct_candidate_classifier.py --model DIR/ct-unet.json \\
        --manifest build/bundled/ct-plus/manifest.csv [--steps 3000] [--negatives 150]
"""

from __future__ import annotations

import argparse
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from numpy.typing import NDArray
from scipy import ndimage
from torch import nn
from tqdm import tqdm

from medvision.data.manifest import ManifestRow, read_manifest
from medvision.evaluation.ct_detection import (
    MIN_DIAMETER_MM,
    ScanDetections,
    TruthNodule,
    froc_points,
    load_ground_truth,
    sensitivity_at_false_positives,
)
from medvision.inference.ct import (
    CONNECTIVITY,
    SegmenterOnCpu,
    equivalent_diameter_mm,
    nodule_region,
    ras_to_lps,
)
from medvision.inference.scoring import Location
from medvision.transforms.loading import IMAGE_KEY, MASK_KEY, study_item

#: Side of the stored box (voxels); training cuts :data:`BOX` from it at a random offset.
STORED = 26
#: Side of the box the classifier sees (voxels, 2 mm).
BOX = 24
#: Candidates closer than this (voxels, per axis) to a higher-scoring one are dropped.
SUPPRESSION_VOXELS = 3
#: False positives per scan at which the FROC is read.
FROC_RATES = (0.125, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0)


@dataclass
class Candidates:
    """The candidates of some scans: boxes, voxels, dot responses and ground truth."""

    boxes: torch.Tensor  # (N, 2, STORED, STORED, STORED) float16
    scan: NDArray[np.int64]
    voxel: NDArray[np.int64]  # (N, 3)
    dot: NDArray[np.float32]
    nodule: NDArray[np.int64]  # label of the ground-truth nodule hit, 0 for none
    affines: list[NDArray[np.float64]]
    truth: list[list[TruthNodule]]
    truth_masks: list[NDArray[np.uint8]]
    devices: list[str]
    diameters: list[dict[int, float]]  # model-space nodule label -> diameter (mm)


def extract(
    segmenter: SegmenterOnCpu,
    rows: list[ManifestRow],
    manifest: Path,
    min_dot: float,
    negatives: int | None,
    rng: np.random.Generator,
) -> Candidates:
    """Return the candidates of ``rows`` (every negative when ``negatives`` is ``None``)."""
    half = STORED // 2
    boxes: list[NDArray[np.float16]] = []
    scans, voxels, dots, nodules = [], [], [], []
    affines, truths, truth_masks, devices, diameters = [], [], [], [], []
    for index, row in enumerate(tqdm(rows, desc="candidates", unit="scan")):
        item = segmenter.transforms(study_item(row, manifest))
        image = np.asarray(item[IMAGE_KEY], dtype=np.float32)
        dot = image[1]
        candidate = (dot == ndimage.maximum_filter(dot, size=3)) & (dot > min_dot)
        region = nodule_region(item[IMAGE_KEY], segmenter.chain.window)
        if region is not None:
            candidate &= region
        labels, count = ndimage.label(np.asarray(item[MASK_KEY][0]) > 0.5, structure=CONNECTIVITY)
        affine = np.asarray(item[IMAGE_KEY].affine, dtype=np.float64)
        voxel_mm3 = abs(float(np.linalg.det(affine[:3, :3])))
        sizes = np.bincount(labels.ravel(), minlength=count + 1)
        diameters.append(
            {i: equivalent_diameter_mm(float(sizes[i]) * voxel_mm3) for i in range(1, count + 1)}
        )
        hit = ndimage.grey_dilation(labels, size=3)[candidate]
        where = np.argwhere(candidate)
        value = dot[candidate]
        chosen = np.flatnonzero(hit == 0)
        if negatives is not None and len(chosen) > negatives:
            ranked = chosen[np.argsort(-value[chosen])]
            strongest = ranked[: negatives * 2 // 3]
            others = rng.choice(ranked[len(strongest) :], negatives - len(strongest), replace=False)
            chosen = np.concatenate([strongest, others])
        chosen = np.concatenate([np.flatnonzero(hit > 0), chosen])
        padded = np.pad(image, ((0, 0), (half, half), (half, half), (half, half)))
        for c in chosen:
            x, y, z = where[c]
            boxes.append(
                padded[:, x : x + STORED, y : y + STORED, z : z + STORED].astype(np.float16)
            )
            scans.append(index)
            voxels.append(where[c])
            dots.append(value[c])
            nodules.append(hit[c])
        truth, truth_mask = load_ground_truth(row, manifest)
        affines.append(affine)
        truths.append(truth)
        truth_masks.append(truth_mask)
        devices.append(row.manufacturer_model)
    return Candidates(
        torch.from_numpy(np.stack(boxes)),
        np.asarray(scans, dtype=np.int64),
        np.asarray(voxels, dtype=np.int64).reshape(-1, 3),
        np.asarray(dots, dtype=np.float32),
        np.asarray(nodules, dtype=np.int64),
        affines,
        truths,
        truth_masks,
        devices,
        diameters,
    )


def classifier(width: int = 16) -> nn.Sequential:
    """Return the candidate classifier: 2 channels of a 24-voxel box in, one logit out."""

    def stage(inputs: int, outputs: int) -> list[nn.Module]:
        return [
            nn.Conv3d(inputs, outputs, 3, padding=1, bias=False),
            nn.BatchNorm3d(outputs),
            nn.ReLU(inplace=True),
        ]

    w = width
    return nn.Sequential(
        *stage(2, w // 2),
        nn.MaxPool3d(2),
        *stage(w // 2, w),
        *stage(w, w),
        nn.MaxPool3d(2),
        *stage(w, 2 * w),
        *stage(2 * w, 2 * w),
        nn.MaxPool3d(2),
        *stage(2 * w, 4 * w),
        nn.AdaptiveAvgPool3d(1),
        nn.Flatten(),
        nn.Dropout(0.2),
        nn.Linear(4 * w, 1),
    )


def augment(boxes: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
    """Cut each stored box to :data:`BOX` at a random offset, mirror and turn it at random."""
    out = torch.empty(len(boxes), 2, BOX, BOX, BOX)
    for i, box in enumerate(boxes):
        a, b, c = (int(v) for v in rng.integers(0, STORED - BOX + 1, 3))
        cut = box[:, a : a + BOX, b : b + BOX, c : c + BOX].float()
        axes = [axis for axis in (1, 2, 3) if rng.random() < 0.5]
        cut = torch.flip(cut, axes) if axes else cut
        out[i] = cut.transpose(1, 2) if rng.random() < 0.5 else cut
    return out


def centre_cut(boxes: torch.Tensor) -> torch.Tensor:
    """Return the central :data:`BOX` of each stored box, float32."""
    lo = (STORED - BOX) // 2
    return boxes[:, :, lo : lo + BOX, lo : lo + BOX, lo : lo + BOX].float()


def score(network: nn.Module, boxes: torch.Tensor) -> NDArray[np.float32]:
    """Return the classifier's logit of every box (evaluation mode, batches of 512)."""
    network.eval()
    with torch.no_grad():
        logits = [network(centre_cut(boxes[i : i + 512]))[:, 0] for i in range(0, len(boxes), 512)]
    network.train()
    return np.asarray(torch.cat(logits).numpy(), dtype=np.float32)


def suppressed(candidates: Candidates, scores: NDArray[np.float32]) -> NDArray[np.bool_]:
    """Return which candidates survive non-maximum suppression within their scan."""
    keep = np.zeros(len(scores), dtype=bool)
    for scan in np.unique(candidates.scan):
        ranked = np.flatnonzero(candidates.scan == scan)
        ranked = ranked[np.argsort(-scores[ranked], kind="stable")]
        taken: list[NDArray[np.int64]] = []
        for i in ranked:
            here = candidates.voxel[i]
            if all(np.abs(here - v).max() > SUPPRESSION_VOXELS for v in taken):
                keep[i] = True
                taken.append(here)
    return keep


def froc(candidates: Candidates, scores: NDArray[np.float32]) -> dict[float, float]:
    """Return the sensitivity at each of :data:`FROC_RATES` false positives per scan."""
    keep = suppressed(candidates, scores)
    scans = []
    for scan, affine in enumerate(candidates.affines):
        chosen = np.flatnonzero(keep & (candidates.scan == scan))
        predicted = [
            Location(
                "",
                ras_to_lps((affine @ np.array([*candidates.voxel[i], 1.0]))[:3]),
                None,
                float(scores[i]),
            )
            for i in chosen
        ]
        mask = candidates.truth_masks[scan]
        scans.append(
            ScanDetections("", predicted, candidates.truth[scan], np.zeros_like(mask), mask)
        )
    points = froc_points(scans)
    return {rate: sensitivity_at_false_positives(points, rate) for rate in FROC_RATES}


def train(candidates: Candidates, steps: int, rng: np.random.Generator, seed: int) -> nn.Sequential:
    """Train the classifier on ``candidates`` for ``steps`` batches of 64."""
    torch.manual_seed(seed)
    network = classifier()
    positive = np.flatnonzero(candidates.nodule > 0)
    negative = np.flatnonzero(candidates.nodule == 0)
    target = torch.from_numpy((candidates.nodule > 0).astype(np.float32))
    optimiser = torch.optim.AdamW(network.parameters(), 1e-3, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimiser, 2e-3, total_steps=steps, pct_start=0.1
    )
    loss_function = nn.BCEWithLogitsLoss()
    for _ in tqdm(range(steps), desc="training", unit="step"):
        batch = np.concatenate([rng.choice(positive, 16), rng.choice(negative, 48)])
        loss = loss_function(network(augment(candidates.boxes[batch], rng))[:, 0], target[batch])
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        schedule.step()
    return network


def main() -> None:
    """Extract, train, print the FROC of both scores and one line per nodule."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, required=True, help="registry entry (.json)")
    parser.add_argument("--manifest", type=Path, required=True)
    parser.add_argument("--train-split", nargs="+", default=["train"])
    parser.add_argument("--eval-split", nargs="+", default=["tune", "calibration", "test"])
    parser.add_argument("--min-dot", type=float, default=0.3, help="smallest dot response")
    parser.add_argument("--negatives", type=int, default=150, help="per training scan")
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--studies", type=int, default=None, help="at most this many a side")
    args = parser.parse_args()
    warnings.filterwarnings("ignore", category=UserWarning)
    started = time.perf_counter()
    segmenter = SegmenterOnCpu.load(args.model)
    if segmenter.chain.channels != 2:
        parser.error("the model's chain must add the dot filter (--dot-enhancement)")
    rng = np.random.default_rng(args.seed)
    rows = read_manifest(args.manifest)
    train_rows = [r for r in rows if r.split in args.train_split][: args.studies]
    eval_rows = [r for r in rows if r.split in args.eval_split][: args.studies]
    training = extract(
        segmenter,
        train_rows,
        args.manifest,
        args.min_dot,
        args.negatives,
        rng,
    )
    evaluation = extract(
        segmenter,
        eval_rows,
        args.manifest,
        args.min_dot,
        None,
        rng,
    )
    print(
        f"training candidates {len(training.dot)} ({int((training.nodule > 0).sum())} positive); "
        f"evaluation candidates {len(evaluation.dot)} in {len(evaluation.affines)} scans"
    )
    network = train(training, args.steps, rng, args.seed)
    logits = score(network, evaluation.boxes)
    print("\nsensitivity (nodules >= 6 mm) at false positives per scan:")
    print("score        " + "  ".join(f"{rate:>5g}" for rate in FROC_RATES))
    for name, values in (("dot filter", evaluation.dot), ("classifier", logits)):
        figures = froc(evaluation, np.asarray(values, dtype=np.float32))
        print(f"{name:<12} " + "  ".join(f"{figures[rate]:5.3f}" for rate in FROC_RATES))
    print(f"\nnodules >= {MIN_DIAMETER_MM:g} mm (model grid), their best candidate:")
    keep = suppressed(evaluation, logits)
    for scan, device in enumerate(evaluation.devices):
        mine = evaluation.scan == scan
        false_positive = logits[keep & mine & (evaluation.nodule == 0)]
        for label, diameter in evaluation.diameters[scan].items():
            if diameter < MIN_DIAMETER_MM:
                continue
            on = np.flatnonzero(mine & (evaluation.nodule == label))
            if len(on) == 0:
                print(f"  {device:<18} {diameter:5.1f} mm: no candidate")
                continue
            best = int(on[np.argmax(logits[on])])
            print(
                f"  {device:<18} {diameter:5.1f} mm: dot {evaluation.dot[best]:4.2f}  logit "
                f"{logits[best]:6.2f}  false positives above it in its scan "
                f"{int((false_positive > logits[best]).sum())}"
            )
    print(f"\n{time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
