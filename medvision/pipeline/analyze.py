"""Analyse studies: DICOM in, calibrated and thresholded findings out.

For each study found (:mod:`medvision.pipeline.discovery`) and each registry
model that serves its modality (all of them when several do):

1. the model family's scorer prepares the study (its transform chain) — a study
   that cannot be loaded or decoded becomes a problem, and analysis goes on;
2. prepared studies are scored in batches on the chosen device (the raw logits);
3. logits become calibrated probabilities with the model's calibration, using
   the study site's own calibrator where one was fitted
   (:func:`medvision.calibration.refit.calibrated_probabilities`);
4. a finding is flagged when its probability is at or above the model's
   threshold (:mod:`medvision.calibration.operating_point`);
5. when asked (``explain``), the flagged findings (or all) get Grad-CAM heatmaps on
   their source images (:func:`medvision.explain.explain_study`); a finding that
   cannot be explained keeps its probability and gets a note instead.

A study is either analysed by every model of its modality or reported as a
problem, never half-analysed. Models are loaded once per run, only when a study
needs them; loading verifies the weights' SHA-256
(:func:`medvision.models.registry.load_model`).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, replace
from enum import StrEnum
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from medvision.calibration.refit import calibrated_probabilities
from medvision.choices import parse_choice
from medvision.dicom.reading import DicomReadError
from medvision.explain.heatmaps import explain_study
from medvision.grading import decode_grade
from medvision.inference.scoring import PreparedStudy, Scorer, StudyScore, scorer_for
from medvision.modality import Modality
from medvision.models.registry import (
    BUNDLED_WEIGHTS,
    ModelEntry,
    RegistryError,
    load_model,
    load_registry,
)
from medvision.pipeline.discovery import DiscoveredStudy, discover
from medvision.pipeline.results import AnalysisRun, Finding, Problem, ProblemKind, StudyResult
from medvision.training.loop import select_device

logger = logging.getLogger(__name__)

#: Errors a scorer may raise for one study's data (MONAI wraps step errors in RuntimeError).
STUDY_ERRORS: tuple[type[Exception], ...] = (DicomReadError, RuntimeError, ValueError, OSError)


class Explain(StrEnum):
    """Which findings get Grad-CAM heatmaps: ``none``, the ``flagged`` ones, or ``all``."""

    NONE = "none"
    FLAGGED = "flagged"
    ALL = "all"


class NoModelError(LookupError):
    """The registry folder holds no model: nothing can be analysed."""


@dataclass(frozen=True)
class LoadedModel:
    """A registry model ready to score: entry, verified network and its family's scorer."""

    entry: ModelEntry
    network: nn.Module
    scorer: Scorer


def check_servable(entry: ModelEntry) -> None:
    """Refuse a model without a calibration or threshold for each of its findings.

    Raises
    ------
    RegistryError
        Naming the model and what it lacks, and how to add it.
    """
    for what, values in (("calibration", entry.calibration), ("threshold", entry.thresholds)):
        missing = [finding for finding in entry.findings if finding not in values]
        if missing:
            raise RegistryError(
                f"model {entry.name}: no {what} for {', '.join(missing)}; "
                "run 'medvision calibrate' on it first"
            )


def load_servable_model(entry: ModelEntry, registry: Path, device: torch.device) -> LoadedModel:
    """Check ``entry``, load its verified weights onto ``device`` and find its scorer.

    Raises
    ------
    RegistryError
        If the model lacks calibration or thresholds, no scorer serves its
        modality and task, or its weights are missing or fail the SHA-256 check.
    """
    check_servable(entry)
    try:
        scorer = scorer_for(entry)
    except LookupError as error:
        raise RegistryError(str(error)) from None
    network = load_model(entry, registry).to(device)
    return LoadedModel(entry=entry, network=network, scorer=scorer)


def _cause(error: BaseException, study_instance_uid: str) -> str:
    """Return the innermost message of an error chain (MONAI wraps the loader's error).

    The loader's ``study <UID>: `` prefix is left out: the problem names the study.
    """
    while error.__cause__ is not None:
        error = error.__cause__
    message = str(error) or type(error).__name__
    return message.removeprefix(f"study {study_instance_uid}: ")


