"""Measure domain shift between devices: lesion contrast-to-noise ratio per device.

The same phantom lesions (same seeds) are acquired on every device of a modality,
so differences come from the devices alone.

Usage: python benchmarks/synth_domain_shift.py [--studies 20] [--modalities cxr ...]
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile
from pathlib import Path

import numpy as np

from medvision.modality import Modality
from medvision.synth.catalogue import devices_for
from medvision.synth.conspicuity import contrast_to_noise
from medvision.synth.generator import SynthConfig, make_spec, modality_generator


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--studies", type=int, default=20, help="positive studies per device")
    parser.add_argument("--seed", type=int, default=2026)
    parser.add_argument("--modalities", nargs="*", default=[m.value for m in Modality])
    args = parser.parse_args()
    print(f"{'modality':<8} {'device':<18} {'conspicuity':>11} {'lesion CNR':>10} {'sd':>6}")
    with tempfile.TemporaryDirectory() as folder:
        for modality in (Modality.parse(name) for name in args.modalities):
            config = SynthConfig(
                (modality,), args.studies, args.seed, Path(folder), prevalence={"*": 1.0}
            )
            generator = modality_generator(modality)
            for device in devices_for(modality):
                ratios = []
                for index in range(args.studies):
                    spec = dataclasses.replace(make_spec(config, modality, index), device=device)
                    ratios.append(contrast_to_noise(generator.generate_study(spec), modality))
                print(
                    f"{modality.value:<8} {device.model:<18} {device.conspicuity:>11.2f} "
                    f"{np.mean(ratios):>10.2f} {np.std(ratios):>6.2f}"
                )


if __name__ == "__main__":
    main()
