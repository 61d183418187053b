"""Which U-Net layer explains a CT segmenter's nodule: Grad-CAM at each level, compared.

For each study of a manifest whose scored peak voxel (the voxel whose blended
logit is the study's, :func:`medvision.explain.heatmaps.ct_peak_voxel`) lies in or
within 5 mm of a ground-truth nodule — a flagged true positive as the
faithfulness benchmark counts it — the peak voxel is explained
(:func:`medvision.explain.volume.explain_voxel`) with Grad-CAM at each level of
the MONAI U-Net: the full-resolution skip connection the product uses
(:func:`medvision.explain.gradcam.explanation_layer`), then the skip connections of
the coarser levels and the bottom block. Everything is measured on the model's
grid (RAS, the chain's spacing): the share of heatmaps that are not all zero, the
pointing game (the heatmap's peak in or within 5 mm of a nodule voxel), and the
share of heatmap mass on nodule voxels.

Usage::

    python benchmarks/ct_gradcam_layers.py --model DIR/ct-unet.json \\
        --manifest build/faithfulness-ct/ct/manifest.csv [--studies 40]
"""

from __future__ import annotations

import argparse
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from monai.networks.layers.simplelayers import SkipConnection
from monai.networks.nets.unet import UNet
from scipy import ndimage
from torch import nn

from medvision.data.manifest import read_manifest
from medvision.explain.faithfulness import POINTING_TOLERANCE_MM, mass_inside, pointing_game_hit
from medvision.explain.gradcam import GradCam, HiResCam
from medvision.explain.heatmaps import ct_peak_voxel
from medvision.explain.volume import explain_voxel
from medvision.inference.ct import ITEM_KEY, ct_chain, window_size
from medvision.inference.scoring import scorer_for
from medvision.models.registry import load_model, read_entry
from medvision.training.loop import plain_tensor
from medvision.transforms.loading import IMAGE_KEY, MASK_KEY, study_item


def unet_levels(network: UNet, window: Sequence[int]) -> list[tuple[str, nn.Module]]:
    """Return the U-Net's skip connections, finest first, then its bottom block.

    Each is named with the grid its output has for one ``window`` (MONAI's U-Net
    down-samples in its first block, so the finest skip connection is already at
    half the input's resolution).
    """
    levels: list[tuple[str, nn.Module]] = []
    block: nn.Module = list(network.model.children())[1]
    depth = 0
    while isinstance(block, SkipConnection):
        levels.append((f"skip level {depth}", block))
        inner = list(block.submodule.children())
        block = inner[1] if len(inner) == 3 else block.submodule
        depth += 1
    levels.append(("bottom", block))
    grids: dict[str, tuple[int, ...]] = {}
    hooks = [
        layer.register_forward_hook(
            lambda _module, _inputs, output, name=name: grids.__setitem__(
                name, tuple(output.shape[2:])
            )
        )
        for name, layer in levels
    ]
    with torch.no_grad():
        network(torch.zeros(1, 1, *window))
    for hook in hooks:
        hook.remove()
    return [(f"{name} ({'x'.join(map(str, grids[name]))})", layer) for name, layer in levels]


METHODS: dict[str, type[GradCam]] = {"gradcam": GradCam, "hirescam": HiResCam}


def main(argv: Sequence[str] | None = None) -> int:
    """Explain each flagged true positive at every level and print the tallies."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--manifest", type=Path, required=True)
    parser.add_argument("--studies", type=int, default=40)
    parser.add_argument("--method", choices=sorted(METHODS), default="gradcam")
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    device = torch.device("cpu")
    entry = read_entry(args.model)
    network = load_model(entry, args.model.parent).to(device).eval()
    if not isinstance(network, UNet):
        parser.error(f"{args.model} is not a U-Net segmenter")
    window = window_size(entry)
    levels = unet_levels(network, window)
    scorer = scorer_for(entry)
    chain = ct_chain(entry)
    with_masks = chain.build(False, mask_key=MASK_KEY, mask_names=("nodule",))
    rows = [r for r in read_manifest(args.manifest) if r.labels.get("nodule") == 1]
    non_zero: Counter[str] = Counter()
    hits: Counter[str] = Counter()
    masses: dict[str, list[float]] = {name: [] for name, _ in levels}
    studies = true_positives = 0
    for row in rows[: args.studies]:
        studies += 1
        item = study_item(row, args.manifest)
        prepared = scorer.prepare(entry, dict(item))
        voxel = ct_peak_voxel(network, entry, prepared, 0, device)
        lesion = np.asarray(with_masks(dict(item))[MASK_KEY])[0] > 0.5
        distance = ndimage.distance_transform_edt(~lesion, sampling=chain.spacing_mm)
        if distance[voxel] > POINTING_TOLERANCE_MM:
            continue
        true_positives += 1
        image = plain_tensor(prepared.inputs[0][ITEM_KEY][IMAGE_KEY])
        for name, layer in levels:
            heat = explain_voxel(
                network, image, voxel, window, device=device, cam=METHODS[args.method], layer=layer
            ).heatmap
            if heat.any():
                non_zero[name] += 1
                spacing = chain.spacing_mm
                hits[name] += pointing_game_hit(heat, lesion, POINTING_TOLERANCE_MM, spacing)
                masses[name].append(mass_inside(heat, lesion))
    print(
        f"{args.model.name} ({args.method}): {studies} studies with nodules, {true_positives} "
        f"with the peak voxel within {POINTING_TOLERANCE_MM:g} mm of a nodule"
    )
    print(f"{'layer':<24} {'non-zero':>9} {'pointing game':>14} {'mass inside':>12}")
    for name, _ in levels:
        mass = np.mean(masses[name]) if masses[name] else float("nan")
        print(
            f"{name:<24} {non_zero[name]:>4} of {true_positives:<3} "
            f"{hits[name]:>5} of {true_positives:<6} {mass:>12.3f}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
