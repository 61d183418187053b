"""How fast the CT training chain supplies patches, against how fast the network takes them.

The CT segmenter trains on patches cut and augmented by the chain's random steps
(lesion-balanced crops, intensity jitter) in DataLoader processes on the CPU. On a
GPU the network's step is fast, so the supply can become the limit. This script
caches ``--studies`` training scans of a manifest through the chain's
deterministic steps (as ``medvision train`` does), then times

- **supply**: ``--batches`` batches of the training DataLoader (``--batch-size``
  studies, the chain's ``samples_per_volume`` patches each) with ``--workers``
  processes, and nothing else;
- **network**: the training step of the default segmenter (forward, Dice + focal
  loss, backward, AdamW; the trainer's own ``train_epoch``, bf16 autocast on CUDA)
  over the same batches, on ``--device``, once with contiguous weights and once
  channels-last 3-D (the script also prints which of the two the trainer uses
  there, :func:`~medvision.training.loop.network_memory_format`: channels-last 3-D
  on the CPU, contiguous on CUDA);

and prints patches per second for each. Usage::

    python benchmarks/ct_patch_supply.py --manifest build/bundled/ct-plus/manifest.csv \\
        --studies 24 --batches 30 --workers 1 \\
        [--dot-enhancement] [--patch-symmetries] [--hard-negatives 0.5]

(the last three build the chain as ``medvision train``'s options of those names do;
``--hard-negatives`` needs a manifest of mined scans, such as
``scripts/mine_ct_hard_negatives.py`` writes).
"""

from __future__ import annotations

import argparse
import time
import warnings
from collections.abc import Sequence
from pathlib import Path

import torch
from monai.data.dataset import CacheDataset
from torch.utils.data import DataLoader

from medvision.modality import FINDINGS, Modality
from medvision.models.networks import build_network
from medvision.training.classifier import (
    LossKind,
    TrainOptions,
    require_mask_arrays,
    require_masks,
    split_rows,
)
from medvision.training.loop import network_memory_format, select_device
from medvision.training.segmenter import (
    CT_HARD_NEGATIVES_REMEDY,
    WEIGHT_DECAY,
    collate_patches,
    default_segmenter_network,
    segmentation_loss,
    segmenter_chain,
    train_epoch,
)
from medvision.transforms.loading import IMAGE_KEY, MASK_KEY, study_item


def train_step(
    network: torch.nn.Module,
    batches: list[dict[str, torch.Tensor]],
    optimiser: torch.optim.Optimizer,
    device: torch.device,
) -> None:
    """Train ``network`` on ``batches`` with the trainer's own step and loss; wait for CUDA."""
    train_epoch(
        network, batches, segmentation_loss(LossKind.FOCAL), optimiser, device, "network", False
    )
    if device.type == "cuda":
        torch.cuda.synchronize()


def main(argv: Sequence[str] | None = None) -> int:
    """Time the supply and the network step (see the module docstring)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--manifest", type=Path, required=True)
    parser.add_argument("--studies", type=int, default=24, help="training scans to cache")
    parser.add_argument("--batches", type=int, default=30)
    parser.add_argument("--batch-size", type=int, default=4, help="studies per batch")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--device", default="auto")
    parser.add_argument(
        "--dot-enhancement", action="store_true", help="the chain of medvision train's option"
    )
    parser.add_argument(
        "--patch-symmetries", action="store_true", help="the chain of medvision train's option"
    )
    parser.add_argument(
        "--hard-negatives",
        type=float,
        default=None,
        help="the chain of medvision train's option (the manifest needs their masks)",
    )
    args = parser.parse_args(argv)
    if min(args.studies, args.batches, args.batch_size) < 1:
        parser.error("--studies, --batches and --batch-size must be at least 1")
    # MONAI warns for every patch of a study whose nodule is too small to sample around.
    warnings.filterwarnings("ignore", message="Num foregrounds")
    options = TrainOptions(
        modality=Modality.CT,
        manifest=args.manifest,
        out=Path("."),
        batch_size=args.batch_size,
        max_studies=args.studies,
        workers=args.workers,
        dot_enhancement=args.dot_enhancement,
        patch_symmetries=args.patch_symmetries,
        hard_negatives=args.hard_negatives,
    )
    findings = FINDINGS[Modality.CT]
    chain = segmenter_chain(options)
    mask_names = chain.training_mask_names(findings)
    transforms = chain.build(True, mask_key=MASK_KEY, mask_names=mask_names)
    transforms.set_random_state(seed=0)
    rows = split_rows(options, "train", findings)
    if not rows:  # an empty loader would never fill the batches
        parser.error(f"no ct study in the train split of {args.manifest}")
    try:  # refused as medvision train refuses them, before minutes of caching
        require_masks(rows, "train", "the CT training chain")
        require_mask_arrays(
            rows, args.manifest, mask_names[len(findings) :], CT_HARD_NEGATIVES_REMEDY
        )
    except ValueError as error:
        parser.error(str(error))
    started = time.perf_counter()
    dataset = CacheDataset(
        [study_item(row, args.manifest) for row in rows],
        transforms,
        progress=False,
        num_workers=args.workers,
    )
    print(f"cached {len(rows)} training scans in {time.perf_counter() - started:.1f} s")
    loader = DataLoader(
        dataset,
        batch_size=args.batch_size,
        shuffle=True,
        num_workers=args.workers,
        collate_fn=collate_patches,
        persistent_workers=args.workers > 0,
    )
    batches: list[dict[str, torch.Tensor]] = []
    patches = 0
    started = time.perf_counter()
    while len(batches) < args.batches:
        for batch in loader:
            batches.append(batch)
            patches += len(batch[IMAGE_KEY])
            if len(batches) == args.batches:
                break
    supply = time.perf_counter() - started
    print(
        f"supply: {patches} patches in {supply:.1f} s with {args.workers} worker(s): "
        f"{patches / supply:.1f} patches/s"
    )
    device = select_device(args.device)
    network_description = default_segmenter_network(chain.channels)
    placed = network_memory_format(build_network(network_description), device)
    print(f"the trainer places 3-D networks on {device} as {placed}")
    layouts = {"contiguous": torch.contiguous_format, "channels-last 3-D": torch.channels_last_3d}
    for label, layout in layouts.items():
        torch.manual_seed(0)
        network = build_network(network_description).to(device).train()
        network.to(memory_format=layout)  # type: ignore[call-overload]
        optimiser = torch.optim.AdamW(network.parameters(), lr=1e-3, weight_decay=WEIGHT_DECAY)

        train_step(network, batches[:1], optimiser, device)  # warm-up: kernels, allocator
        started = time.perf_counter()
        train_step(network, batches, optimiser, device)
        taken = time.perf_counter() - started
        print(
            f"network on {device}, {label} ({layout}): {patches} patches in {taken:.1f} s: "
            f"{patches / taken:.1f} patches/s"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
