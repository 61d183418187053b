"""Time the phantom generator: 100 studies per modality, written to disk as DICOM.

Usage: python benchmarks/synth_speed.py [--studies 100] [--workers 0]
Prints, per modality, the wall time, studies per second and files written.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from medvision.dicom.reading import iter_files
from medvision.modality import Modality
from medvision.synth.generator import SynthConfig, generate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--studies", type=int, default=100)
    parser.add_argument("--workers", type=int, default=0, help="0: one per core")
    args = parser.parse_args()
    print(f"cores: {os.cpu_count()}, studies per modality: {args.studies}")
    print(f"{'modality':<8} {'seconds':>8} {'studies/s':>10} {'files':>7} {'MB':>7}")
    for modality in Modality:
        with tempfile.TemporaryDirectory() as folder:
            out = Path(folder)
            config = SynthConfig((modality,), args.studies, 2026, out, workers=args.workers)
            start = time.perf_counter()
            generate(config, progress=False)
            seconds = time.perf_counter() - start
            files = [p for p in iter_files(out / modality.value)]
            megabytes = sum(p.stat().st_size for p in files) / 1e6
            print(
                f"{modality.value:<8} {seconds:>8.1f} {args.studies / seconds:>10.2f} "
                f"{len(files):>7} {megabytes:>7.1f}"
            )


if __name__ == "__main__":
    main()
