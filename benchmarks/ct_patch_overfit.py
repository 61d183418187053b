"""Check that the CT segmenter can learn its training patches: loss and patch Dice per step.

A quick sanity check of the segmenter's recipe (loss, learning rate) before a long
run: fresh CT phantoms, all with nodules, are loaded once through the CT chain's
deterministic steps; then each step draws 4 studies, cuts the chain's training
patches from them (two thirds around a nodule voxel) and takes one AdamW step on the
default network (:func:`~medvision.training.segmenter.default_segmenter_network`)
with :func:`~medvision.training.segmenter.segmentation_loss`. Every 25 steps it
prints the step's loss, the Dice of its patches at probability 0.5, and the nodule
and predicted voxel counts. A recipe that cannot fit these patches in a few hundred
steps will not learn whole volumes either. Usage::

    python benchmarks/ct_patch_overfit.py --loss focal --learning-rate 1e-2 [--steps 400]
"""

from __future__ import annotations

import argparse
import random
import tempfile
import time
import warnings
from pathlib import Path

import torch

from medvision.modality import FINDINGS, Modality
from medvision.models.networks import build_network
from medvision.synth.generator import SynthConfig, generate
from medvision.training.classifier import LossKind
from medvision.training.mammography import split_chain
from medvision.training.segmenter import (
    WEIGHT_DECAY,
    collate_patches,
    default_segmenter_network,
    segmentation_loss,
)
from medvision.transforms.ct import CtTransforms
from medvision.transforms.loading import IMAGE_KEY, MASK_KEY, study_item


def main() -> None:
    """Print one line every 25 steps."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--loss", default="focal", help="bce, focal or class_balanced_focal")
    parser.add_argument("--learning-rate", type=float, default=1e-2)
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--studies", type=int, default=12, help="phantoms with nodules")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    # MONAI warns for every patch of a study whose nodule is too small to sample around.
    warnings.filterwarnings("ignore", message="Num foregrounds")
    random.seed(args.seed)
    torch.manual_seed(args.seed)
    chain = CtTransforms()
    load, patches = split_chain(
        chain.build(True, mask_key=MASK_KEY, mask_names=FINDINGS[Modality.CT])
    )
    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder)
        config = SynthConfig((Modality.CT,), args.studies, 7, out, prevalence={"*": 1.0})
        rows = generate(config, progress=False)
        studies = [load(study_item(row, out / "manifest.csv")) for row in rows]
    network = build_network(default_segmenter_network())
    loss_function = segmentation_loss(LossKind(args.loss))
    optimiser = torch.optim.AdamW(
        network.parameters(), lr=args.learning_rate, weight_decay=WEIGHT_DECAY
    )
    print(f"loss {args.loss}, learning rate {args.learning_rate}, {len(studies)} studies")
    header = ("step", "loss", "patch Dice", "nodule voxels", "predicted", "s")
    print(
        " ".join(
            f"{name:>{width}}" for name, width in zip(header, (5, 6, 10, 13, 9, 6), strict=True)
        )
    )
    start = time.perf_counter()
    for step in range(1, args.steps + 1):
        batch = collate_patches([patches(random.choice(studies)) for _ in range(4)])
        image, truth = batch[IMAGE_KEY], batch[MASK_KEY].float()
        logits = network(image)
        loss = loss_function(logits, truth)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        if step % 25 == 0:
            predicted, nodule = logits.detach() > 0, truth > 0.5
            both = int((predicted & nodule).sum())
            dice = 2 * both / max(int(predicted.sum()) + int(nodule.sum()), 1)
            print(
                f"{step:>5} {float(loss.detach()):>6.3f} {dice:>10.3f} {int(nodule.sum()):>13} "
                f"{int(predicted.sum()):>9} {time.perf_counter() - start:>6.1f}",
                flush=True,
            )


if __name__ == "__main__":
    main()
