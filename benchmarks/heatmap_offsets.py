"""Where a 2-D model's heatmap peaks lie relative to the lesion, per finding.

A check for mapping errors behind a weak pointing game: run after
``benchmarks/explanation_faithfulness.py``, on the phantom set it generated under
``--out`` (``OUT/<modality>``), it analyses those studies again with explanations
(as ``medvision explain`` does) and, for every heatmap of a flagged true positive
whose image shows the lesion, takes the peak's offset from the lesion's centroid
(rows, columns, source-image pixels). Per finding it prints the heatmaps, the
pointing-game hits (peak within 15 pixels of the lesion), the median offset of the
hits and of the misses, and the heat at the lesion's hottest pixel relative to
the peak for the misses. A mapping error (a flip or crop not undone, a shift of
the resize) shows as hits whose median offset is not near zero, or misses all
displaced the same way; a model that looks elsewhere shows as misses scattered in
every direction. Usage::

    python benchmarks/heatmap_offsets.py --models build/gpu-session3/sym \\
        --phantoms build/faithfulness-mammo-sym/mammo
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from scipy import ndimage

from medvision.data.manifest import read_manifest
from medvision.explain.faithfulness import POINTING_TOLERANCE_PX, lesion_mask
from medvision.models.registry import read_entry
from medvision.pipeline import analyze


def main(argv: Sequence[str] | None = None) -> int:
    """Analyse the phantom set and print the offsets (see the module docstring)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", type=Path, required=True, help="registry folder")
    parser.add_argument("--phantoms", type=Path, required=True, help="folder with manifest.csv")
    parser.add_argument("--device", default="auto")
    args = parser.parse_args(argv)
    entries = [read_entry(path) for path in sorted(args.models.glob("*.json"))]
    rows = {row.study_instance_uid: row for row in read_manifest(args.phantoms / "manifest.csv")}
    folders = sorted({(args.phantoms / row.path).parent for row in rows.values()})
    run = analyze(folders, registry=args.models, device=args.device, explain="flagged")
    offsets: dict[tuple[str, str], list[tuple[float, float, float, float]]] = {}
    for result in run.results:
        row = rows[result.study_instance_uid]
        if row.masks is None:
            continue
        masks = np.load(args.phantoms / row.masks)
        for found in result.findings:
            if not found.flagged or row.labels.get(found.name) != 1:
                continue
            entry = next(e for e in entries if e.name == found.model_name)
            for heatmap in found.heatmaps:
                if heatmap.volume is not None:
                    continue  # 3-D heatmaps: not this check
                lesion = lesion_mask(masks, entry.modality, found.name, heatmap.referenced_uid)
                if lesion is None or not lesion.any():
                    continue
                values = heatmap.values
                peak = np.unravel_index(int(np.argmax(values)), values.shape)
                centre_row, centre_column = ndimage.center_of_mass(lesion)
                distance = float(ndimage.distance_transform_edt(~lesion)[peak])
                relative = float(values[lesion].max()) / max(float(values.max()), 1e-12)
                offsets.setdefault((found.model_name, found.name), []).append(
                    (peak[0] - centre_row, peak[1] - centre_column, distance, relative)
                )
    print("model / finding: heatmaps, hits; median (row, column) offset of hits, of misses;")
    print("  the misses' heat at the lesion's hottest pixel / the peak (median)")
    for (model, finding), items in sorted(offsets.items()):
        table = np.asarray(items)
        hit = table[:, 2] <= POINTING_TOLERANCE_PX
        hits, misses = table[hit], table[~hit]

        def median(part: np.ndarray, column: int, style: str = "+.1f") -> str:
            return format(np.median(part[:, column]), style) if len(part) else "-"

        print(
            f"{model} / {finding}: {len(table)} heatmaps, {int(hit.sum())} hits; "
            f"hits ({median(hits, 0)}, {median(hits, 1)}) px, "
            f"misses ({median(misses, 0)}, {median(misses, 1)}) px, "
            f"misses' lesion heat {median(misses, 3, '.2f')}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
