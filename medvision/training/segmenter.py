"""Train, calibrate, register and evaluate the CT nodule segmenter from a manifest.

The steps, each on the manifest's own splits (phantom sets split by patient):

1. train a 3-D U-Net (:func:`default_segmenter_network`) on patches of the
   ``train`` studies: the CT chain in training mode with the nodule mask
   (:class:`~medvision.transforms.ct.CtTransforms`: RAS, 2 mm, HU window, patches
   drawn around nodule voxels, the nodule at a random place in the patch), loss
   Dice + focal (MONAI ``DiceFocalLoss`` on sigmoid outputs; Milletari et al. 2016,
   Lin et al. 2017) or, with ``--loss bce``, Dice + cross-entropy; AdamW with a
   cosine schedule, bf16 autocast on CUDA only;
2. after each epoch, the mean Dice on the ``tune`` studies with a nodule:
   sliding-window inference on the whole volume in model space (RAS, 2 mm),
   nodules found as the scorer finds them
   (:func:`~medvision.inference.ct.find_nodules`), against the resampled mask; and
   the mean soft Dice of the voxel probabilities (no cut). The epoch with the best
   mean tune Dice is kept, ties (early on, every epoch's Dice is 0) broken by the
   soft Dice, so a network that is learning but not yet over the cut is preferred
   to the first epoch;
3. write the fp16 weights and the registry entry
   (:func:`~medvision.models.registry.save_model`), reload them (hash verified)
   and fit the study-level calibration and threshold of ``nodule`` through the
   registered scorer on the ``calibration`` and ``tune`` splits
   (:func:`~medvision.calibration.refit.calibrate_model`), so what is calibrated
   is exactly what is served; write the entry again (same weights, same hash);
4. evaluate the served model on the ``test`` split
   (:func:`~medvision.evaluation.ct_detection.evaluate_ct_detection`).

Each epoch appends one JSON line (train loss, tune Dice, seconds in all and of the
tune Dice, learning rate)
to ``<out>/<name>.metrics.jsonl``; a last line names the kept epoch.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
from monai.data.dataloader import DataLoader
from monai.data.dataset import CacheDataset
from monai.inferers.inferer import SlidingWindowInferer
from monai.losses.dice import DiceCELoss, DiceFocalLoss
from torch import nn
from tqdm.auto import tqdm

from medvision.calibration.refit import (
    FindingCalibration,
)
from medvision.evaluation.ct_detection import (
    CtDetectionEvaluation,
    dice_coefficient,
    evaluate_ct_detection,
    scan_detections,
)
from medvision.inference.ct import find_nodules, nodule_region, predict_logit_map
from medvision.modality import FINDINGS, Modality
from medvision.models.registry import ModelEntry, Task
from medvision.training.classifier import (
    LossKind,
    TrainOptions,
    initial_network,
    network_for_run,
    require_mask_arrays,
    require_masks,
    split_rows,
    start_metrics_log,
)
from medvision.training.loop import (
    EpochPlan,
    autocast,
    place_network,
    plain_tensor,
    seed_everything,
    select_device,
    to_device,
)
from medvision.training.registration import register_calibrated
from medvision.transforms.ct import CtTransforms, CtWindow, sliding_window_inferer
from medvision.transforms.loading import IMAGE_KEY, MASK_KEY, study_item

#: Registry name of the segmenter unless the options give one.
DEFAULT_NAME = "ct-unet"
#: How to make the masks ``--hard-negatives`` needs for CT.
CT_HARD_NEGATIVES_REMEDY = (
    "make them with scripts/mine_ct_hard_negatives.py and train on the manifest it writes"
)
#: AdamW weight decay (as the classifiers').
WEIGHT_DECAY = 1e-4


def default_segmenter_network(in_channels: int = 1) -> dict[str, Any]:
    """Return the default network description of the CT nodule segmenter.

    A 3-D residual U-Net (MONAI ``UNet``; Ronneberger et al. 2015, Kerfoot et al.
    2018) of four levels, 16 to 128 channels and stride-2 down-sampling,
    ``in_channels`` input channels (the chain's: the windowed CT, and the dot filter
    with ``dot_enhancement``) and one output logit channel (``nodule``): about
    0.6 M parameters, sized to train on a CPU.
    """
    return {
        "architecture": "unet",
        "spatial_dims": 3,
        "in_channels": in_channels,
        "out_channels": 1,
        "channels": [16, 32, 64, 128],
        "strides": [2, 2, 2],
        "num_res_units": 1,
    }


@dataclass(frozen=True)
class SegmenterEpochRecord:
    """What one epoch did (one line of the metrics log).

    Attributes
    ----------
    epoch
        1-based epoch number.
    train_loss
        Mean Dice + focal loss over the epoch's patches.
    tune_dice
        Mean Dice over tune studies with a nodule (NaN when there is none).
    tune_soft_dice
        Mean soft Dice of the voxel probabilities over the same studies (NaN as above).
    seconds
        Wall time of the epoch, tune Dice included.
    tune_seconds
        Wall time of the tune Dice alone (the rest trained).
    learning_rate
        The learning rate the epoch trained with.
    """

    epoch: int
    train_loss: float
    tune_dice: float
    tune_soft_dice: float
    seconds: float
    tune_seconds: float
    learning_rate: float


@dataclass(frozen=True)
class SegmenterTrainingResult:
    """What a segmenter training run produced.

    Attributes
    ----------
    entry
        The registry entry as written (calibrated, thresholds set, hash filled in).
    epochs
        One record per epoch.
    kept_epoch
        The epoch whose weights were kept (best mean tune Dice).
    calibration
        Per finding, what calibration did
        (:class:`~medvision.calibration.refit.FindingCalibration`).
    test_evaluation
        Detection and Dice figures on the test split; ``None`` without test studies
        or when one lacks nodule annotations or masks.
    """

    entry: ModelEntry
    epochs: list[SegmenterEpochRecord]
    kept_epoch: int
    calibration: dict[str, FindingCalibration]
    test_evaluation: CtDetectionEvaluation | None


def tune_mean_dice(
    network: nn.Module,
    dataset: CacheDataset | Sequence[Mapping[str, Any]],
    inferer: SlidingWindowInferer,
    device: torch.device,
    window: CtWindow | str,
    progress: bool = False,
) -> tuple[float, float]:
    """Return the mean Dice and mean soft Dice in model space over items with a nodule.

    Each item's whole volume goes through ``inferer``. Dice: the predicted mask is
    the kept nodules of :func:`~medvision.inference.ct.find_nodules` in the lung
    region of the image in ``window`` (:func:`~medvision.inference.ct.nodule_region`),
    as served.
    Soft Dice: ``2 sum(p t) / (sum(p) + sum(t))`` with ``p`` the voxel
    probabilities. The truth is the item's resampled ``label`` mask. Both are NaN
    when no item has a nodule.
    """
    network.eval()
    values, soft_values = [], []
    for index in tqdm(range(len(dataset)), desc="tune Dice", disable=not progress, leave=False):
        item = dataset[index]
        truth = np.asarray(plain_tensor(item[MASK_KEY])[0]) > 0.5
        if not truth.any():
            continue
        logits = predict_logit_map(network, inferer, item[IMAGE_KEY], device)
        region = nodule_region(item[IMAGE_KEY], window)
        labels, _ = find_nodules(logits[0], np.asarray(item[IMAGE_KEY].affine), region=region)
        values.append(dice_coefficient(labels > 0, truth))
        probabilities = 1.0 / (1.0 + np.exp(-np.asarray(logits[0], dtype=np.float64)))
        soft_values.append(
            2.0 * float(probabilities[truth].sum()) / (float(probabilities.sum()) + truth.sum())
        )
    if not values:
        return math.nan, math.nan
    return float(np.mean(values)), float(np.mean(soft_values))


def selection_score(record: SegmenterEpochRecord) -> tuple[float, float]:
    """Return the key the best epoch maximises: tune Dice, then tune soft Dice (NaN is worst)."""
    return (
        -math.inf if math.isnan(record.tune_dice) else record.tune_dice,
        -math.inf if math.isnan(record.tune_soft_dice) else record.tune_soft_dice,
    )


def segmentation_loss(kind: LossKind, dice_per_patch: bool = False) -> nn.Module:
    """Return the segmenter's loss: soft Dice plus the per-voxel term ``kind`` names.

    ``bce`` gives Dice + binary cross-entropy (MONAI ``DiceCELoss``); ``focal`` and
    ``class_balanced_focal`` give Dice + focal (``DiceFocalLoss``, gamma 2): the
    Dice term already balances nodule against background voxels, so there are no
    class weights. Both on sigmoid outputs. By default with ``batch=True``: Dice
    over the whole batch, so patches without a nodule do not each reward an empty
    prediction (their per-patch Dice is undefined), but a large nodule's voxels
    outweigh a small one's. With ``dice_per_patch``, Dice per patch, averaged: each
    patch's nodule weighs the same; a patch without one scores 1 - 1e-5 / (sum of
    its probabilities + 1e-5) (MONAI's smoothing), about 1 for any prediction
    above 1e-5 in all, so its gradient is negligible and the voxel term alone
    teaches it.
    """
    batch = not dice_per_patch
    if kind == LossKind.BCE:
        return DiceCELoss(sigmoid=True, batch=batch)
    return DiceFocalLoss(sigmoid=True, batch=batch)


def collate_patches(items: Sequence[Any]) -> dict[str, torch.Tensor]:
    """Stack training patches (one list of patches per study) into image and mask tensors.

    Only the voxels travel: the MONAI metadata of the patches differs between
    studies (e.g. their series' slice lists) and training needs none of it.
    """
    patches = [patch for item in items for patch in (item if isinstance(item, list) else [item])]
    return {
        IMAGE_KEY: torch.stack([plain_tensor(patch[IMAGE_KEY]) for patch in patches]),
        MASK_KEY: torch.stack([plain_tensor(patch[MASK_KEY]) for patch in patches]),
    }


def train_epoch(
    network: nn.Module,
    batches: Iterable[Mapping[str, Any]],
    loss_function: nn.Module,
    optimiser: torch.optim.Optimizer,
    device: torch.device,
    description: str,
    progress: bool,
) -> float:
    """Train one epoch; return the mean loss per patch."""
    network.train()
    total, count = 0.0, 0
    for batch in tqdm(batches, desc=description, unit="batch", disable=not progress, leave=False):
        image = to_device(batch[IMAGE_KEY], device)
        label = plain_tensor(batch[MASK_KEY]).float().to(device)
        optimiser.zero_grad(set_to_none=True)
        with autocast(device):
            logits = network(image)
        loss = loss_function(logits.float(), label)
        loss.backward()
        optimiser.step()
        total += float(loss.detach()) * len(image)
        count += len(image)
    return total / max(count, 1)


def segmenter_chain(options: TrainOptions, chain: CtTransforms | None = None) -> CtTransforms:
    """Return the CT chain a run trains with: ``chain``, else the default one.

    The default chain takes ``options.spacing_mm``, ``options.positive_fraction``
    ``options.patch_symmetries``, ``options.dot_enhancement``,
    ``options.lesion_contrast`` and ``options.hard_negatives`` when they are set
    (``medvision train --spacing``, ``--positive-fraction``, ``--patch-symmetries``,
    ``--dot-enhancement``, ``--lesion-contrast``, ``--hard-negatives``), its own
    defaults otherwise.

    Raises
    ------
    ValueError
        If ``chain`` is given as well as options that it contradicts.
    """
    changes: dict[str, Any] = {}
    if options.spacing_mm is not None:
        changes["spacing_mm"] = tuple(options.spacing_mm)
    if options.positive_fraction is not None:
        changes["positive_fraction"] = options.positive_fraction
    if options.patch_symmetries:
        changes["patch_symmetries"] = True
    if options.dot_enhancement:
        changes["dot_enhancement"] = True
    if options.lesion_contrast is not None:
        changes["lesion_contrast"] = tuple(options.lesion_contrast)
    if options.hard_negatives is not None:
        changes["hard_negatives"] = options.hard_negatives
    if chain is None:
        return CtTransforms(**changes)
    for name, value in changes.items():
        if getattr(chain, name) != value:
            raise ValueError(
                f"the options' {name} {value} differs from the given chain's "
                f"{getattr(chain, name)}: give one of them"
            )
    return chain


def train_ct_segmenter(
    options: TrainOptions,
    progress: bool = True,
    *,
    chain: CtTransforms | None = None,
) -> SegmenterTrainingResult:
    """Train, register, calibrate and evaluate the CT nodule segmenter (see the module docstring).

    Parameters
    ----------
    options
        The run (:class:`~medvision.training.classifier.TrainOptions`, modality
        ``ct``). ``batch_size`` counts studies: each gives the chain's
        ``samples_per_volume`` patches. ``loss`` picks the per-voxel term beside
        Dice (:func:`segmentation_loss`: ``bce`` gives Dice + cross-entropy, the
        others Dice + focal); ``balanced_sampler`` is ignored (most patches are
        drawn around nodule voxels already). ``max_studies`` limits every split,
        calibration and test included. ``network`` defaults to
        :func:`default_segmenter_network`, ``name`` to :data:`DEFAULT_NAME`.
    progress
        Show progress bars.
    chain
        The CT chain (default parameters, with ``options.spacing_mm`` if set, when
        ``None``); its ``roi_size`` is the
        patch size for training and sliding-window inference.

    Returns
    -------
    SegmenterTrainingResult
        The written entry, the epoch records, calibration and test figures.

    Raises
    ------
    ValueError
        If the modality is not CT, the train split has no study or the tune split
        no study with a nodule, a train or tune study has no masks file, or the
        calibration or tune split lacks positive or negative studies.
    """
    if options.modality != Modality.CT:
        raise ValueError(
            f"the CT segmenter trains on ct studies, the options name {options.modality.value}"
        )
    seed_everything(options.seed)
    findings = FINDINGS[Modality.CT]
    device = select_device(options.device)
    chain = segmenter_chain(options, chain)
    splits = {s: split_rows(options, s, findings) for s in ("train", "tune", "calibration", "test")}
    tune_positive = [row for row in splits["tune"] if all(row.labels[f] for f in findings)]
    if not splits["train"]:
        raise ValueError(f"no ct study in the train split of {options.manifest}")
    if not tune_positive:
        raise ValueError(f"no ct study with a nodule in the tune split of {options.manifest}")
    require_masks(splits["train"], "train", "the CT segmenter")
    require_masks(tune_positive, "tune", "the CT segmenter")
    network_description = network_for_run(options, default_segmenter_network(chain.channels))
    if network_description.get("in_channels") != chain.channels:
        raise ValueError(
            f"the network takes {network_description.get('in_channels')} input channel(s), "
            f"the CT chain gives {chain.channels}"
            + (" (with --dot-enhancement)" if chain.dot_enhancement else "")
        )

    train_names = chain.training_mask_names(findings)
    require_mask_arrays(
        splits["train"], options.manifest, train_names[len(findings) :], CT_HARD_NEGATIVES_REMEDY
    )
    train_transforms = chain.build(True, mask_key=MASK_KEY, mask_names=train_names)
    train_transforms.set_random_state(seed=options.seed)
    train_set = CacheDataset(
        [study_item(row, options.manifest) for row in splits["train"]],
        train_transforms,
        progress=progress,
        num_workers=options.workers,
    )
    train_loader = DataLoader(
        train_set,
        batch_size=options.batch_size,
        shuffle=True,
        num_workers=options.workers,
        generator=torch.Generator().manual_seed(options.seed),
        collate_fn=collate_patches,
    )
    tune_set = CacheDataset(
        [study_item(row, options.manifest) for row in tune_positive],
        chain.build(False, mask_key=MASK_KEY, mask_names=findings),
        progress=progress,
        num_workers=options.workers,
    )
    network = place_network(initial_network(options, network_description), device)
    loss_function = segmentation_loss(options.loss, options.dice_per_patch)
    optimiser = torch.optim.AdamW(
        network.parameters(), lr=options.learning_rate, weight_decay=WEIGHT_DECAY
    )
    inferer = sliding_window_inferer(chain.roi_size)
    name = options.name or DEFAULT_NAME
    options.out.mkdir(parents=True, exist_ok=True)
    metrics_log = start_metrics_log(options, name)

    records: list[SegmenterEpochRecord] = []
    best_state: dict[str, torch.Tensor] | None = None
    best_score: tuple[float, float] = (-math.inf, -math.inf)
    kept_epoch = 0
    plan = EpochPlan(optimiser, options.epochs, options.time_limit_seconds)
    for epoch in plan:
        start = time.perf_counter()
        rate = plan.learning_rate
        train_loss = train_epoch(
            network,
            train_loader,
            loss_function,
            optimiser,
            device,
            f"epoch {epoch}/{plan.epochs}",
            progress,
        )
        tune_start = time.perf_counter()
        dice, soft_dice = tune_mean_dice(network, tune_set, inferer, device, chain.window, progress)
        tune_end = time.perf_counter()
        record = SegmenterEpochRecord(
            epoch=epoch,
            train_loss=train_loss,
            tune_dice=dice,
            tune_soft_dice=soft_dice,
            seconds=tune_end - start,
            tune_seconds=tune_end - tune_start,
            learning_rate=rate,
        )
        records.append(record)
        with metrics_log.open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(asdict(record)) + "\n")
        score = selection_score(record)
        if best_state is None or score > best_score:
            best_score, kept_epoch = score, epoch
            best_state = {k: v.detach().clone() for k, v in network.state_dict().items()}
        plan.end_epoch()
    if best_state is not None:
        network.load_state_dict(best_state)
    with metrics_log.open("a", encoding="utf-8") as handle:
        kept = {
            "kept_epoch": kept_epoch,
            "tune_dice": best_score[0],
            "tune_soft_dice": best_score[1],
            **plan.summary(),
        }
        handle.write(json.dumps(kept) + "\n")

    entry = ModelEntry(
        name=name,
        version=options.version,
        modality=Modality.CT,
        findings=findings,
        task=Task.SEGMENTATION,
        network=network_description,
        transforms=chain.describe(),
        input_size=tuple(int(v) for v in chain.roi_size),
        model_card=f"model_cards/{name}.md",
    )
    # Test scores keep masks and locations for the detection figures.
    registered = register_calibrated(
        network,
        entry,
        out=options.out,
        manifest=options.manifest,
        splits=splits,
        device=device,
        target_sensitivity=options.target_sensitivity,
        progress=progress,
        keep_studies=("test",),
    )
    test_scores = registered.scores["test"].studies
    evaluation = None
    test_rows = splits["test"]
    if test_rows and all(r.annotations is not None and r.masks is not None for r in test_rows):
        evaluation = evaluate_ct_detection(
            [
                scan_detections(score, row, options.manifest)
                for score, row in zip(test_scores, test_rows, strict=True)
            ]
        )
    return SegmenterTrainingResult(
        entry=registered.entry,
        epochs=records,
        kept_epoch=kept_epoch,
        calibration=registered.outcome.findings,
        test_evaluation=evaluation,
    )
