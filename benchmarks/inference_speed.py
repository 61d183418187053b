"""Measure inference speed per modality: images (or volumes) per second and per-study latency.

For every model of the registry, a small fresh phantom set is generated, then:

- **latency**: one study at a time, loading and transforms (``prepare``) plus the
  network and post-processing (``score``), as ``medvision predict`` does for a
  single study — median and 90th percentile over the studies;
- **throughput**: all prepared studies scored in batches of ``--batch-size``,
  counted in images (a mammography view, a CT volume) per second of network and
  post-processing time, loading excluded.

The device is ``auto`` (the GPU when there is one). Usage::

    python benchmarks/inference_speed.py [--models medvision/models/weights] \
        [--studies 16] [--batch-size 16] [--device auto]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from medvision.data.manifest import read_manifest
from medvision.inference.scoring import PreparedStudy, scorer_for
from medvision.models.registry import BUNDLED_WEIGHTS, load_model, load_registry
from medvision.synth.generator import SynthConfig, generate
from medvision.training.loop import select_device
from medvision.transforms.loading import study_item


def main() -> None:
    """Print one line per model."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--models", type=Path, default=BUNDLED_WEIGHTS)
    parser.add_argument("--studies", type=int, default=16)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()
    device = select_device(args.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(f"device: {name}; torch threads: {torch.get_num_threads()}")
    print(
        f"{'model':<16} {'modality':<8} {'studies':>7} {'images':>6} {'latency median s':>16} "
        f"{'p90 s':>6} {'images/s':>9} {'studies/s':>9}"
    )
    for entry in load_registry(args.models).values():
        network = load_model(entry, args.models).to(device)
        scorer = scorer_for(entry)
        with tempfile.TemporaryDirectory() as folder:
            out = Path(folder)
            generate(
                SynthConfig((entry.modality,), args.studies, 7, out, workers=1), progress=False
            )
            manifest = out / "manifest.csv"
            items = [study_item(row, manifest) for row in read_manifest(manifest)]
            # Warm-up (first-call allocations, cuDNN autotuning) is not timed.
            scorer.score(network, entry, [scorer.prepare(entry, items[0])], device)
            latencies: list[float] = []
            prepared: list[PreparedStudy] = []
            for item in items:
                start = time.perf_counter()
                study = scorer.prepare(entry, item)
                scorer.score(network, entry, [study], device)
                if device.type == "cuda":
                    torch.cuda.synchronize()
                latencies.append(time.perf_counter() - start)
                prepared.append(study)
            start = time.perf_counter()
            for first in range(0, len(prepared), args.batch_size):
                scorer.score(network, entry, prepared[first : first + args.batch_size], device)
            if device.type == "cuda":
                torch.cuda.synchronize()
            seconds = time.perf_counter() - start
        images = sum(len(study.inputs) for study in prepared)
        print(
            f"{entry.name:<16} {entry.modality.value:<8} {len(prepared):>7} {images:>6} "
            f"{np.median(latencies):>16.3f} {np.percentile(latencies, 90):>6.3f} "
            f"{images / seconds:>9.1f} {len(prepared) / seconds:>9.2f}"
        )


if __name__ == "__main__":
    main()
