"""Train, calibrate and register an image classifier (chest X-ray, fundus) from a manifest.

The steps, each on the manifest's own splits (phantom sets split by patient):

1. train on ``train`` with the chosen loss (plain BCE, focal, or class-balanced
   focal — Lin et al. 2017; Cui et al. 2019) and optionally a balanced sampler,
   watching AUROC on ``tune`` each epoch;
2. write the fp16 weights with :func:`medvision.models.registry.save_model` and
   reload them (hash verified), so that what is calibrated is what is served;
3. calibrate each finding on ``calibration`` and pick its operating threshold on
   ``tune`` for the target sensitivity with
   :func:`medvision.calibration.refit.calibrate_model`, which scores the studies
   with the model's inference scorer (:mod:`medvision.inference`);
4. write the registry entry (transform chain, thresholds, calibration, SHA-256)
   and report AUROC per finding on ``test`` from the scores step 3 computed.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field, fields, replace
from enum import StrEnum
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.data.dataloader import DataLoader
from monai.data.dataset import CacheDataset, Dataset
from monai.losses.focal_loss import FocalLoss
from numpy.typing import NDArray
from torch import nn
from torch.utils.data import WeightedRandomSampler

from medvision import __version__
from medvision.calibration.grade_thresholds import GradeCalibration
from medvision.calibration.refit import FindingCalibration
from medvision.choices import parse_choice
from medvision.data.manifest import ManifestRow, labelled_rows, resolve
from medvision.grading import GRADE_SCALES, cut_targets, row_grades
from medvision.modality import FINDINGS, LESION_MASKS, Modality
from medvision.models.networks import EvidenceMapDenseNet, build_network
from medvision.models.registry import (
    ModelEntry,
    RegistryError,
    Task,
    WeightsIntegrityError,
    check_test_time_looks,
    load_state_dict,
    read_entry,
)
from medvision.training.imbalance import balanced_sampler_weights, class_balanced_weights
from medvision.training.loop import (
    EpochRecord,
    LossFunction,
    auroc_per_finding,
    mean_tune_auroc,
    seed_everything,
    select_device,
    train_classifier,
)
from medvision.training.registration import register_calibrated
from medvision.transforms import default_chain
from medvision.transforms.chain import TransformChain
from medvision.transforms.intensity import is_share_range
from medvision.transforms.loading import study_item

#: Modalities this trainer serves (one image per study, one logit per finding).
IMAGE_CLASSIFIER_MODALITIES = (Modality.CXR, Modality.FUNDUS)


class LossKind(StrEnum):
    """Training loss of a classifier."""

    BCE = "bce"
    FOCAL = "focal"
    CLASS_BALANCED_FOCAL = "class_balanced_focal"


def default_network(modality: Modality, outputs: int) -> dict[str, Any]:
    """Return the default network description for a modality's classifier.

    A compact DenseNet (Huang et al. 2017) sized for CPU training on phantoms, with
    one evidence map per finding and log-sum-exp pooling
    (:class:`~medvision.models.networks.EvidenceMapDenseNet`).
    """
    channels = 3 if modality == Modality.FUNDUS else 1
    return {
        "architecture": "evidence_densenet",
        "spatial_dims": 2,
        "in_channels": channels,
        "out_channels": outputs,
        "init_features": 16,
        "growth_rate": 12,
        "block_config": [3, 6, 8],
    }


@dataclass(frozen=True)
class TrainOptions:
    """Options of ``medvision train`` for an image classifier.

    Attributes
    ----------
    modality, manifest, out
        What to train on and where the model goes.
    epochs, batch_size, learning_rate, seed
        The run; the same seed on CPU repeats it exactly.
    loss, balanced_sampler
        Imbalance handling (use one of a class-balanced loss or the sampler).
    target_sensitivity
        Sensitivity each finding's threshold must reach on the tune and calibration splits together.
    device
        ``auto``, ``cpu`` or ``cuda``.
    max_studies
        Use at most this many studies per split (for quick runs and tests).
    network
        Network description (``{"architecture": ..., **options}``, as a registry
        entry's ``network``); the modality's default when empty. It must build and
        fit the modality: ``spatial_dims`` (3 for CT, 2 otherwise), ``in_channels``
        (3 for fundus, 1 otherwise) and ``out_channels`` (one per finding; 1 for
        mammography's views and the CT nodule map).
    name, version
        Model name and version for the registry.
    lesion_masks
        Also train the evidence maps on the training studies' ground-truth lesion
        masks (manifest column ``masks``; see
        :func:`medvision.training.loop.train_classifier`).
    input_size
        Network input ``(rows, columns)`` of a 2-D modality's chain instead of the
        chain's default (e.g. mammography at its native 512 x 384); ``None`` keeps
        the default. Recorded in the registry entry, so serving uses it too.
    patch_size
        Mammography with ``lesion_masks``: train on patches of this (rows, columns)
        cut from each view, some around its lesion, instead of whole views; each
        patch's target is whether it holds malignant-lesion pixels
        (:mod:`medvision.transforms.mammo`). Serving always scores whole views.
    patches_per_view
        With ``patch_size``: patches cut from each view per epoch (a batch of
        ``batch_size`` views holds ``batch_size * patches_per_view`` patches).
    patch_symmetries
        With ``patch_size``, or for CT (always trained on patches): flip each patch
        along each axis at random and turn a square one (CT: in the axial plane) by a
        random multiple of 90 degrees.
    workers
        Worker processes that run the random (augmentation, patch) steps of the
        training batches, and threads that run the deterministic loading steps once
        per study; 0 (default) does both in the training process. The same seed and
        the same ``workers`` repeat a CPU run exactly.
    time_limit_seconds
        When set, the training epochs end within this many seconds of the first
        one's start (loading the studies before and calibrating after come on top);
        a run that would not fit trains fewer epochs over a shorter cosine schedule
        (:class:`~medvision.training.loop.EpochPlan`), keeps its best epoch as
        always, and the metrics log's last line says how many epochs ran.
    init_from
        A registry entry (``.json``) whose verified weights start the run instead of
        a fresh initialisation: fine-tuning a model in a new way (e.g. a patch-trained
        mammography model on whole views), or going on from a run made elsewhere.
        Its network is the run's (``network``, when given, must be the same) and its
        modality must be the run's; the metrics log's first line names it and its
        weights' SHA-256.
    spacing_mm
        CT: the chain's voxel spacing (RAS axes, mm) instead of its default
        (:data:`medvision.transforms.ct.SPACING_MM`); recorded in the registry
        entry, so serving resamples the same way.
    positive_fraction
        CT: the share of training patches cut around a nodule instead of the
        chain's default (:class:`medvision.transforms.ct.CtTransforms`); the others
        are centred on dense tissue, where false positives lie.
    dice_per_patch
        CT: the loss's Dice term is computed per patch and averaged, so that each
        patch's nodule weighs the same, small or large, instead of over the whole
        batch (:func:`medvision.training.segmenter.segmentation_loss`).
    dot_enhancement
        CT: the chain appends the Hessian dot filter of the windowed CT as a second
        input channel (:class:`medvision.transforms.ct.CtTransforms`), in training
        and serving; the network takes two input channels.
    lesion_contrast
        CT: ``(low, high)``; half the training patches holding a nodule have it faded
        to a random share of its contrast in that range
        (:class:`medvision.transforms.ct.CtTransforms`), so faint nodules are seen
        as often as conspicuous ones.
    hard_negatives
        CT: the share of the training patches without a nodule centred on the train
        scans' mined false positives (``scripts/mine_ct_hard_negatives.py`` writes
        them as each scan's ``hard_negative`` mask and a manifest pointing at them;
        :class:`medvision.transforms.ct.CtTransforms`). Mammography with a
        ``patch_size``: the share of the patches without a malignant lesion centred
        on the view's benign lesions (its ``benign`` mask;
        :class:`medvision.transforms.mammo.MammoTransforms`).
    grade
        Fundus: also learn the DR grade (:data:`medvision.grading.DR_GRADE`, manifest
        column ``dr_grade``): one more output per further cut point ("grade ≥ 1",
        "≥ 3", "≥ 4"; ``referable_dr`` is "≥ 2"), trained with the loss's binary
        terms. With ``lesion_masks`` each cut point's evidence map is trained on its
        lesions (any lesion; haemorrhages; neovascularisation) in the images at or
        above it only. Recorded in the entry (``grading``); the kept epoch is still
        chosen on the findings' tune AUROC. The cut points have a 1x1 convolution of
        their own (the network's ``grade_outputs``).
    grade_only
        With ``grade`` and ``init_from`` (a model of the same network without the
        grade, such as the bundled one): train only the grade's convolution, on the
        frozen network (:meth:`~medvision.models.networks.EvidenceMapDenseNet.freeze_findings`),
        so the findings' outputs stay exactly those of ``init_from``; the kept epoch
        is chosen on the cut points' mean tune AUROC.
    """

    modality: Modality
    manifest: Path
    out: Path
    epochs: int = 12
    batch_size: int = 16
    learning_rate: float = 2e-3
    seed: int = 0
    loss: LossKind = LossKind.CLASS_BALANCED_FOCAL
    balanced_sampler: bool = False
    target_sensitivity: float = 0.90
    device: str = "auto"
    max_studies: int | None = None
    network: dict[str, Any] = field(default_factory=dict)
    name: str = ""
    version: str = __version__
    lesion_masks: bool = False
    input_size: tuple[int, int] | None = None
    patch_size: tuple[int, int] | None = None
    patches_per_view: int = 4
    patch_symmetries: bool = False
    workers: int = 0
    time_limit_seconds: float | None = None
    init_from: Path | None = None
    spacing_mm: tuple[float, float, float] | None = None
    positive_fraction: float | None = None
    dice_per_patch: bool = False
    dot_enhancement: bool = False
    lesion_contrast: tuple[float, float] | None = None
    hard_negatives: float | None = None
    grade: bool = False
    grade_only: bool = False

    def __post_init__(self) -> None:
        """Check the options (messages are shown to the user as they are)."""
        if self.epochs < 1 or self.batch_size < 1:
            raise ValueError("--epochs and --batch-size must be at least 1")
        if self.workers < 0:
            raise ValueError(f"--workers must be 0 or more, got {self.workers}")
        if self.time_limit_seconds is not None and not 0 < self.time_limit_seconds < math.inf:
            raise ValueError(
                f"--time-limit must be a positive, finite number of seconds, "
                f"got {self.time_limit_seconds}"
            )
        if self.input_size is not None:
            if self.modality == Modality.CT:
                raise ValueError(
                    "--input-size applies to 2-D modalities; the CT segmenter's patch size "
                    "is its chain's roi_size"
                )
            if len(self.input_size) != 2 or min(self.input_size) < 1:
                raise ValueError(
                    f"--input-size takes two positive numbers (rows columns), got {self.input_size}"
                )
        if self.spacing_mm is not None:
            self._check_ct_option(
                "--spacing",
                "2-D modalities are resized to --input-size",
                len(self.spacing_mm) == 3 and all(0 < v < math.inf for v in self.spacing_mm),
                f"takes three positive voxel sizes in mm (RAS axes), got {self.spacing_mm}",
            )
        if self.positive_fraction is not None:
            self._check_ct_option(
                "--positive-fraction",
                "for mammography patches use --balanced-sampler",
                0.0 < self.positive_fraction <= 1.0,
                f"must be in (0, 1], got {self.positive_fraction}",
            )
        if self.dice_per_patch:
            self._check_ct_option("--dice-per-patch", "the classifiers have no Dice term", True, "")
        if self.dot_enhancement:
            self._check_ct_option(
                "--dot-enhancement", "it filters 3-D volumes for blob-like nodules", True, ""
            )
        if self.lesion_contrast is not None:
            self._check_ct_option(
                "--lesion-contrast",
                "it fades nodules in CT training patches",
                is_share_range(self.lesion_contrast),
                f"takes LOW HIGH with 0 <= LOW <= HIGH <= 1, got {self.lesion_contrast}",
            )
        if self.hard_negatives is not None:
            if self.modality == Modality.MAMMO:
                if self.patch_size is None:
                    raise ValueError(
                        "--hard-negatives for mammography centres training patches on benign "
                        "lesions: give --patch-size (and --lesion-masks) too"
                    )
            else:
                self._check_ct_option(
                    "--hard-negatives",
                    "for mammography it centres training patches on benign lesions",
                    True,
                    "",
                )
            if not 0.0 < self.hard_negatives <= 1.0:
                raise ValueError(f"--hard-negatives must be in (0, 1], got {self.hard_negatives}")
        if self.patch_size is not None:
            if self.modality != Modality.MAMMO:
                raise ValueError(
                    "--patch-size applies to mammography (the CT segmenter's patch size "
                    "is its chain's roi_size)"
                )
            if not self.lesion_masks:
                raise ValueError(
                    "--patch-size needs --lesion-masks: a patch's target is whether it holds "
                    "lesion pixels"
                )
            training_chain(self)  # a patch larger than the input is refused now, not later
            if self.loss == LossKind.CLASS_BALANCED_FOCAL:
                raise ValueError(
                    "--patch-size trains on patches whose share with a lesion is set by the "
                    "sampling, but class-balanced weights come from the views' labels; "
                    "use --loss bce or focal (with --balanced-sampler)"
                )
        elif self.patch_symmetries and self.modality != Modality.CT:
            raise ValueError(
                "--patch-symmetries applies to patches: give --patch-size too "
                "(CT always trains on patches)"
            )
        if self.grade and self.modality not in GRADE_SCALES:
            raise ValueError(
                f"--grade: {self.modality.value} has no grading scale (fundus: the DR grade)"
            )
        if self.grade_only and not (self.grade and self.init_from is not None):
            raise ValueError(
                "--grade-only trains the grade on a frozen model: give --grade and "
                "--init-from ENTRY.json too"
            )
        if self.network:
            self._check_network()
        if self.patches_per_view < 1:
            raise ValueError(f"--patches-per-view must be at least 1, got {self.patches_per_view}")
        if not 0.0 < self.target_sensitivity < 1.0:
            raise ValueError(
                f"--target-sensitivity must be in (0, 1), got {self.target_sensitivity}"
            )
        object.__setattr__(self, "loss", parse_choice(LossKind, self.loss, "loss"))

    def _check_network(self) -> None:
        """Refuse a network description that does not build or does not fit the modality."""
        try:
            build_network(self.network)
        except (TypeError, ValueError) as error:
            raise ValueError(f"--network: {error}") from None
        dims = 3 if self.modality == Modality.CT else 2
        if self.network.get("spatial_dims") != dims:
            raise ValueError(
                f"--network: {self.modality.value} needs spatial_dims {dims}, "
                f"got {self.network.get('spatial_dims')}"
            )
        # One channel in (three for colour fundus photographs, two for CT with the dot
        # filter); one logit per finding out, except mammography and CT: one per view,
        # one nodule map; a grade's cut points come from grade_outputs.
        channels = 3 if self.modality == Modality.FUNDUS else 1 + int(self.dot_enhancement)
        outputs = (
            1 if self.modality in (Modality.MAMMO, Modality.CT) else len(FINDINGS[self.modality])
        )
        given = (self.network.get("in_channels"), self.network.get("out_channels"))
        if given != (channels, outputs):
            raise ValueError(
                f"--network: {self.modality.value} needs in_channels {channels} and "
                f"out_channels {outputs}, got {given[0]} and {given[1]}"
            )
        looks = int(self.network.get("test_time_looks", 1))
        try:
            check_test_time_looks(self.modality, self.patch_symmetries, looks)
        except ValueError as error:
            raise ValueError(f"--network: {error}") from None
        cuts = len(GRADE_SCALES[self.modality].cut_points) if self.grade else 0
        if self.network.get("grade_outputs", 0) != cuts:
            raise ValueError(
                f"--network: {'--grade' if self.grade else 'a run without --grade'} needs "
                f"grade_outputs {cuts}, got {self.network.get('grade_outputs', 0)}"
            )

    def _check_ct_option(self, flag: str, elsewhere: str, valid: bool, requirement: str) -> None:
        """Refuse a CT-only option given for another modality, or with a bad value."""
        if self.modality != Modality.CT:
            raise ValueError(f"{flag} applies to CT; {elsewhere}")
        if not valid:
            raise ValueError(f"{flag} {requirement}")


@dataclass(frozen=True)
class TrainingResult:
    """What a training run produced.

    Attributes
    ----------
    entry
        The registered model, as written.
    epochs
        One record per epoch.
    test_auroc
        Per finding, AUROC on the test split (empty without test studies; NaN for
        a finding with one class there).
    calibration
        Per finding, what calibration and threshold selection did.
    kept_epoch
        The epoch whose weights were kept (best mean tune AUROC of the selected outputs).
    grading
        For a grading model, the cut points' thresholds and the kappa they give.
    """

    entry: ModelEntry
    epochs: list[EpochRecord]
    test_auroc: dict[str, float]
    calibration: dict[str, FindingCalibration] = field(default_factory=dict)
    kept_epoch: int = 0
    grading: GradeCalibration | None = None


#: Batch key of the ground-truth lesion masks (``label`` holds the finding labels).
LESION_MASK_KEY = "lesion_mask"


def require_mask_arrays(
    rows: Sequence[ManifestRow], manifest: Path, names: Sequence[str], remedy: str
) -> None:
    """Refuse train rows whose masks file lacks one of ``names`` (checked before loading).

    Only the names of the arrays are read (``<SeriesInstanceUID>__<name>``), so a
    manifest that lacks them (CT: not mined) is refused in seconds, not after minutes
    of caching. ``remedy`` ends the message: how to make them.

    Raises
    ------
    ValueError
        Naming how many studies lack a mask, the first one, and how to make them.
    """
    if not names:
        return
    missing = []
    for row in rows:
        assert row.masks is not None  # require_masks ran first
        with np.load(resolve(manifest, row.masks)) as npz:
            suffixes = {name.rsplit("__", 1)[-1] for name in npz.files}
        if any(name not in suffixes for name in names):
            missing.append(row.study_instance_uid)
    if missing:
        raise ValueError(
            f"--hard-negatives needs the mask {', '.join(names)} in every train study's masks "
            f"file: {len(missing)} lack it (first {missing[0]}); {remedy}"
        )


def training_chain(options: TrainOptions) -> TransformChain:
    """Return the modality's default chain with the options' input and patch sizes.

    Raises
    ------
    ValueError
        If the chain has no such parameter, or refuses the value (a patch larger
        than the input).
    """
    chain = default_chain(options.modality)
    changes: dict[str, Any] = {}
    if options.input_size is not None:
        changes["input_size"] = (int(options.input_size[0]), int(options.input_size[1]))
    if options.patch_size is not None:
        changes["patch_size"] = (int(options.patch_size[0]), int(options.patch_size[1]))
        changes["patches_per_view"] = options.patches_per_view
        if options.patch_symmetries:
            changes["patch_symmetries"] = True
        if options.hard_negatives is not None:
            changes["hard_negatives"] = options.hard_negatives
    known = {item.name for item in fields(chain)}
    for name in changes:
        if name not in known:
            what = name.replace("_", " ")
            raise ValueError(f"the {options.modality.value} chain has no {what} to set")
    return replace(chain, **changes) if changes else chain


def require_masks(rows: Sequence[ManifestRow], split: str, why: str) -> None:
    """Refuse rows without a masks file, naming how many and the first.

    Raises
    ------
    ValueError
        If any row of ``split`` has no ``masks`` in the manifest.
    """
    missing = [row.study_instance_uid for row in rows if row.masks is None]
    if missing:
        raise ValueError(
            f"{why} needs ground-truth masks: {len(missing)} {split} "
            f"{'study has' if len(missing) == 1 else 'studies have'} no masks file (manifest "
            f"column 'masks'; first {missing[0]})"
        )


def split_rows(options: TrainOptions, split: str, findings: Sequence[str]) -> list[ManifestRow]:
    """Return the run's rows of ``split``: its modality, all ``findings`` labelled.

    At most ``options.max_studies`` rows when that is set.
    """
    return labelled_rows(options.manifest, options.modality, split, findings, options.max_studies)


def _initial_entry(options: TrainOptions) -> ModelEntry:
    """Return the ``init_from`` entry, checked against the run (see :class:`TrainOptions`)."""
    path = options.init_from
    if path is None:
        raise ValueError("the run has no --init-from entry")
    try:
        entry = read_entry(path)
    except (OSError, RegistryError) as error:
        raise ValueError(f"--init-from {path}: {error}") from None
    if entry.modality != options.modality:
        raise ValueError(
            f"--init-from {path} is a {entry.modality.value} model; this run trains "
            f"{options.modality.value}"
        )
    if options.network and options.network != entry.network:
        raise ValueError(f"--init-from {path} has another network than the one asked for")
    return entry


def network_for_run(options: TrainOptions, default: dict[str, Any]) -> dict[str, Any]:
    """Return the network the run trains: ``init_from``'s, else ``network``, else ``default``.

    With ``grade``, ``init_from``'s network gains the grade's outputs if it lacks them.

    Raises
    ------
    ValueError
        If ``grade`` asks for outputs an ``init_from`` network cannot take.
    """
    if options.init_from is None:
        return options.network or default
    description = dict(_initial_entry(options).network)
    if options.grade and "grade_outputs" not in description:
        if description.get("architecture") != "evidence_densenet":
            raise ValueError(
                f"--grade adds outputs to an evidence_densenet; --init-from "
                f"{options.init_from} is a {description.get('architecture')}"
            )
        description["grade_outputs"] = len(GRADE_SCALES[options.modality].cut_points)
    return description


def initial_network(options: TrainOptions, description: dict[str, Any]) -> nn.Module:
    """Build the run's network; with ``init_from``, load that entry's verified weights.

    Raises
    ------
    ValueError
        If the entry does not fit the run, or its weights are missing or fail their hash.
    """
    network = build_network(description)
    if options.init_from is not None:
        entry = _initial_entry(options)
        try:
            state = load_state_dict(entry, options.init_from.parent)
        except WeightsIntegrityError as error:
            raise ValueError(f"--init-from: {error}") from None
        added = description.get("grade_outputs") and "grade_outputs" not in entry.network
        missing, unexpected = network.load_state_dict(state, strict=not added)
        new = [key for key in missing if not key.startswith("grade_evidence.")]
        if new or unexpected:  # only the grade's new convolution may start afresh
            raise ValueError(f"--init-from: weights do not fit ({', '.join(new + unexpected)})")
    if options.grade_only:
        if not isinstance(network, EvidenceMapDenseNet):
            raise ValueError("--grade-only needs an evidence_densenet")
        network.freeze_findings()
    return network


def start_metrics_log(options: TrainOptions, name: str) -> Path:
    """Create ``<out>/<name>.metrics.jsonl`` afresh; with ``init_from``, its first line names it.

    A log left by an earlier run of the same name is replaced, not appended to.
    """
    path = options.out / f"{name}.metrics.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    text = ""
    if options.init_from is not None:
        entry = _initial_entry(options)
        start = {
            "initialised_from": str(options.init_from),
            "name": entry.name,
            "version": entry.version,
            "weights_sha256": entry.weights_sha256,
        }
        text = json.dumps(start) + "\n"
    path.write_text(text, encoding="utf-8")
    return path


def _items(
    rows: Sequence[ManifestRow],
    manifest: Path,
    findings: Sequence[str],
    grades: NDArray[np.float32] | None = None,
) -> list[dict[str, Any]]:
    """Return dataset items; ``grades`` (a row of cut-point targets per row) extend the labels."""
    items = []
    for index, row in enumerate(rows):
        label = np.array([row.labels[name] for name in findings], dtype=np.float32)
        if grades is not None:
            label = np.concatenate([label, grades[index]])
        items.append({**study_item(row, manifest), "label": label})
    return items


def _labels(rows: Sequence[ManifestRow], findings: Sequence[str]) -> NDArray[np.int64]:
    return np.array([[row.labels[name] for name in findings] for row in rows], dtype=np.int64)


def training_loss(options: TrainOptions, labels: NDArray[np.int64]) -> LossFunction:
    """Return the loss ``options.loss`` asks for; class-balanced weights from ``labels``.

    ``labels`` are the training targets, ``(samples, findings)`` of 0 and 1
    (Cui et al. 2019 for the class-balanced focal loss).
    """
    if options.loss == LossKind.BCE:
        return torch.nn.BCEWithLogitsLoss()
    if options.loss == LossKind.FOCAL:
        return FocalLoss(gamma=2.0, use_softmax=False)
    positives = labels.sum(axis=0).tolist()
    negatives = (len(labels) - labels.sum(axis=0)).tolist()
    return class_balanced_weights(positives, negatives).focal_loss(gamma=2.0)


def training_loader(
    dataset: Dataset, labels: NDArray[np.int64], options: TrainOptions
) -> DataLoader:
    """Return seeded training batches of ``dataset``: shuffled, or class-balanced draws.

    With ``options.balanced_sampler`` the items are drawn with replacement, those of
    each class of ``labels`` (one row per item) as often as the others.
    """
    sampler = None
    if options.balanced_sampler:
        weights = balanced_sampler_weights(labels)
        sampler = WeightedRandomSampler(
            weights.tolist(),
            num_samples=len(weights),
            replacement=True,
            generator=torch.Generator().manual_seed(options.seed),
        )
    return DataLoader(
        dataset,
        batch_size=options.batch_size,
        shuffle=sampler is None,
        sampler=sampler,
        num_workers=options.workers,
        generator=torch.Generator().manual_seed(options.seed),
    )


def selected_outputs(options: TrainOptions, findings: Sequence[str]) -> tuple[str, ...]:
    """Return the outputs whose mean tune AUROC chooses the kept epoch.

    The findings; with ``grade_only`` (the findings frozen), the grade's cut points.
    """
    if options.grade_only:
        return GRADE_SCALES[options.modality].output_names()
    return tuple(findings)


def fit(
    network: nn.Module,
    batches: tuple[DataLoader, DataLoader],
    options: TrainOptions,
    train_labels: NDArray[np.int64],
    findings: Sequence[str],
    name: str,
    device: torch.device,
    progress: bool,
) -> list[EpochRecord]:
    """Train ``network`` on ``(train, tune)`` batches as the options say.

    The loss is :func:`training_loss`'s; the metrics log is ``<out>/<name>.metrics.jsonl``;
    with ``lesion_masks`` the evidence maps are trained on the masks too
    (:func:`medvision.training.loop.train_classifier`). With ``grade`` the log has the
    cut points' tune AUROC too; the kept epoch is chosen on the findings', or with
    ``grade_only`` on the cut points'.
    """
    train_batches, tune_batches = batches
    scale = GRADE_SCALES[options.modality] if options.grade else None
    cuts = scale.output_names() if scale is not None else ()
    gated = range(len(findings), len(findings) + len(cuts))
    return train_classifier(
        network,
        train_batches,
        tune_batches,
        training_loss(options, train_labels),
        (*findings, *cuts),
        selected=selected_outputs(options, findings),
        epochs=options.epochs,
        learning_rate=options.learning_rate,
        device=device,
        metrics_log=start_metrics_log(options, name),
        progress=progress,
        lesion_mask_key=LESION_MASK_KEY if options.lesion_masks else None,
        gated_mask_channels=tuple(gated),
        time_limit_seconds=options.time_limit_seconds,
    )


def train_image_classifier(options: TrainOptions, progress: bool = True) -> TrainingResult:
    """Train, calibrate, pick thresholds and register a classifier (see the module docstring).

    Raises
    ------
    ValueError
        If a split the run needs has no study, or a finding has no positive case in
        the calibration or tuning split.
    """
    seed_everything(options.seed)
    findings = FINDINGS[options.modality]
    device = select_device(options.device)
    chain = training_chain(options)
    splits = {s: split_rows(options, s, findings) for s in ("train", "tune", "calibration", "test")}
    for split in ("train", "tune", "calibration"):
        if not splits[split]:
            raise ValueError(
                f"no {options.modality.value} study in the {split} split of {options.manifest}"
            )
    scale = GRADE_SCALES[options.modality] if options.grade else None
    grades = {
        split: cut_targets(row_grades(splits[split], scale, split), scale)
        for split in ("train", "tune")
        if scale is not None
    }
    finding_labels = _labels(splits["train"], findings)
    train_labels = (
        np.concatenate([finding_labels, grades["train"].astype(np.int64)], axis=1)
        if scale is not None
        else finding_labels
    )
    mask_names = [LESION_MASKS[options.modality][finding] for finding in findings]
    if scale is not None:
        mask_names += [scale.cut_masks[k] for k in scale.cut_points]
    if options.lesion_masks:
        require_masks(splits["train"], "train", "--lesion-masks")
    train_set = CacheDataset(
        _items(splits["train"], options.manifest, findings, grades.get("train")),
        chain.build(
            training=True,
            mask_key=LESION_MASK_KEY if options.lesion_masks else None,
            mask_names=mask_names,
        ),
        progress=progress,
        num_workers=options.workers,
    )
    train_loader = training_loader(train_set, finding_labels, options)
    evaluation = chain.build(training=False)

    def loader(split: str) -> DataLoader:
        dataset = CacheDataset(
            _items(splits[split], options.manifest, findings, grades.get(split)),
            evaluation,
            progress=progress,
            num_workers=options.workers,
        )
        return DataLoader(dataset, batch_size=options.batch_size, shuffle=False, num_workers=0)

    tune_loader = loader("tune")
    default = default_network(options.modality, len(findings))
    if scale is not None:
        default["grade_outputs"] = len(scale.cut_points)
    network_description = network_for_run(options, default)
    network = initial_network(options, network_description)
    name = options.name or f"{options.modality.value}-densenet"
    batches = (train_loader, tune_loader)
    records = fit(network, batches, options, train_labels, findings, name, device, progress)
    uncalibrated = ModelEntry(
        name=name,
        version=options.version,
        modality=options.modality,
        findings=findings,
        task=Task.CLASSIFICATION,
        network=network_description,
        transforms=chain.describe(),
        input_size=tuple(int(v) for v in getattr(chain, "input_size", ())),
        model_card=f"model_cards/{name}.md",
        grading=scale.name if scale is not None else "",
    )
    registered = register_calibrated(
        network,
        uncalibrated,
        out=options.out,
        manifest=options.manifest,
        splits=splits,
        device=device,
        target_sensitivity=options.target_sensitivity,
        progress=progress,
    )
    written, scores = registered.entry, registered.scores
    test_auroc: dict[str, float] = {}
    if splits["test"]:
        test = scores["test"]
        test_auroc = auroc_per_finding(
            test.logits.astype(np.float32), test.labels.astype(np.float32), findings
        )
    return TrainingResult(
        entry=written,
        epochs=records,
        test_auroc=test_auroc,
        calibration=registered.outcome.findings,
        kept_epoch=max(
            records, key=lambda r: mean_tune_auroc(r, selected_outputs(options, findings))
        ).epoch,
        grading=registered.outcome.grading,
    )
