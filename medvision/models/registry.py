"""The model registry: what each model is, how to feed it, and how far to trust its weights.

An entry is a JSON file beside its weights file. It records the model's name,
version, modality, findings, task, network description, transform chain,
operating thresholds, calibration parameters, model card, and the SHA-256 of the
weights file. Loading a model verifies that hash first and then reads the
weights with ``torch.load(weights_only=True)``, so a tampered or truncated file
is refused and no pickled code is ever run.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from enum import StrEnum
from pathlib import Path
from typing import Any

import torch
from torch import nn

from medvision.grading import GradeScale, scale_named
from medvision.modality import FINDINGS, Modality
from medvision.models.networks import build_network, check_looks

#: Where the bundled weights and their registry entries live.
BUNDLED_WEIGHTS = Path(__file__).parent / "weights"


class Task(StrEnum):
    """What a model's output means."""

    CLASSIFICATION = "classification"
    SEGMENTATION = "segmentation"


class RegistryError(ValueError):
    """A registry entry that cannot be used (malformed, or naming unknown findings)."""


class WeightsIntegrityError(RegistryError):
    """A weights file whose SHA-256 differs from the registry's, or that is missing."""


@dataclass(frozen=True)
class ModelEntry:
    """One model of the registry.

    Attributes
    ----------
    name, version
        Model name and version (reported with every finding).
    modality
        The modality the model serves.
    findings
        Output channels in order (for segmentation: the finding derived from the mask).
    task
        Classification (one logit per finding) or segmentation (a mask).
    network
        Description for :func:`medvision.models.networks.build_network`.
    transforms
        Name and parameters of the transform chain that prepares the input.
    input_size
        Spatial size the network expects (a patch size for sliding-window models).
    thresholds
        Per finding, the operating threshold on the calibrated probability.
    calibration
        Per finding, the calibrator's parameters (``medvision.calibration``).
    weights_file
        File name of the weights, relative to the entry's folder.
    weights_sha256
        Hex SHA-256 of the weights file.
    model_card
        Path of the model card, relative to the repository's ``docs/``.
    grading
        The grading scale the model also reports (``dr_grade``; :mod:`medvision.grading`),
        or empty. Its further cut points are the network's outputs after the findings'.
    grade_thresholds
        Per further cut point (by output name, ``dr_grade_ge_1`` …), the threshold its
        probability must reach for the grade to reach it (chosen by calibration;
        one half where absent).
    """

    name: str
    version: str
    modality: Modality
    findings: tuple[str, ...]
    task: Task
    network: dict[str, Any]
    transforms: dict[str, Any]
    input_size: tuple[int, ...]
    thresholds: dict[str, float] = field(default_factory=dict)
    calibration: dict[str, dict[str, Any]] = field(default_factory=dict)
    weights_file: str = ""
    weights_sha256: str = ""
    model_card: str = ""
    grading: str = ""
    grade_thresholds: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        """Check the entry against the modality's findings and its own thresholds."""
        unknown = [f for f in self.findings if f not in FINDINGS[self.modality]]
        if unknown:
            raise RegistryError(
                f"model {self.name}: finding(s) {', '.join(unknown)} are not "
                f"{self.modality.value} findings ({', '.join(FINDINGS[self.modality])})"
            )
        for finding, threshold in self.thresholds.items():
            if finding not in self.findings:
                raise RegistryError(f"model {self.name}: threshold for unknown finding {finding}")
            if not 0.0 <= threshold <= 1.0:
                raise RegistryError(
                    f"model {self.name}: threshold of {finding} must be in [0, 1], got {threshold}"
                )
        if self.grading:
            try:
                scale = scale_named(self.grading, self.modality)
            except ValueError as error:
                raise RegistryError(f"model {self.name}: {error}") from None
            if scale.finding not in self.findings:
                raise RegistryError(
                    f"model {self.name}: grading {scale.name} needs the finding {scale.finding}"
                )
        for name, threshold in self.grade_thresholds.items():
            if name not in self.output_names[len(self.findings) :]:
                raise RegistryError(f"model {self.name}: grade threshold for unknown output {name}")
            if not 0.0 <= threshold <= 1.0:
                raise RegistryError(
                    f"model {self.name}: grade threshold of {name} must be in [0, 1], "
                    f"got {threshold}"
                )
        looks = self.network.get("test_time_looks", 1)
        if looks != 1:
            symmetries = bool(self.transforms.get("parameters", {}).get("patch_symmetries"))
            try:
                check_test_time_looks(self.modality, symmetries, int(looks))
            except (TypeError, ValueError) as error:
                raise RegistryError(f"model {self.name}: {error}") from None

    @property
    def grade_scale(self) -> GradeScale | None:
        """The grading scale the model reports, or ``None``."""
        return scale_named(self.grading, self.modality) if self.grading else None

    @property
    def output_names(self) -> tuple[str, ...]:
        """Names of the network's outputs: the findings, then the grade's further cut points."""
        scale = self.grade_scale
        return self.findings + (scale.output_names() if scale is not None else ())

    @property
    def cut_thresholds(self) -> tuple[float, ...]:
        """The grade's further cut points' thresholds, in order (one half where not chosen)."""
        scale = self.grade_scale
        names = scale.output_names() if scale is not None else ()
        return tuple(float(self.grade_thresholds.get(name, 0.5)) for name in names)

    def to_json(self) -> str:
        """Return the entry as JSON text."""
        document = asdict(self)
        document["modality"] = self.modality.value
        document["task"] = self.task.value
        return json.dumps(document, indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_mapping(cls, document: Mapping[str, Any]) -> ModelEntry:
        """Build an entry from parsed JSON.

        Raises
        ------
        RegistryError
            For a missing or unknown key, or a value of the wrong kind.
        """
        if not isinstance(document, Mapping):
            raise RegistryError(
                f"expected a JSON object with the model's fields, got a {type(document).__name__}"
            )
        fields = set(cls.__dataclass_fields__)
        unknown = sorted(set(document) - fields)
        if unknown:
            raise RegistryError(f"unknown registry key(s): {', '.join(unknown)}")
        try:
            values = dict(document)
            values["modality"] = Modality.parse(str(values["modality"]))
            values["task"] = Task(values["task"])
            values["findings"] = tuple(values["findings"])
            values["input_size"] = tuple(int(v) for v in values["input_size"])
            values["thresholds"] = {k: float(v) for k, v in values.get("thresholds", {}).items()}
            values["grade_thresholds"] = {
                k: float(v) for k, v in values.get("grade_thresholds", {}).items()
            }
            return cls(**values)
        except (KeyError, TypeError, ValueError) as error:
            if isinstance(error, RegistryError):
                raise
            raise RegistryError(f"malformed registry entry: {error}") from None


def check_test_time_looks(modality: Modality, patch_symmetries: bool, looks: int) -> None:
    """Refuse test-time looks (``test_time_looks`` of the network) a model cannot use.

    Averaging mirror images is sound for a network that learned its lesions whichever
    way up they lay: a mammography model trained on mirrored patches
    (``--patch-symmetries``). A chest X-ray upside down or mirrored is another
    anatomy, and a network never shown mirrored lesions has no reason to score
    them alike.

    Raises
    ------
    ValueError
        For a number of looks the network cannot make
        (:func:`~medvision.models.networks.check_looks`), or more than one look for
        another modality or a model trained without patch symmetries.
    """
    check_looks(looks)
    if looks == 1:
        return
    if modality != Modality.MAMMO:
        raise ValueError(
            f"test-time looks are for mammography models, not {modality.value}: mirror "
            "images of other images are not the same anatomy"
        )
    if not patch_symmetries:
        raise ValueError(
            "test-time looks need a model trained on mirrored patches (--patch-symmetries)"
        )


def with_test_time_looks(entry: ModelEntry, looks: int) -> ModelEntry:
    """Return ``entry`` whose network averages ``looks`` mirror images when scoring.

    Its calibration and thresholds belong to the old logits: refit them
    (:func:`medvision.calibration.recalibration.recalibrate` does).

    Raises
    ------
    ValueError
        See :func:`check_test_time_looks` (the entry checks it, as every entry
        does); also for a network without evidence maps.
    """
    if entry.network.get("architecture") != "evidence_densenet":
        raise ValueError(
            f"model {entry.name}: test-time looks need an evidence-map network "
            f"(evidence_densenet), not {entry.network.get('architecture')}"
        )
    check_looks(looks)
    network = {key: value for key, value in entry.network.items() if key != "test_time_looks"}
    if looks > 1:
        network["test_time_looks"] = looks
    return replace(entry, network=network)


def sha256_of(path: Path) -> str:
    """Return the hex SHA-256 of a file."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def read_entry(path: Path) -> ModelEntry:
    """Read one registry entry (``<name>.json``).

    Raises
    ------
    RegistryError
        If the file is not valid JSON or not a valid entry (the message names it).
    """
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise RegistryError(f"{path}: not valid JSON ({error})") from None
    try:
        return ModelEntry.from_mapping(document)
    except RegistryError as error:
        raise RegistryError(f"{path}: {error}") from None


def load_registry(directory: Path = BUNDLED_WEIGHTS) -> dict[str, ModelEntry]:
    """Return every entry in ``directory``, by model name."""
    entries = [read_entry(path) for path in sorted(directory.glob("*.json"))]
    return {entry.name: entry for entry in entries}


def load_state_dict(entry: ModelEntry, directory: Path) -> dict[str, torch.Tensor]:
    """Verify the weights file's SHA-256, then load it with ``weights_only=True``.

    Raises
    ------
    WeightsIntegrityError
        If the file is missing or its hash differs from the entry's.
    """
    path = directory / entry.weights_file
    if not path.is_file():
        raise WeightsIntegrityError(f"model {entry.name}: weights file {path} is missing")
    actual = sha256_of(path)
    if actual != entry.weights_sha256:
        raise WeightsIntegrityError(
            f"model {entry.name}: {path} has SHA-256 {actual}, registry expects "
            f"{entry.weights_sha256}; refusing to load"
        )
    state = torch.load(path, map_location="cpu", weights_only=True)
    return {
        key: value.float() if value.is_floating_point() else value for key, value in state.items()
    }


def load_model(entry: ModelEntry, directory: Path = BUNDLED_WEIGHTS) -> nn.Module:
    """Build the entry's network, load its verified weights, and put it in eval mode."""
    network = build_network(entry.network)
    network.load_state_dict(load_state_dict(entry, directory))
    network.eval()
    return network


def save_model(network: nn.Module, entry: ModelEntry, directory: Path) -> ModelEntry:
    """Write the network's weights (fp16) and the entry with their SHA-256.

    Parameters
    ----------
    network
        The trained network.
    entry
        Its registry entry; ``weights_file`` defaults to ``<name>.pt``.
    directory
        Where to write ``<weights_file>`` and ``<name>.json``.

    Returns
    -------
    ModelEntry
        The entry as written, with ``weights_file`` and ``weights_sha256`` filled in.
    """
    directory.mkdir(parents=True, exist_ok=True)
    weights_file = entry.weights_file or f"{entry.name}.pt"
    state = {
        key: value.detach().to("cpu").half() if value.is_floating_point() else value.to("cpu")
        for key, value in network.state_dict().items()
    }
    path = directory / weights_file
    torch.save(state, path)
    written = replace(entry, weights_file=weights_file, weights_sha256=sha256_of(path))
    (directory / f"{entry.name}.json").write_text(written.to_json(), encoding="utf-8")
    return written