def _score(
    model: LoadedModel, prepared: Sequence[PreparedStudy], device: torch.device
) -> list[StudyScore | Exception]:
    """Score a batch; if it fails, score its studies one by one to find the failing ones."""
    try:
        return list(model.scorer.score(model.network, model.entry, prepared, device))
    except STUDY_ERRORS as error:
        if len(prepared) == 1:
            return [error]
    return [_score(model, [study], device)[0] for study in prepared]


def _findings(
    model: LoadedModel, studies: Sequence[DiscoveredStudy], scores: Sequence[StudyScore]
) -> list[list[Finding]]:
    """Return the findings of scored studies: calibrated, thresholded, with the model's identity."""
    entry = model.entry
    logits = np.array(
        [[score.logits[finding] for finding in entry.findings] for score in scores],
        dtype=np.float64,
    ).reshape(len(scores), len(entry.findings))
    probabilities = calibrated_probabilities(entry, logits, [study.site for study in studies])
    scale = entry.grade_scale
    result = []
    for row, score in enumerate(scores):
        findings = []
        for column, name in enumerate(entry.findings):
            probability = float(probabilities[row, column])
            threshold = float(entry.thresholds[name])
            flagged = probability >= threshold
            grade = (
                decode_grade(scale, flagged, probability, score.grade_logits, entry.cut_thresholds)
                if scale is not None and name == scale.finding
                else None
            )
            findings.append(
                Finding(
                    name=name,
                    probability=probability,
                    threshold=threshold,
                    flagged=flagged,
                    locations=list(score.locations.get(name, [])),
                    model_name=entry.name,
                    model_version=entry.version,
                    weights_sha256=entry.weights_sha256,
                    mask=score.masks.get(name),
                    grade=grade,
                )
            )
        result.append(findings)
    return result


def _explained(
    model: LoadedModel,
    prepared: PreparedStudy,
    score: StudyScore,
    findings: list[Finding],
    explain: Explain,
    device: torch.device,
) -> list[Finding]:
    """Return ``findings`` with heatmaps (or a note) for those ``explain`` selects."""
    chosen = [f.name for f in findings if explain == Explain.ALL or f.flagged]
    if not chosen:
        return findings
    explanation = explain_study(
        model.network,
        model.entry,
        prepared,
        score,
        model.scorer.transforms(model.entry),
        chosen,
        device,
    )
    return [
        replace(
            finding,
            heatmaps=[h for h in explanation.heatmaps if h.finding == finding.name],
            explanation_note=explanation.notes.get(finding.name, ""),
        )
        if finding.name in chosen
        else finding
        for finding in findings
    ]


def _run_model(
    model: LoadedModel,
    studies: Sequence[tuple[int, DiscoveredStudy]],
    device: torch.device,
    explain: Explain = Explain.NONE,
) -> tuple[dict[int, list[Finding]], dict[int, Problem]]:
    """Prepare and score numbered studies with one model: findings or a problem per study."""
    entry = model.entry
    problems: dict[int, Problem] = {}
    ready: list[tuple[int, DiscoveredStudy, PreparedStudy]] = []
    for index, study in studies:
        try:
            ready.append((index, study, model.scorer.prepare(entry, study.item())))
        except STUDY_ERRORS as error:
            problems[index] = Problem(
                ProblemKind.UNLOADABLE_STUDY,
                _cause(error, study.study_instance_uid),
                study_instance_uid=study.study_instance_uid,
            )
    outcomes = _score(model, [prepared for _, _, prepared in ready], device)
    scored: list[tuple[int, DiscoveredStudy, StudyScore]] = []
    prepared_of: dict[int, PreparedStudy] = {}
    for (index, study, prepared), outcome in zip(ready, outcomes, strict=True):
        if isinstance(outcome, StudyScore):
            scored.append((index, study, outcome))
            prepared_of[index] = prepared
            continue
        problems[index] = Problem(
            ProblemKind.SCORING_FAILED,
            f"model {entry.name}: {_cause(outcome, study.study_instance_uid)}",
            study_instance_uid=study.study_instance_uid,
        )
    per_study = _findings(model, [study for _, study, _ in scored], [s for _, _, s in scored])
    if explain != Explain.NONE:
        per_study = [
            _explained(model, prepared_of[index], score, found, explain, device)
            for (index, _, score), found in zip(scored, per_study, strict=True)
        ]
    findings = {index: found for (index, _, _), found in zip(scored, per_study, strict=True)}
    return findings, problems


