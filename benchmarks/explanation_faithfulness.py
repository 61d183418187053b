"""Measure how faithful the Grad-CAM heatmaps are, per model, on fresh phantoms.

For every model of the registry (the 2-D classifiers and the CT segmenter, whose
heatmaps are 3-D) a fresh phantom set is generated (seed 9101, the training sites,
prevalence 0.5, every study in ``test``) and analysed as
``medvision explain`` does (``analyze(..., explain="flagged")``). Then, per model and
finding, over the **flagged true positives** (flagged, and the phantom has the
finding) and each of their heatmaps whose image shows the lesion:

- **pointing game**: the share of heatmaps whose peak lies on the lesion or within
  15 pixels of it (CT: the 3-D peak within 5 mm of the nodule; Wilson 95 % interval);
- **mass inside**: the mean share of the heatmap on lesion pixels (voxels), beside the
  mean lesion area (volume) fraction (what a uniform heatmap would score);
- **randomisation check** (Adebayo et al. 2018): for up to ``--randomised`` of those
  studies, the heatmap of a copy of the network with all weights drawn anew, and the
  mean Spearman rank correlation with the trained model's heatmap (CT: both explain
  the trained model's peak voxel, compared within the windows covering it); passes
  at 0.5 or below. Where the randomised network finds no evidence at all in an
  image (an all-zero map, which the pipeline reports as a note, not a heatmap),
  there is no ranking to correlate: such images are counted apart
  (``randomised_empty``) and left out of the mean;
- **cost**: median time to explain one finding of one study, over the median time
  of the forward pass that scored it (both on the chosen device, one study at a time).

Usage::

    python benchmarks/explanation_faithfulness.py --models medvision/models/weights \\
        --out build/faithfulness [--studies 200] [--randomised 30] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from medvision.data.manifest import ManifestRow
from medvision.explain.faithfulness import (
    POINTING_TOLERANCE_MM,
    POINTING_TOLERANCE_PX,
    RANDOMISATION_MAX_CORRELATION,
    lesion_mask,
    mass_inside,
    pointing_game_hit,
    randomised_copy,
    rank_correlation,
)
from medvision.explain.heatmaps import ct_peak_voxel, explain_study
from medvision.explain.volume import explain_voxel
from medvision.inference.ct import ITEM_KEY, window_size
from medvision.inference.scoring import PreparedStudy, scorer_for
from medvision.modality import LESION_MASKS
from medvision.models.registry import ModelEntry, load_model, load_registry
from medvision.pipeline import analyze
from medvision.pipeline.results import AnalysisRun, Finding
from medvision.statistics import wilson_interval
from medvision.synth.catalogue import site_named
from medvision.synth.generator import SynthConfig, generate
from medvision.training.loop import plain_tensor, select_device
from medvision.transforms.loading import IMAGE_KEY, study_item
from validation.ct_inputs import series_geometry

SEED = 9101
PREVALENCE = 0.5
TRAINING_SITES = (
    "Northfield University Hospital",
    "Riverside Community Clinic",
    "St Brendan's General",
)


@dataclass
class Tally:
    """What was counted for one finding before the figures are computed."""

    positives: int = 0
    hits: int = 0
    heatmaps: int = 0
    masses: list[float] = field(default_factory=list)
    fractions: list[float] = field(default_factory=list)
    correlations: list[float] = field(default_factory=list)
    randomised: int = 0
    randomised_empty: int = 0
    explain_seconds: list[float] = field(default_factory=list)
    forward_seconds: list[float] = field(default_factory=list)


@dataclass
class FindingFaithfulness:
    """The figures of one model's finding (see the module docstring)."""

    model: str
    finding: str
    flagged_true_positives: int
    heatmaps: int
    pointing_hits: int
    pointing_rate: float
    pointing_ci: tuple[float, float]
    mass_inside: float
    lesion_fraction: float
    randomised_studies: int
    randomised_empty: int
    randomised_correlation: float
    randomisation_passes: bool | None
    explain_seconds: float
    forward_seconds: float


