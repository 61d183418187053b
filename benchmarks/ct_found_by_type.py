"""CT detection figures of a registered segmenter on chosen studies of an existing manifest.

The figures of ``benchmarks/model_acceptance.py`` (mean Dice; sensitivity for
nodules of 6 mm or more at no more than one false positive per scan and with every
kept component; false positives per scan; the nodules hit per device and per nodule
type; where the mean Dice is lost), for the studies of a manifest instead of a
fresh set: for example the scans a model was trained on, to tell what it did not
learn from what it does not generalise. The studies go through ``medvision.pipeline.analyze`` as in
``medvision predict``.

Usage::

    python benchmarks/ct_found_by_type.py --models DIR --manifest CSV \\
        [--split train [tune ...]] [--studies N]
"""

from __future__ import annotations

import argparse
import time
import warnings
from pathlib import Path

from model_acceptance import SetFigures, ct_figures

from medvision.data.manifest import read_manifest, resolve
from medvision.modality import Modality
from medvision.pipeline import analyze


def main() -> None:
    """Analyse the chosen studies and print their CT detection figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=Path, required=True, help="registry folder")
    parser.add_argument("--manifest", type=Path, required=True)
    parser.add_argument("--split", nargs="+", default=None, help="only these splits")
    parser.add_argument("--studies", type=int, default=None, help="the first N chosen")
    args = parser.parse_args()
    warnings.filterwarnings("ignore", category=UserWarning)
    rows = [
        row
        for row in read_manifest(args.manifest)
        if row.modality == Modality.CT and (args.split is None or row.split in args.split)
    ][: args.studies]
    if not rows:
        raise SystemExit(f"error: no CT study of the chosen split(s) in {args.manifest}")
    started = time.perf_counter()
    run = analyze(
        [resolve(args.manifest, row.path) for row in rows], registry=args.models, progress=True
    )
    figures = SetFigures(
        modality=Modality.CT.value,
        kind="manifest",
        studies=len(run.results),
        problems=len(run.problems),
        seconds=time.perf_counter() - started,
    )
    ct_figures(run.results, {row.study_instance_uid: row for row in rows}, args.manifest, figures)
    seconds, problems = figures.seconds, figures.problems
    print(f"{figures.studies} studies analysed in {seconds:.0f} s, {problems} problem(s)")
    for name, value in figures.extra.items():
        print(f"{name}: {value:.3f}" if isinstance(value, float) else f"{name}: {value}")


if __name__ == "__main__":
    main()
