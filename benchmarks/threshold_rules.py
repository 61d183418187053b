"""Compare where an operating threshold is chosen: ``tune``, ``calibration``, or both together.

For one registered classifier, the studies of its training manifest's ``tune``,
``calibration`` and ``test`` splits and of a fresh held-out set (e.g. the
held-out set of ``benchmarks/model_acceptance.py``) are scored once with the
model's scorer (as ``medvision predict`` scores them) and calibrated with the
entry's calibrator. Then, per finding and per rule, the threshold for the target
sensitivity is chosen
(:func:`~medvision.calibration.operating_point.threshold_for_sensitivity`) on

- ``tune`` alone,
- ``calibration`` alone,
- ``tune`` and ``calibration`` together (what ``medvision calibrate`` does),

and its sensitivity with its Wilson 95 % interval is printed on every set, with
whether the target lies inside the interval. Training keeps the epoch with the
best ``tune`` AUROC, so ``tune`` alone is expected to flatter its threshold.

Usage::

    python benchmarks/threshold_rules.py --model medvision/models/weights/cxr-densenet.json \
        --manifest build/bundled/cxr/manifest.csv \
        --held-out build/acceptance/cxr-held-out/manifest.csv
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from medvision.calibration.operating_point import operating_point_at, threshold_for_sensitivity
from medvision.calibration.refit import (
    OPERATING_POINT_SPLITS,
    SplitScores,
    calibrator_for_site,
    score_rows,
)
from medvision.data.manifest import labelled_rows
from medvision.models.registry import load_model, read_entry
from medvision.training.loop import select_device

#: Threshold rules: name and the splits the threshold is chosen on.
RULES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("tune", ("tune",)),
    ("calibration", ("calibration",)),
    (" + ".join(OPERATING_POINT_SPLITS), OPERATING_POINT_SPLITS),  # what calibrate does
)


def main() -> None:
    """Score the sets once, then print one line per finding, rule and set."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", type=Path, required=True, help="registry entry (.json)")
    parser.add_argument("--manifest", type=Path, required=True, help="the training manifest")
    parser.add_argument(
        "--held-out", type=Path, required=True, help="a fresh manifest (its test split)"
    )
    parser.add_argument("--target-sensitivity", type=float, default=0.90)
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    arguments = parser.parse_args()

    entry = read_entry(arguments.model)
    network = load_model(entry, arguments.model.parent)
    device: torch.device = select_device(arguments.device)
    sources = {
        "tune": (arguments.manifest, "tune"),
        "calibration": (arguments.manifest, "calibration"),
        "test": (arguments.manifest, "test"),
        "held-out": (arguments.held_out, "test"),
    }
    scores: dict[str, SplitScores] = {}
    for name, (manifest, split) in sources.items():
        rows = labelled_rows(manifest, entry.modality, split, entry.findings)
        scores[name] = score_rows(network, entry, rows, manifest, device, description=name)

    target = arguments.target_sensitivity
    print(f"model {entry.name} {entry.version}; target sensitivity {target:g}; Wilson 95 % CI")
    for column, finding in enumerate(entry.findings):
        calibrator = calibrator_for_site(entry, finding)
        probability = {n: calibrator.transform(s.logits[:, column]) for n, s in scores.items()}
        label = {n: s.labels[:, column] for n, s in scores.items()}

        print(f"\n{finding}")
        print(f"  {'chosen on':<20}{'threshold':>10}  " + "".join(f"{n:<30}" for n in sources))
        for rule, names in RULES:
            point = threshold_for_sensitivity(
                np.concatenate([probability[n] for n in names]),
                np.concatenate([label[n] for n in names]),
                target=target,
            )
            cells = []
            for name in sources:
                measured = operating_point_at(probability[name], label[name], point.threshold)
                low, high = measured.sensitivity_ci
                inside = "in" if low <= target <= high else "OUT"
                cells.append(
                    f"{measured.sensitivity:.3f} ({low:.3f}-{high:.3f}) {inside} "
                    f"n={measured.true_positives + measured.false_negatives}"
                )
            print(f"  {rule:<20}{point.threshold:>10.4f}  " + "".join(f"{c:<30}" for c in cells))


if __name__ == "__main__":
    main()