def _mean(values: list[float]) -> float:
    return float(np.nanmean(values)) if values else float("nan")


def _median(values: list[float]) -> float:
    return float(np.median(values)) if values else float("nan")


@dataclass
class Context:
    """A model, its phantom set and run, and what the randomisation check needs."""

    entry: ModelEntry
    folder: Path
    rows: dict[str, ManifestRow]
    run: AnalysisRun
    network: nn.Module
    randomised: nn.Module
    device: torch.device


def _localise(context: Context, row: ManifestRow, found: Finding, tally: Tally) -> None:
    assert row.masks is not None
    masks = np.load(context.folder / row.masks)
    modality = context.entry.modality
    for heatmap in found.heatmaps:
        if heatmap.volume is None:
            values, spacing, tolerance = heatmap.values, None, float(POINTING_TOLERANCE_PX)
            lesion = lesion_mask(masks, modality, found.name, heatmap.referenced_uid)
        else:  # CT: the 3-D heatmap against the series' nodule mask, distances in mm
            (series,) = {key.split("__")[0] for key in masks.files}
            geometry = series_geometry(context.folder / row.path, series)
            values, spacing, tolerance = heatmap.volume, geometry.spacing_mm, POINTING_TOLERANCE_MM
            lesion = lesion_mask(masks, modality, found.name, series)
        if lesion is None or not lesion.any():
            continue
        tally.heatmaps += 1
        tally.hits += pointing_game_hit(values, lesion, tolerance, spacing)
        tally.masses.append(mass_inside(values, lesion))
        tally.fractions.append(float(lesion.mean()))


def _randomise(context: Context, row: ManifestRow, finding: str, tally: Tally) -> None:
    entry, device = context.entry, context.device
    scorer = scorer_for(entry)
    transforms = scorer.transforms(entry)
    study = scorer.prepare(entry, study_item(row, context.folder / "manifest.csv"))
    start = time.perf_counter()
    (score,) = scorer.score(context.network, entry, [study], device)
    tally.forward_seconds.append(time.perf_counter() - start)
    start = time.perf_counter()
    trained = explain_study(context.network, entry, study, score, transforms, [finding], device)
    tally.explain_seconds.append(time.perf_counter() - start)
    tally.randomised += 1
    if trained.heatmaps and trained.heatmaps[0].volume is not None:
        tally.correlations.append(_ct_randomised_correlation(context, study, finding))
        return
    random = explain_study(
        context.randomised, entry, study, score, transforms, [finding], device, check_logits=False
    )
    theirs_of = {heatmap.referenced_uid: heatmap for heatmap in random.heatmaps}
    for ours in trained.heatmaps:
        theirs = theirs_of.get(ours.referenced_uid)
        if theirs is None:  # the randomised network's map of this image is all zero
            tally.randomised_empty += 1
        else:
            tally.correlations.append(rank_correlation(ours.values, theirs.values))


def _ct_randomised_correlation(context: Context, study: PreparedStudy, finding: str) -> float:
    """CT: both networks explain the trained model's peak voxel; compare where that can differ.

    The randomised network would pick a voxel of its own, and two heatmaps of
    different voxels share only zeros; so both explain the trained model's voxel,
    and the rank correlation is taken over the windows that cover it (model grid).
    """
    entry, device = context.entry, context.device
    channel = entry.findings.index(finding)
    image = plain_tensor(study.inputs[0][ITEM_KEY][IMAGE_KEY])
    voxel = ct_peak_voxel(context.network, entry, study, channel, device)
    window = window_size(entry)
    ours = explain_voxel(context.network, image, voxel, window, device=device, channel=channel)
    theirs = explain_voxel(context.randomised, image, voxel, window, device=device, channel=channel)
    return rank_correlation(ours.heatmap[ours.region], theirs.heatmap[ours.region])


