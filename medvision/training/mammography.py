"""Train, calibrate and register a screening-mammography model from a manifest.

The network is a per-view classifier: one view in (``(1, 256, 192)`` by default,
``--input-size`` to change it; chest wall on the left,
:mod:`medvision.transforms.mammo`), one logit out, the malignancy of
the breast that view shows. A view's training target is therefore its breast's
label (``malignancy_left`` or ``malignancy_right`` by its ImageLaterality). The
per-breast and per-study findings are aggregated from the views by the scorer
(:class:`medvision.inference.mammography.MammographyScorer`), which calibration
and serving both use. The steps, each on the manifest's own splits:

1. expand each ``train`` study into its views (the chain's deterministic steps
   run once and are kept; the random augmentation runs per epoch) — or, with a
   ``patch_size``, into patches cut from the views afresh each epoch, some around
   the lesion, each patch's target whether it holds malignant-lesion pixels
   (:class:`PatchLabeld`) — and train with
   the chosen loss (plain BCE, focal, or class-balanced focal — Lin et al. 2017;
   Cui et al. 2019) and optionally a balanced sampler over views, keeping the
   epoch with the best per-view AUROC on ``tune``
   (:func:`medvision.training.loop.train_classifier`);
2. write the fp16 weights and the registry entry
   (:func:`medvision.models.registry.save_model`);
3. reload the weights as served (hash verified, fp16-rounded) and score
   ``calibration``, ``tune`` and ``test`` per study through the scorer; calibrate
   each of ``malignancy``, ``malignancy_left`` and ``malignancy_right`` and choose
   its threshold (:func:`medvision.calibration.refit.calibrate_model`); write the
   entry again with calibration and thresholds;
4. report held-out test AUROC per finding and the per-breast AUROC (left and
   right breasts pooled as separate cases).
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.data.dataloader import DataLoader
from monai.data.dataset import Dataset
from monai.transforms.compose import Compose
from monai.transforms.traits import RandomizableTrait
from monai.transforms.transform import MapTransform
from numpy.typing import NDArray
from sklearn.metrics import roc_auc_score
from tqdm.auto import tqdm

from medvision.calibration.refit import FindingCalibration, SplitScores
from medvision.data.manifest import ManifestRow
from medvision.inference.mammography import BREAST_FINDINGS, breast_finding
from medvision.modality import FINDINGS, Modality
from medvision.models.registry import ModelEntry, Task
from medvision.training.classifier import (
    LESION_MASK_KEY,
    TrainOptions,
    default_network,
    fit,
    initial_network,
    network_for_run,
    require_mask_arrays,
    require_masks,
    split_rows,
    training_chain,
    training_loader,
)
from medvision.training.loop import (
    EpochRecord,
    auroc_per_finding,
    plain_tensor,
    seed_everything,
    select_device,
)
from medvision.training.registration import register_calibrated
from medvision.transforms.loading import IMAGE_KEY, study_item
from medvision.transforms.mammo import BENIGN_MASK, MammoTransforms

#: Default model name.
DEFAULT_NAME = "mammo-densenet"
#: The network's one output: malignancy of the breast the view shows.
VIEW_FINDING = "malignancy_of_view_breast"
#: Key of a view item's training target.
LABEL_KEY = "label"
#: With ``--lesion-masks``: the phantom mask that supervises each view's evidence map.
MALIGNANT_MASK = "malignancy"
#: The same as ``mask_names`` of a chain's ``build``: one channel, the malignant mask.
LESION_MASK_NAMES = (MALIGNANT_MASK,)
#: How to get the masks ``--hard-negatives`` needs for mammography.
BENIGN_NEGATIVES_REMEDY = (
    f"the phantoms write it (medvision synth); a view without a benign lesion holds an "
    f"empty '{BENIGN_MASK}' mask"
)


@dataclass(frozen=True)
class MammographyTrainingResult:
    """What a mammography training run produced.

    Attributes
    ----------
    entry
        The registry entry as written (calibrated, with thresholds).
    epochs
        One record per epoch (per-view tuning AUROC).
    test_auroc
        Held-out test AUROC per finding, per study (NaN without both classes).
    per_breast_test_auroc
        Test AUROC with each breast a case (left and right pooled): the breast's
        logit against its own label (NaN without both classes; no test split gives NaN).
    calibration
        Per finding, what calibration did (methods, ECE, operating points).
    """

    entry: ModelEntry
    epochs: list[EpochRecord]
    test_auroc: dict[str, float]
    per_breast_test_auroc: float
    calibration: dict[str, FindingCalibration]


def split_chain(chain: Compose) -> tuple[Compose, Compose]:
    """Split a training chain at its first random step: ``(deterministic, random)``.

    The deterministic part (loading, laterality flip, crop, resize, scaling) is
    run once per study; the random part (augmentation, output type) per epoch,
    as MONAI's ``CacheDataset`` does.
    """
    steps = list(chain.transforms)
    first = next((i for i, step in enumerate(steps) if isinstance(step, RandomizableTrait)), None)
    if first is None:
        return chain, Compose([])
    return Compose(steps[:first]), Compose(steps[first:])


class PatchLabeld(MapTransform):
    """Set a patch's training target: whether its lesion mask holds any pixel.

    A patch cut from a malignant breast's view away from the lesion shows no
    cancer, so its target is 0; the breast's label would teach the network to
    call normal tissue malignant.

    Parameters
    ----------
    mask_key
        Key of the patch's lesion mask.
    label_key
        Key that receives the target, float32 of shape ``(1,)``.
    """

    def __init__(self, mask_key: str = LESION_MASK_KEY, label_key: str = LABEL_KEY) -> None:
        super().__init__([mask_key])
        self.mask_key, self.label_key = mask_key, label_key

    def __call__(self, data: Any) -> dict[str, Any]:
        """Return a copy of the item with its target set from its mask."""
        item = dict(data)
        holds_lesion = bool(torch.as_tensor(item[self.mask_key]).max() > 0.5)
        item[self.label_key] = np.array([float(holds_lesion)], dtype=np.float32)
        return item


def view_items(
    rows: Sequence[ManifestRow],
    manifest: Path,
    transforms: Compose,
    *,
    progress: bool = True,
    description: str = "loading",
    workers: int = 0,
) -> list[dict[str, Any]]:
    """Load studies as one item per view: ``image`` and ``label`` (its breast's label).

    When ``transforms`` load lesion masks, each item also carries the view's
    malignant-lesion mask under :data:`~medvision.training.classifier.LESION_MASK_KEY`.

    ``image`` is a plain tensor (training needs none of the MONAI metadata);
    ``label`` is float32 of shape ``(1,)``: the row's ``malignancy_left`` or
    ``malignancy_right`` as the view's ImageLaterality says. With ``workers`` above
    0, that many threads load the studies; the items keep the rows' order.

    Raises
    ------
    medvision.transforms.loading.StudyLoadError
        If a study cannot be loaded or a view's laterality is neither R nor L.
    """

    def load(row: ManifestRow) -> Any:
        return transforms(study_item(row, manifest))

    loaded: Iterator[Any]
    if workers > 0:
        pool = ThreadPoolExecutor(max_workers=workers)
        loaded = pool.map(load, rows)
    else:
        pool, loaded = None, map(load, rows)
    items: list[dict[str, Any]] = []
    bar = tqdm(
        loaded, total=len(rows), desc=description, unit="study", disable=not progress, leave=False
    )
    for row, views in zip(rows, bar, strict=True):
        for view in views if isinstance(views, list) else [views]:
            label = row.labels[breast_finding(view)]
            item: dict[str, Any] = {
                IMAGE_KEY: plain_tensor(view[IMAGE_KEY]),
                LABEL_KEY: np.array([label], dtype=np.float32),
            }
            if LESION_MASK_KEY in view:
                item[LESION_MASK_KEY] = plain_tensor(view[LESION_MASK_KEY])
            items.append(item)
    if pool is not None:
        pool.shutdown()
    return items


def per_breast_auroc(scores: SplitScores, findings: Sequence[str]) -> float:
    """Return the AUROC over breasts: left and right logits pooled as separate cases.

    NaN when the pooled labels hold one class only (or there is no study).
    """
    columns = [findings.index(finding) for finding in BREAST_FINDINGS.values()]
    logits = scores.logits[:, columns].reshape(-1)
    labels = scores.labels[:, columns].reshape(-1)
    if len(set(labels.tolist())) < 2:
        return float("nan")
    return float(roc_auc_score(labels, logits))


def _labels(items: Sequence[dict[str, Any]]) -> NDArray[np.int64]:
    return np.stack([item[LABEL_KEY] for item in items]).astype(np.int64)


def train_mammography(options: TrainOptions, progress: bool = True) -> MammographyTrainingResult:
    """Train, register and calibrate a per-view mammography model (see the module docstring).

    Parameters
    ----------
    options
        The run (``options.modality`` must be mammography); ``network`` must have
        one input channel and one output; ``name`` defaults to ``mammo-densenet``.
    progress
        Show progress bars.

    Returns
    -------
    MammographyTrainingResult
        The calibrated entry, the epoch records and the held-out AUROCs.

    Raises
    ------
    ValueError
        If the modality is not mammography, the network does not fit, a split the
        run needs has no study, or a finding has no positive or no negative study in
        the calibration or tuning split.
    medvision.transforms.loading.StudyLoadError
        If a study of the manifest cannot be loaded.
    """
    if options.modality != Modality.MAMMO:
        raise ValueError(
            f"train_mammography trains mammography models, got modality {options.modality.value}"
        )
    # One channel in, one logit per view out (TrainOptions checks a given network).
    network_description = network_for_run(options, default_network(Modality.MAMMO, 1))
    seed_everything(options.seed)
    findings = FINDINGS[Modality.MAMMO]
    device = select_device(options.device)
    splits = {s: split_rows(options, s, findings) for s in ("train", "tune", "calibration", "test")}
    for split in ("train", "tune", "calibration"):
        if not splits[split]:
            raise ValueError(f"no mammo study in the {split} split of {options.manifest}")
    chain = training_chain(options)
    if not isinstance(chain, MammoTransforms):
        raise TypeError(f"the mammography chain is {type(chain).__name__}, not MammoTransforms")
    mask_names = chain.training_mask_names(MALIGNANT_MASK)
    if options.lesion_masks:
        require_masks(splits["train"], "train", "--lesion-masks")
        require_mask_arrays(
            splits["train"], options.manifest, mask_names[1:], BENIGN_NEGATIVES_REMEDY
        )
    loading, augmentation = split_chain(
        chain.build(
            training=True,
            mask_key=LESION_MASK_KEY if options.lesion_masks else None,
            mask_names=mask_names,
        )
    )
    augmentation.set_random_state(seed=options.seed)
    if chain.patch_size is not None:
        augmentation = Compose([augmentation, PatchLabeld()])
    train_views = view_items(
        splits["train"],
        options.manifest,
        loading,
        progress=progress,
        description="train",
        workers=options.workers,
    )
    tune_views = view_items(
        splits["tune"],
        options.manifest,
        chain.build(training=False),
        progress=progress,
        description="tune",
        workers=options.workers,
    )
    train_labels = _labels(train_views)
    train_loader = training_loader(Dataset(train_views, augmentation), train_labels, options)
    tune_loader = DataLoader(
        Dataset(tune_views), batch_size=options.batch_size, shuffle=False, num_workers=0
    )
    network = initial_network(options, network_description)
    name = options.name or DEFAULT_NAME
    with warnings.catch_warnings():
        # A view without a lesion gives only patches away from one, as meant; MONAI
        # warns about that once per view and epoch.
        warnings.filterwarnings("ignore", message="Num foregrounds 0", category=UserWarning)
        records = fit(
            network,
            (train_loader, tune_loader),
            options,
            train_labels,
            (VIEW_FINDING,),
            name,
            device,
            progress,
        )
    entry = ModelEntry(
        name=name,
        version=options.version,
        modality=Modality.MAMMO,
        findings=findings,
        task=Task.CLASSIFICATION,
        network=network_description,
        transforms=chain.describe(),
        input_size=tuple(int(v) for v in getattr(chain, "input_size", ())),
        model_card=f"model_cards/{name}.md",
    )
    registered = register_calibrated(
        network,
        entry,
        out=options.out,
        manifest=options.manifest,
        splits=splits,
        device=device,
        target_sensitivity=options.target_sensitivity,
        progress=progress,
    )
    calibrated, scored, outcome = registered.entry, registered.scores, registered.outcome
    test = scored["test"]
    return MammographyTrainingResult(
        entry=calibrated,
        epochs=records,
        test_auroc=auroc_per_finding(
            test.logits.astype(np.float32), test.labels.astype(np.float32), findings
        ),
        per_breast_test_auroc=per_breast_auroc(test, findings),
        calibration=outcome.findings,
    )
