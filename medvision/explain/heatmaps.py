"""One Grad-CAM heatmap per finding of a scored study, on the source image's pixel grid.

:func:`explain_study` takes a study as the scorer prepared it
(:class:`~medvision.inference.scoring.PreparedStudy`) and its score
(:class:`~medvision.inference.scoring.StudyScore`), and for each asked-for finding:

- **chest X-ray, fundus**: Grad-CAM of the finding's output on the study's one
  image;
- **mammography**: Grad-CAM of the view network's one output on each view of the
  finding's breast (``malignancy_left``: the left views; ``malignancy``: the views
  of the breast that gave the study's logit), one heatmap per view;
- **CT**: a 3-D heatmap of the voxel whose blended logit is the study's (the peak
  of the most suspicious nodule): the Gaussian-weighted HiResCAM (the Grad-CAM
  variant for one place of a dense output, :class:`~medvision.explain.gradcam.HiResCam`) of the
  sliding windows that scored it (:func:`medvision.explain.volume.explain_voxel`),
  mapped back onto the series grid; the heatmap's ``values`` are its slice
  through the peak, so viewers and the Secondary Capture show that slice.

Each heatmap is mapped back through the model's own transform chain
(:func:`~medvision.transforms.chain.to_original_grid`: padding, resize, crop and
laterality flip undone) onto the DICOM image's ``(rows, columns)``, scaled to a
maximum of 1, with the position of its maximum (``peak``, row and column).

Explanations never change a finding: the probability stays the scorer's. A map that
is zero everywhere (no position raised the logit) is not shown: a view with one is
left out, and a finding with no other heatmap gets the note :data:`NO_EVIDENCE`. The
logits of Grad-CAM's own forward pass are compared with the scored ones (a breast's
logit is the mean of its views'); if they differ by more than
:data:`LOGIT_TOLERANCE` the heatmap is not given, because it would explain a
different score. That, and any error while explaining, becomes a note on the study
instead of an exception: the finding is still delivered, with the note.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from monai.transforms.compose import Compose
from numpy.typing import NDArray
from torch import nn

from medvision.explain.gradcam import GradCam
from medvision.explain.volume import explain_voxel
from medvision.inference.ct import (
    ITEM_KEY,
    TRANSFORMS_KEY,
    ct_chain,
    find_nodules,
    in_instance_order,
    nodule_region,
    predict_logit_map,
    study_peak,
    window_size,
)
from medvision.inference.mammography import (
    BREAST_FINDINGS,
    STUDY_FINDING,
    view_laterality,
)
from medvision.inference.scoring import PreparedStudy, StudyScore
from medvision.modality import Modality
from medvision.models.registry import ModelEntry
from medvision.training.loop import plain_tensor
from medvision.transforms.chain import MapKind, to_original_grid
from medvision.transforms.ct import sliding_window_inferer
from medvision.transforms.loading import IMAGE_KEY

#: How results name the explanation methods (:class:`~medvision.explain.gradcam.GradCam`,
#: :class:`~medvision.explain.gradcam.HiResCam`).
GRAD_CAM = "Grad-CAM"
HIRES_CAM = "HiResCAM"

#: Why a finding has no heatmap when its map (Grad-CAM; HiResCAM for CT) is zero
#: everywhere: no position's features raised the logit at the explained layer, so an
#: overlay would show nothing.
NO_EVIDENCE = (
    "the explanation found no region that raised the finding's logit (the map is zero "
    "everywhere at the explained layer)"
)

#: Largest difference between a scored logit and the explanation pass's logit (float32
#: on both sides; the GPU scorer runs in bf16, hence the wider margin there).
LOGIT_TOLERANCE = {"cpu": 1e-3, "cuda": 0.1}


@dataclass(frozen=True)
class Heatmap:
    """A finding's Grad-CAM heatmap on one source image.

    Attributes
    ----------
    finding
        The finding explained.
    values
        ``(rows, columns)`` float32 in ``[0, 1]`` on the DICOM image's pixel grid.
    referenced_uid
        SOPInstanceUID of that image.
    peak
        ``(row, column)`` of the heatmap's maximum.
    laterality
        ``"R"``/``"L"`` for a mammography view, else ``""``.
    volume
        CT only: the whole 3-D heatmap ``(slices, rows, columns)`` on the series grid,
        slices in InstanceNumber order (as the nodule masks); ``values`` is its
        slice through the peak, the image ``referenced_uid`` names.
    method
        The explanation method, as results name it: :data:`GRAD_CAM` for the
        classifiers, :data:`HIRES_CAM` for the CT segmenter's voxel.
    """

    finding: str
    values: NDArray[np.float32]
    referenced_uid: str
    peak: tuple[int, int]
    laterality: str = ""
    volume: NDArray[np.float32] | None = None
    method: str = GRAD_CAM


@dataclass
class StudyExplanation:
    """The heatmaps of one study, and notes where a finding could not be explained.

    Attributes
    ----------
    study_instance_uid
        The study.
    heatmaps
        One per explained finding and image.
    notes
        Per finding, why it has no heatmap (empty when all were explained).
    """

    study_instance_uid: str
    heatmaps: list[Heatmap] = field(default_factory=list)
    notes: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class _Target:
    finding: str
    views: tuple[int, ...]
    output: int
    scored_logit: float


def _targets(entry: ModelEntry, study: PreparedStudy, score: StudyScore, finding: str) -> _Target:
    if finding not in entry.findings:
        raise ValueError(f"model {entry.name} has no finding '{finding}'")
    scored = float(score.logits[finding])
    if entry.modality in (Modality.CXR, Modality.FUNDUS):
        return _Target(finding, (0,), entry.findings.index(finding), scored)
    if entry.modality == Modality.MAMMO:
        if finding == STUDY_FINDING:
            side = max(BREAST_FINDINGS, key=lambda s: score.logits[BREAST_FINDINGS[s]])
        else:
            side = next(s for s, name in BREAST_FINDINGS.items() if name == finding)
        views = tuple(i for i, view in enumerate(study.inputs) if view_laterality(view) == side)
        return _Target(finding, views, 0, scored)
    raise ValueError(
        f"Grad-CAM explains the classifiers (chest X-ray, fundus, mammography) and the CT "
        f"segmenter; model {entry.name} is a {entry.modality.value} model"
    )


def _peak(values: NDArray[np.float32]) -> tuple[int, int]:
    row, column = np.unravel_index(int(np.argmax(values)), values.shape)
    return int(row), int(column)


def _source_heatmap(
    heatmap: torch.Tensor, item: Mapping[str, Any], transforms: Compose
) -> NDArray[np.float32]:
    mapped = to_original_grid(heatmap, item, transforms, MapKind.CONTINUOUS)[0]
    mapped = np.clip(mapped, 0.0, None)
    peak = float(mapped.max()) if mapped.size else 0.0
    return (mapped / peak if peak > 0 else mapped).astype(np.float32)


def ct_peak_voxel(
    network: nn.Module, entry: ModelEntry, study: PreparedStudy, channel: int, device: torch.device
) -> tuple[int, int, int]:
    """Return the voxel (model grid) whose blended logit is a prepared CT study's logit.

    The scorer's rule (:func:`medvision.inference.ct.study_peak`, nodules in the
    lung region) on a fresh
    sliding-window pass of ``network`` (already on ``device``, in eval mode).
    """
    image = study.inputs[0][ITEM_KEY][IMAGE_KEY]
    inferer = sliding_window_inferer(window_size(entry))
    logits = predict_logit_map(network, inferer, image, device)
    region = nodule_region(image, ct_chain(entry).window)
    labels, _ = find_nodules(logits[channel], np.asarray(image.affine), region=region)
    return study_peak(logits[channel], labels)[1]


def _ct_heatmap(
    network: nn.Module,
    entry: ModelEntry,
    study: PreparedStudy,
    finding: str,
    scored_logit: float,
    device: torch.device,
    tolerance: float | None,
) -> Heatmap:
    """Explain a CT study's finding: its peak voxel, through the windows that scored it."""
    if finding not in entry.findings:
        raise ValueError(f"model {entry.name} has no finding '{finding}'")
    channel = entry.findings.index(finding)
    item, chain = study.inputs[0][ITEM_KEY], study.inputs[0][TRANSFORMS_KEY]
    image = item[IMAGE_KEY]
    voxel = ct_peak_voxel(network, entry, study, channel, device)
    explained = explain_voxel(
        network, plain_tensor(image), voxel, window_size(entry), device=device, channel=channel
    )
    if tolerance is not None and abs(explained.logit - scored_logit) > tolerance:
        raise ValueError(
            f"the explanation's forward pass gave logit {explained.logit:.4f}, the scored "
            f"one is {scored_logit:.4f}"
        )
    values = _source_heatmap(torch.from_numpy(explained.heatmap), item, chain)
    if not values.any():
        raise ValueError(NO_EVIDENCE)
    index, row, column = (int(v) for v in np.unravel_index(int(np.argmax(values)), values.shape))
    return Heatmap(
        finding=finding,
        values=values[index],
        referenced_uid=str(image.meta["sop_instance_uids"][index]),
        peak=(row, column),
        volume=in_instance_order(values, image.meta),
        method=HIRES_CAM,
    )


