"""The scorer interface (see :mod:`medvision.inference`).

Each model family registers one :class:`Scorer` for its ``(modality, task)``:

- ``prepare(entry, item)`` loads and transforms one study (a
  :func:`medvision.transforms.loading.study_item`-style dictionary with the study
  folder and StudyInstanceUID). It raises
  :class:`medvision.transforms.loading.StudyLoadError` (or another
  :class:`medvision.dicom.reading.DicomReadError`) for a study it cannot load, so
  that one bad study never stops a batch.
- ``score(network, entry, studies, device)`` runs the network on prepared
  studies, batching where it can, and returns one :class:`StudyScore` per study
  in the same order;
- ``transforms(entry)`` returns the evaluation chain ``prepare`` ran, so results
  on the network's grid (heatmaps, masks) can be mapped back through it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch
from monai.transforms.compose import Compose
from torch import nn

from medvision.dicom.reading import DicomReadError
from medvision.modality import Modality
from medvision.models.registry import ModelEntry, Task
from medvision.transforms.loading import UID_KEY, StudyLoadError


@dataclass(frozen=True)
class Location:
    """Where a finding is, in the coordinates of a source DICOM object.

    Attributes
    ----------
    referenced_uid
        SOPInstanceUID of the image (planar) or SeriesInstanceUID of the CT series.
    centre
        Planar: ``(row, column)`` in the source image's pixel grid. CT: ``(x, y, z)``
        in the patient coordinate system (LPS, mm), as DICOM's ImagePositionPatient.
    diameter_mm
        Size of the finding where the model measures it (CT nodules), else ``None``.
    score
        The model's score for this location (probability of the component or peak).
    laterality
        ``"R"``/``"L"`` for a mammography view's breast, else ``""``.
    """

    referenced_uid: str
    centre: tuple[float, ...]
    diameter_mm: float | None = None
    score: float | None = None
    laterality: str = ""


@dataclass(frozen=True)
class PreparedStudy:
    """A study loaded and transformed for one model.

    Attributes
    ----------
    study_instance_uid
        The study.
    inputs
        What the scorer needs: typically the transformed item(s) of the study (one
        per image, or one per mammography view), with their MONAI metadata.
    """

    study_instance_uid: str
    inputs: list[dict[str, Any]]


@dataclass
class StudyScore:
    """A model's raw output for one study.

    Attributes
    ----------
    study_instance_uid
        The study.
    logits
        Per finding of the model, the raw score before calibration (a logit).
    locations
        Per finding, where the model places it (may be empty).
    masks
        Per finding, a mask on the source grid where the model segments (CT), as
        ``(slices, rows, columns)`` uint8 ordered like the series' InstanceNumber.
    grade_logits
        For a model that grades, the logits of its grading scale's further cut
        points, in the scale's order (:mod:`medvision.grading`); else empty.
    """

    study_instance_uid: str
    logits: dict[str, float]
    locations: dict[str, list[Location]] = field(default_factory=dict)
    masks: dict[str, Any] = field(default_factory=dict)
    grade_logits: tuple[float, ...] = ()


class Scorer(Protocol):
    """What a model family provides for inference (see the module docstring)."""

    def transforms(self, entry: ModelEntry) -> Compose:
        """Return the evaluation chain ``prepare`` runs for ``entry`` (to map results back)."""
        ...

    def prepare(self, entry: ModelEntry, item: dict[str, Any]) -> PreparedStudy:
        """Load and transform one study for ``entry``'s network."""
        ...

    def score(
        self,
        network: nn.Module,
        entry: ModelEntry,
        studies: Sequence[PreparedStudy],
        device: torch.device,
    ) -> list[StudyScore]:
        """Score prepared studies (same order as given)."""
        ...


def apply_study_transforms(transforms: Callable[[Any], Any], item: Mapping[str, Any]) -> Any:
    """Run a MONAI chain on a study item; a failure becomes the loader's error.

    MONAI's ``Compose`` wraps an exception of any step in a ``RuntimeError``
    ("applying transform ..."). This unwraps it, so that :meth:`Scorer.prepare`
    raises what its contract says: the loader's
    :class:`~medvision.dicom.reading.DicomReadError` (a
    :class:`~medvision.transforms.loading.StudyLoadError` naming the study), or
    for a later step a :class:`~medvision.transforms.loading.StudyLoadError`
    with that step's message.

    Raises
    ------
    medvision.dicom.reading.DicomReadError
        If the study cannot be loaded or a step of the chain fails on it.
    """
    try:
        return transforms(dict(item))
    except (RuntimeError, ValueError, OSError) as error:
        cause: BaseException = error
        while cause.__cause__ is not None:
            cause = cause.__cause__
        if isinstance(cause, DicomReadError):
            raise cause from None
        raise StudyLoadError(
            f"study {item.get(UID_KEY, '?')}: the transform chain failed "
            f"({type(cause).__name__}: {cause})"
        ) from cause


_SCORERS: dict[tuple[Modality, Task], Callable[[], Scorer]] = {}


def register_scorer(modality: Modality, task: Task, factory: Callable[[], Scorer]) -> None:
    """Register the scorer factory of a model family."""
    _SCORERS[(modality, task)] = factory


def scorer_for(entry: ModelEntry) -> Scorer:
    """Return the scorer for ``entry``'s modality and task.

    Raises
    ------
    LookupError
        If no model family serves that combination.
    """
    _load_families()
    key = (entry.modality, entry.task)
    if key not in _SCORERS:
        raise LookupError(
            f"no scorer for {entry.modality.value} {entry.task.value} models (model {entry.name})"
        )
    return _SCORERS[key]()


def _load_families() -> None:
    """Import the modules that register scorers (kept lazy to avoid import cycles)."""
    import importlib

    for module in _FAMILY_MODULES:
        importlib.import_module(module)


#: Modules that call :func:`register_scorer` when imported.
_FAMILY_MODULES: tuple[str, ...] = (
    "medvision.inference.mammography",
    "medvision.inference.classifier",
    "medvision.inference.ct",
)
