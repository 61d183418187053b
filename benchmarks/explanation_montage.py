"""Draw a montage of heatmap overlays, one flagged true positive per model and finding.

For each model of the registry (the CT segmenter too: its overlay is the slice
through the heatmap's peak), fresh phantoms with every finding present
(seed 9201, the training sites) are analysed as ``medvision explain`` does; for each
finding the first study where it is flagged gets its overlay (the first heatmap,
i.e. the first view for mammography). The overlays are scaled to one height and
placed side by side, with the phantom's ground-truth lesion outlined in green, so
that a reader can judge where the heatmap points against where the lesion is.

Usage::

    python benchmarks/explanation_montage.py --models medvision/models/weights \\
        --work build/montage --out docs/images/explanation_montage.png
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from pathlib import Path

import numpy as np
from numpy.typing import NDArray
from PIL import Image
from scipy import ndimage

from medvision.explain.faithfulness import lesion_mask
from medvision.modality import LESION_MASKS, Modality
from medvision.models.registry import load_registry
from medvision.pipeline import analyze
from medvision.pipeline.overlays import RenderedHeatmap, rendered_heatmaps
from medvision.synth.catalogue import site_named
from medvision.synth.generator import SynthConfig, generate

SEED = 9201
HEIGHT = 420
TRAINING_SITES = (
    "Northfield University Hospital",
    "Riverside Community Clinic",
    "St Brendan's General",
)


def _outline(picture: NDArray[np.uint8], lesion: NDArray[np.bool_]) -> NDArray[np.uint8]:
    """Draw the lesion's outline in green on the image part of ``picture``."""
    edge = lesion & ~ndimage.binary_erosion(lesion, iterations=2)
    out = picture.copy()
    rows, columns = lesion.shape
    out[:rows, :columns][edge] = (0, 220, 0)
    return out


def _lesion_on_picture(
    masks: Mapping[str, NDArray[np.generic]], modality: Modality, name: str, item: RenderedHeatmap
) -> NDArray[np.bool_] | None:
    """Return the ground-truth lesion on the image an overlay shows (None if there is none).

    A 2-D mask is the referenced image's; a CT mask is the series' volume, of which
    the overlay shows the slice through the heatmap's peak (``Heatmap.values`` is
    that slice of ``Heatmap.volume``, both in InstanceNumber order).
    """
    heatmap = item.heatmap
    if heatmap.volume is None:
        return lesion_mask(masks, modality, name, heatmap.referenced_uid)
    (series,) = {key.split("__")[0] for key in masks}
    volume = lesion_mask(masks, modality, name, series)
    if volume is None:
        return None
    index = next(
        k for k, plane in enumerate(heatmap.volume) if np.array_equal(plane, heatmap.values)
    )
    return volume[index]


def main() -> None:
    """Write the montage and print what it shows."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--models", type=Path, required=True)
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--studies", type=int, default=8)
    args = parser.parse_args()
    tiles: list[Image.Image] = []
    for entry in load_registry(args.models).values():
        if entry.modality not in LESION_MASKS:
            continue
        folder = args.work / entry.modality.value
        config = SynthConfig(
            (entry.modality,),
            args.studies,
            SEED,
            folder,
            sites=tuple(site_named(name) for name in TRAINING_SITES),
            prevalence={"*": 1.0},
            split="test",
        )
        rows = {row.study_instance_uid: row for row in generate(config, progress=False)}
        data = [folder / entry.modality.value]
        run = analyze(data, registry=args.models, explain="flagged", progress=False)
        shown: set[str] = set()
        for item in rendered_heatmaps(run, data):
            name = item.finding.name
            row = rows[item.result.study_instance_uid]
            if name in shown or item.number != 1 or row.masks is None or not row.labels[name]:
                continue
            lesion = _lesion_on_picture(np.load(folder / row.masks), entry.modality, name, item)
            picture = item.picture if lesion is None else _outline(item.picture, lesion)
            tile = Image.fromarray(picture, mode="RGB")
            tiles.append(tile.resize((round(tile.width * HEIGHT / tile.height), HEIGHT)))
            shown.add(name)
            print(
                f"{entry.name} {name}: study {item.result.study_instance_uid}, probability "
                f"{item.finding.probability:.2f}, threshold {item.finding.threshold:.2f}"
            )
    if not tiles:
        raise SystemExit("no flagged true positive to show")
    montage = Image.new("RGB", (sum(t.width for t in tiles), HEIGHT), (0, 0, 0))
    offset = 0
    for tile in tiles:
        montage.paste(tile, (offset, 0))
        offset += tile.width
    args.out.parent.mkdir(parents=True, exist_ok=True)
    montage.save(args.out)
    print(f"wrote {args.out} ({montage.width} x {montage.height})")


if __name__ == "__main__":
    main()