def explain_study(
    network: nn.Module,
    entry: ModelEntry,
    study: PreparedStudy,
    score: StudyScore,
    transforms: Compose,
    findings: Sequence[str],
    device: torch.device | None = None,
    *,
    check_logits: bool = True,
) -> StudyExplanation:
    """Return Grad-CAM heatmaps of ``findings`` of one scored study (see the module docstring).

    Parameters
    ----------
    network
        The model's network as scored (its weights are not changed).
    entry
        The model's registry entry.
    study
        The study as the model's scorer prepared it.
    score
        The scorer's output for ``study``.
    transforms
        The chain that prepared ``study`` (the scorer's), to undo its spatial steps.
    findings
        The findings to explain (e.g. the flagged ones).
    device
        Where to run (default: CPU).
    check_logits
        Refuse a heatmap whose forward pass does not reproduce the scored logit
        (default). Off only for the model-randomisation check of
        :mod:`medvision.explain.faithfulness`, which explains a randomised copy.

    Returns
    -------
    StudyExplanation
        Heatmaps, and a note for each finding that could not be explained.
    """
    device = device or torch.device("cpu")
    tolerance = LOGIT_TOLERANCE.get(device.type, LOGIT_TOLERANCE["cuda"])
    explanation = StudyExplanation(study.study_instance_uid)
    network.to(device)
    try:
        cam = GradCam(network)
    except ValueError as error:
        explanation.notes = {finding: f"no heatmap: {error}" for finding in findings}
        return explanation
    for finding in findings:
        try:
            if entry.modality == Modality.CT:
                explanation.heatmaps.append(
                    _ct_heatmap(
                        network,
                        entry,
                        study,
                        finding,
                        float(score.logits[finding]),
                        device,
                        tolerance if check_logits else None,
                    )
                )
                continue
            target = _targets(entry, study, score, finding)
            items = [study.inputs[i] for i in target.views]
            if not items:
                raise ValueError("no image of the study shows it")
            images = torch.stack([plain_tensor(item[IMAGE_KEY]) for item in items]).to(device)
            output = cam(images, [target.output] * len(items))
            explained = float(output.logits[:, target.output].double().mean())
            if check_logits and abs(explained - target.scored_logit) > tolerance:
                raise ValueError(
                    f"the explanation's forward pass gave logit {explained:.4f}, the scored "
                    f"one is {target.scored_logit:.4f}"
                )
            shown = 0
            for item, heatmap in zip(items, output.heatmaps.cpu(), strict=True):
                values = _source_heatmap(heatmap, item, transforms)
                if not values.any():
                    continue  # an all-zero map shows nothing; another view may
                shown += 1
                meta = item[IMAGE_KEY].meta
                explanation.heatmaps.append(
                    Heatmap(
                        finding=finding,
                        values=values,
                        referenced_uid=str(meta["sop_instance_uids"][0]),
                        peak=_peak(values),
                        laterality=str(meta.get("laterality", ""))
                        if entry.modality == Modality.MAMMO
                        else "",
                    )
                )
            if not shown:
                raise ValueError(NO_EVIDENCE)
        except Exception as error:  # a failed explanation never loses a finding
            explanation.notes[finding] = f"no heatmap: {error}"
    return explanation