def _figures(context: Context, finding: str, tally: Tally) -> FindingFaithfulness:
    nan = float("nan")
    correlation = _mean(tally.correlations)
    passes = None if np.isnan(correlation) else bool(correlation <= RANDOMISATION_MAX_CORRELATION)
    return FindingFaithfulness(
        model=context.entry.name,
        finding=finding,
        flagged_true_positives=tally.positives,
        heatmaps=tally.heatmaps,
        pointing_hits=tally.hits,
        pointing_rate=tally.hits / tally.heatmaps if tally.heatmaps else nan,
        pointing_ci=wilson_interval(tally.hits, tally.heatmaps) if tally.heatmaps else (nan, nan),
        mass_inside=_mean(tally.masses),
        lesion_fraction=_mean(tally.fractions),
        randomised_studies=tally.randomised,
        randomised_empty=tally.randomised_empty,
        randomised_correlation=correlation,
        randomisation_passes=passes,
        explain_seconds=_median(tally.explain_seconds),
        forward_seconds=_median(tally.forward_seconds),
    )


def _context(entry: ModelEntry, models: Path, out: Path, studies: int, device: str) -> Context:
    folder = out / entry.modality.value
    config = SynthConfig(
        (entry.modality,),
        studies,
        SEED,
        folder,
        sites=tuple(site_named(name) for name in TRAINING_SITES),
        prevalence={"*": PREVALENCE},
        split="test",
    )
    rows = {row.study_instance_uid: row for row in generate(config, progress=True)}
    run = analyze(
        [folder / entry.modality.value], registry=models, device=device, explain="flagged"
    )
    torch_device = select_device(device)
    network = load_model(entry, models).to(torch_device)
    return Context(entry, folder, rows, run, network, randomised_copy(network), torch_device)


def measure(
    models: Path, out: Path, studies: int, randomised: int, device: str
) -> list[FindingFaithfulness]:
    """Measure every model of ``models`` (classifiers, CT segmenter); one record per finding."""
    figures: list[FindingFaithfulness] = []
    for entry in load_registry(models).values():
        if entry.modality not in LESION_MASKS:
            continue
        context = _context(entry, models, out, studies, device)
        for finding in entry.findings:
            tally = Tally()
            for result in context.run.results:
                row = context.rows[result.study_instance_uid]
                found = next(
                    f for f in result.findings if f.name == finding and f.model_name == entry.name
                )
                if not found.flagged or row.labels.get(finding) != 1 or row.masks is None:
                    continue
                tally.positives += 1
                _localise(context, row, found, tally)
                if tally.positives <= randomised and found.heatmaps:
                    _randomise(context, row, finding, tally)
            figures.append(_figures(context, finding, tally))
    return figures


def main() -> None:
    """Print one line per model and finding."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--models", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--studies", type=int, default=200)
    parser.add_argument("--randomised", type=int, default=30)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    figures = measure(args.models, args.out, args.studies, args.randomised, args.device)
    print(
        f"{'model':<16} {'finding':<18} {'TP':>4} {'maps':>5} {'pointing (95% CI)':>22} "
        f"{'mass in':>8} {'area':>6} {'rand rho':>8} {'empty':>5} {'check':>5} "
        f"{'explain/forward':>16}"
    )
    for f in figures:
        ci = f"{f.pointing_rate:.2f} ({f.pointing_ci[0]:.2f}-{f.pointing_ci[1]:.2f})"
        ratio = f"{f.explain_seconds:.3f}/{f.forward_seconds:.3f} s"
        check = {True: "pass", False: "FAIL", None: "n/a"}[f.randomisation_passes]
        print(
            f"{f.model:<16} {f.finding:<18} {f.flagged_true_positives:>4} {f.heatmaps:>5} "
            f"{ci:>22} {f.mass_inside:>8.3f} {f.lesion_fraction:>6.3f} "
            f"{f.randomised_correlation:>8.2f} {f.randomised_empty:>5} {check:>5} {ratio:>16}"
        )
    if args.json is not None:
        args.json.write_text(json.dumps([asdict(f) for f in figures], indent=2) + "\n")


if __name__ == "__main__":
    main()