def analyze(
    paths: Sequence[Path],
    *,
    registry: Path = BUNDLED_WEIGHTS,
    device: str = "auto",
    batch_size: int = 16,
    progress: bool = True,
    explain: Explain | str = Explain.NONE,
) -> AnalysisRun:
    """Analyse the DICOM studies in ``paths`` with the registry's models.

    Parameters
    ----------
    paths
        DICOM files and folders (searched recursively). Files that are not DICOM
        are reported as problems, not errors.
    registry
        Folder of registry entries and weights (default: the bundled weights).
    device
        ``auto`` (CUDA when present), ``cpu`` or ``cuda``.
    batch_size
        Studies prepared and scored at once.
    progress
        Show a progress bar over the studies.
    explain
        Which findings get Grad-CAM heatmaps (:class:`Explain`; default none).

    Returns
    -------
    AnalysisRun
        One result per analysed study, and every problem met.

    Raises
    ------
    FileNotFoundError
        If a path does not exist.
    NoModelError
        If ``registry`` holds no model entry.
    ValueError
        For no path, a ``batch_size`` below 1 or an unknown or unavailable
        device; :class:`~medvision.models.registry.RegistryError` (a
        ``ValueError``) for a model that cannot be used (malformed entry, not
        calibrated, weights failing the SHA-256 check).
    """
    if not paths:
        raise ValueError("give at least one DICOM file or folder to analyse")
    for path in paths:
        if not path.exists():
            raise FileNotFoundError(f"{path} does not exist")
    if batch_size < 1:
        raise ValueError(f"batch size must be at least 1, got {batch_size}")
    explain = parse_choice(Explain, explain, "explain")
    torch_device = select_device(device)
    entries = load_registry(registry)
    if not entries:
        raise NoModelError(f"no model entry (<name>.json) in {registry}")
    served: dict[Modality, list[ModelEntry]] = {}
    for entry in entries.values():
        served.setdefault(entry.modality, []).append(entry)

    discovery = discover(paths, served)
    problems = list(discovery.problems)
    loaded: dict[str, LoadedModel] = {}
    findings: dict[int, list[Finding]] = {}
    failed: set[int] = set()
    indexed = list(enumerate(discovery.studies))
    with tqdm(
        total=len(indexed), desc="analysing", unit="study", disable=not progress, leave=False
    ) as bar:
        for modality in Modality:
            group = [(index, study) for index, study in indexed if study.modality == modality]
            for start in range(0, len(group), batch_size):
                chunk = group[start : start + batch_size]
                for entry in served.get(modality, []):
                    if entry.name not in loaded:
                        loaded[entry.name] = load_servable_model(entry, registry, torch_device)
                    pending = [(i, study) for i, study in chunk if i not in failed]
                    done, trouble = _run_model(loaded[entry.name], pending, torch_device, explain)
                    for index, study_findings in done.items():
                        findings.setdefault(index, []).extend(study_findings)
                    failed.update(trouble)
                    problems.extend(trouble.values())
                bar.update(len(chunk))

    results = [
        StudyResult(
            study_instance_uid=study.study_instance_uid,
            modality=study.modality,
            site=study.site,
            manufacturer=study.manufacturer,
            manufacturer_model=study.manufacturer_model,
            sex=study.sex,
            age=study.age,
            findings=findings[index],
        )
        for index, study in indexed
        if index not in failed and index in findings
    ]
    for problem in problems:
        logger.info(
            "not analysed: %s (%s)",
            f"study {problem.study_instance_uid}" if problem.study_instance_uid else "a file",
            problem.kind.value,
        )
    logger.info("analysed %d studies; %d problems", len(results), len(problems))
    return AnalysisRun(results=results, problems=problems)
