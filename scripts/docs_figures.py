"""Render the phantom montages in docs/images (one PNG per modality).

Usage: python scripts/docs_figures.py [--out docs/images]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from medvision.modality import Modality
from medvision.synth.generator import SynthConfig, generate
from medvision.synth.montage import render_montage


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=Path("docs/images"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder)
        config = SynthConfig(tuple(Modality), 12, 7, out, prevalence={"*": 0.5})
        rows = generate(config, progress=True)
        for modality in Modality:
            subset = [row for row in rows if row.modality == modality]
            # Two studies per device where possible, positives and negatives mixed.
            chosen = []
            for model in sorted({row.manufacturer_model for row in subset}):
                chosen.extend([row for row in subset if row.manufacturer_model == model][:2])
            columns = 2 if modality == Modality.MAMMO else 3
            target = args.out / f"phantom_{modality.value}.png"
            render_montage(chosen[:6], out / "manifest.csv", target, columns=columns)
            print(f"wrote {target}")


if __name__ == "__main__":
    main()
