"""Hard negatives for the CT segmenter: where a model's false positives lie in its training scans.

For each chosen study, the model's own chain and sliding-window inference give its
nodule components by the served rule (:func:`~medvision.inference.ct.find_nodules`,
lung region included). A component that touches no ground-truth nodule voxel is a
false positive. Their voxels, grown by one voxel (so that a component of two voxels
survives the way back), are mapped to the DICOM grid and written
as the mask ``<SeriesInstanceUID>__hard_negative``, less any nodule voxel,
(:data:`~medvision.transforms.ct.HARD_NEGATIVE_MASK`) beside the study's own masks,
in a copy of its masks file under ``OUT/masks/``; where that file has such a mask
already (a manifest written here, mined again with a newer model), the new places are
added to it, so that rounds of mining accumulate. ``OUT/manifest.csv`` is the input
manifest (paths made absolute) with those studies' ``masks`` pointing at the copies,
so that ``medvision train --hard-negatives SHARE`` centres a share of its nodule-free
patches on these places (:class:`~medvision.transforms.ct.CtTransforms`). A study
whose model finds no false positive gets an empty mask.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from scipy import ndimage
from tqdm.auto import tqdm

from medvision.data.manifest import read_manifest, with_absolute_paths, write_manifest
from medvision.inference.ct import (
    SegmenterOnCpu,
    find_nodules,
    in_instance_order,
    nodule_region,
    predict_logit_map,
)
from medvision.transforms.chain import MapKind, to_original_grid
from medvision.transforms.ct import HARD_NEGATIVE_MASK
from medvision.transforms.loading import IMAGE_KEY, MASK_KEY, study_item


@dataclass(frozen=True)
class MinedStudy:
    """The false positives found in one study.

    Attributes
    ----------
    study_instance_uid
        The study.
    component_voxels
        Size in model-grid voxels of each false-positive component.
    marked_voxels
        Voxels of the hard-negative mask on the DICOM grid.
    """

    study_instance_uid: str
    component_voxels: tuple[int, ...]
    marked_voxels: int


def mine_hard_negatives(
    model: Path,
    manifest: Path,
    out: Path,
    splits: Sequence[str] = ("train",),
    studies: int | None = None,
    progress: bool = True,
) -> list[MinedStudy]:
    """Write the hard-negative masks of ``model`` for the chosen studies, and the manifest.

    Parameters
    ----------
    model
        A CT segmenter's registry entry (``.json``); its weights' hash is checked.
    manifest
        The training manifest; every chosen study needs its masks file.
    out
        Output folder: ``masks/<StudyInstanceUID>.npz`` and ``manifest.csv``.
    splits
        The splits whose studies are mined (others are copied unchanged).
    studies
        At most this many studies (a trial); ``None``: all of them.
    progress
        Show a progress bar and a line per study.

    Returns
    -------
    list of MinedStudy
        One per mined study, in manifest order.

    Raises
    ------
    ValueError
        If no study is chosen, or a chosen one has no masks file.
    """
    segmenter = SegmenterOnCpu.load(model)
    entry, network, chain = segmenter.entry, segmenter.network, segmenter.chain
    transforms, inferer = segmenter.transforms, segmenter.inferer
    rows = [with_absolute_paths(row, manifest) for row in read_manifest(manifest)]
    chosen = [row for row in rows if row.split in splits][:studies]
    if not chosen:
        raise ValueError(f"no study of split(s) {', '.join(splits)} in {manifest}")
    if any(row.masks is None for row in chosen):
        raise ValueError("every mined study needs a masks file (its nodule ground truth)")
    (out / "masks").mkdir(parents=True, exist_ok=True)
    replaced: dict[str, Path] = {}
    mined: list[MinedStudy] = []
    for row in tqdm(chosen, desc="mining", unit="scan", disable=not progress):
        item = transforms(study_item(row, manifest))
        image = item[IMAGE_KEY]
        truth = np.asarray(item[MASK_KEY][0]) > 0.5
        logits = predict_logit_map(network, inferer, image, torch.device("cpu"))[0]
        kept, components = find_nodules(
            logits, np.asarray(image.affine), region=nodule_region(image, chain.window)
        )
        false = [c for c in components if not truth[kept == c.label].any()]
        hard = ndimage.binary_dilation(np.isin(kept, [c.label for c in false])) & ~truth
        back = to_original_grid(hard.astype(np.float32), item, transforms, MapKind.LABEL)[0]
        mask = in_instance_order((back > 0.5).astype(np.uint8), image.meta)
        assert row.masks is not None
        with np.load(row.masks) as npz:
            arrays = {name: npz[name] for name in npz.files}
        series = str(image.meta["series_instance_uid"])
        for finding in entry.findings:  # the way back may reach a nodule voxel: never mark it
            mask[np.asarray(arrays[f"{series}__{finding}"]) > 0] = 0
        name = f"{series}__{HARD_NEGATIVE_MASK}"
        if name in arrays:  # mined before (a manifest this function wrote): add to those places
            mask = np.maximum(mask, np.asarray(arrays[name], dtype=np.uint8))
        arrays[name] = mask
        target = (out / "masks" / f"{row.study_instance_uid}.npz").resolve()
        np.savez_compressed(target, **arrays)
        replaced[row.study_instance_uid] = target
        study = MinedStudy(row.study_instance_uid, tuple(c.voxels for c in false), int(mask.sum()))
        mined.append(study)
        if progress:
            tqdm.write(
                f"{row.study_instance_uid} nodule={row.labels.get('nodule')} "
                f"{row.manufacturer_model}: {len(false)} false positive(s), voxels "
                f"{list(study.component_voxels)}, {study.marked_voxels} marked on the DICOM grid"
            )
    write_manifest(
        [
            dataclasses.replace(row, masks=replaced[row.study_instance_uid])
            if row.study_instance_uid in replaced
            else row
            for row in rows
        ],
        out / "manifest.csv",
    )
    return mined
