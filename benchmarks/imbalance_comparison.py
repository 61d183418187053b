"""Compare plain BCE with imbalance-aware training on the same data, epochs and seed.

Trains one classifier per loss set-up on the manifest's ``train`` split (model
selection on ``tune``, as ``medvision train`` does) and reports, per finding on the
``test`` split, AUROC, AUPRC (average precision; chance = prevalence) and
sensitivity at 90 % specificity. Prints a Markdown table for ``docs/training.md``.

Usage::

    medvision synth --modality cxr --studies 1500 --seed 37 --out cxr-real
    python benchmarks/imbalance_comparison.py --manifest cxr-real/manifest.csv \
        --modality cxr --epochs 10 --lesion-masks --out /tmp/compare \
        --setups "plain BCE" "class-balanced focal"
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from medvision.calibration.refit import score_rows
from medvision.data.manifest import read_manifest
from medvision.evaluation.classification import discrimination
from medvision.modality import Modality
from medvision.models.registry import load_model
from medvision.training.classifier import LossKind, TrainOptions, train_image_classifier
from medvision.training.loop import select_device

#: The set-ups compared: (label, loss, balanced sampler).
SETUPS: tuple[tuple[str, LossKind, bool], ...] = (
    ("plain BCE", LossKind.BCE, False),
    ("class-balanced focal", LossKind.CLASS_BALANCED_FOCAL, False),
    ("BCE + balanced sampler", LossKind.BCE, True),
)


def main() -> None:
    """Train each set-up and print the comparison table."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--manifest", type=Path, required=True)
    parser.add_argument("--modality", default="cxr")
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--learning-rate", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--setups", nargs="*", default=[label for label, _, _ in SETUPS])
    parser.add_argument(
        "--lesion-masks", action="store_true", help="as medvision train --lesion-masks"
    )
    args = parser.parse_args()
    modality = Modality.parse(args.modality)
    device = select_device("auto")
    rows = [r for r in read_manifest(args.manifest) if r.modality == modality]
    test_rows = [r for r in rows if r.split == "test"]
    train_rows = [r for r in rows if r.split == "train"]
    lines = [
        "| finding | train positives | test positives / cases | set-up | AUROC | AUPRC "
        "| sensitivity at 90 % specificity |",
        "|---|---|---|---|---|---|---|",
    ]
    for label, loss, sampler in SETUPS:
        if label not in args.setups:
            continue
        out = args.out / label.replace(" ", "-").replace("+", "and")
        start = time.perf_counter()
        result = train_image_classifier(
            TrainOptions(
                modality=modality,
                manifest=args.manifest,
                out=out,
                epochs=args.epochs,
                learning_rate=args.learning_rate,
                seed=args.seed,
                loss=loss,
                balanced_sampler=sampler,
                lesion_masks=args.lesion_masks,
            ),
            progress=False,
        )
        minutes = (time.perf_counter() - start) / 60
        network = load_model(result.entry, out)
        scores = score_rows(network, result.entry, test_rows, args.manifest, device, progress=False)
        print(f"{label}: trained in {minutes:.1f} min", flush=True)
        for column, finding in enumerate(result.entry.findings):
            figures = discrimination(scores.logits[:, column], scores.labels[:, column])
            positives = sum(r.labels[finding] for r in train_rows)
            lines.append(
                f"| {finding} | {positives} | {figures.positives} / {figures.cases} | {label} "
                f"| {figures.auroc:.3f} | {figures.auprc:.3f} "
                f"| {figures.sensitivity_at_90_specificity:.3f} |"
            )
    print("\n".join(lines))


if __name__ == "__main__":
    main()
