"""HiResCAM of one voxel of a sliding-window segmenter: the CT nodule's explanation.

The CT scorer (:mod:`medvision.inference.ct`) scores a study by the blended logit
of one voxel, the peak of its most suspicious nodule. MONAI's sliding-window
inferer computes that logit as a Gaussian-weighted mean over the windows that
cover the voxel: ``sum_i g_i(v) f_i(v) / sum_i g_i(v)``, where ``f_i`` is the
network's output on window ``i`` and ``g_i`` the window's importance map. So the
explanation is the same mean of explanations: HiResCAM
(:class:`~medvision.explain.gradcam.HiResCam`, the Grad-CAM variant for one place
of a dense output; its module docstring says why) of ``f_i(v)`` on each covering
window — the windows the inferer used, with the same padding, scan interval and
importance map — each window's heatmap weighted by ``g_i(v) / sum_j g_j(v)`` and
placed where the window lies. Outside those windows the heatmap is 0: nothing
there could change the voxel's logit.

The same forward passes give the windows' logits at the voxel, and their weighted
mean is the explained logit; :func:`explain_voxel` returns it so the caller can
check it equals the scored one.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from monai.data.utils import compute_importance_map, dense_patch_slices
from numpy.typing import NDArray
from torch import nn

from medvision.explain.gradcam import GradCam, HiResCam
from medvision.training.loop import place_network

#: The importance map of :func:`medvision.transforms.ct.sliding_window_inferer`
#: (MONAI's defaults for a Gaussian blend).
IMPORTANCE_MODE = "gaussian"
SIGMA_SCALE = 0.125


@dataclass(frozen=True)
class VoxelExplanation:
    """HiResCAM of one voxel's blended logit.

    Attributes
    ----------
    heatmap
        ``(X, Y, Z)`` float32 on the volume's grid, at least 0, scaled to a maximum
        of 1 (all zero when nothing raised the logit).
    logit
        The voxel's blended logit from the explanation's own forward passes.
    windows
        How many windows covered the voxel.
    region
        The bounding box of those windows on the volume's grid: outside it the
        heatmap is 0 whatever the network (what a comparison of two heatmaps of the
        voxel should be restricted to).
    """

    heatmap: NDArray[np.float32]
    logit: float
    windows: int
    region: tuple[slice, slice, slice]


def _padding(size: Sequence[int], roi_size: Sequence[int]) -> list[tuple[int, int]]:
    """Per axis, the zeros MONAI's inferer adds before and after a volume smaller than a window."""
    pads = []
    for length, roi in zip(size, roi_size, strict=True):
        missing = max(int(roi) - int(length), 0)
        pads.append((missing // 2, missing - missing // 2))
    return pads


def window_slices(
    size: Sequence[int], roi_size: Sequence[int], overlap: float
) -> list[tuple[slice, ...]]:
    """Return the windows MONAI's sliding-window inferer cuts from a (padded) volume.

    Parameters
    ----------
    size
        Spatial size of the volume after padding (each axis at least the window's).
    roi_size
        Window size.
    overlap
        Share of a window that overlaps the next, as given to the inferer.
    """
    interval = tuple(
        int(roi) if int(roi) == int(length) else max(int(int(roi) * (1.0 - overlap)), 1)
        for length, roi in zip(size, roi_size, strict=True)
    )
    windows = dense_patch_slices(tuple(size), tuple(roi_size), interval)
    return [tuple(window) for window in windows]


def explain_voxel(
    network: nn.Module,
    volume: torch.Tensor,
    voxel: Sequence[int],
    roi_size: Sequence[int],
    *,
    overlap: float = 0.25,
    device: torch.device | None = None,
    channel: int = 0,
    cam: type[GradCam] = HiResCam,
    layer: nn.Module | None = None,
) -> VoxelExplanation:
    """Explain the blended logit of ``voxel`` of a ``(C, X, Y, Z)`` volume (module docstring).

    Parameters
    ----------
    network
        The segmenter (its weights are not changed; it is put in eval mode).
    volume
        The model-space volume the scorer segmented, with the chain's channels.
    voxel
        ``(x, y, z)`` index of the voxel on that grid.
    roi_size, overlap
        The scorer's sliding-window size and overlap.
    device
        Where to run (default: CPU).
    channel
        The output channel explained.
    cam, layer
        The explanation method (:class:`~medvision.explain.gradcam.HiResCam`, or
        :class:`~medvision.explain.gradcam.GradCam` to compare) and its layer
        (default: :func:`~medvision.explain.gradcam.explanation_layer`).

    Raises
    ------
    ValueError
        If the voxel is outside the volume or the volume is not channels of 3-D.
    """
    device = device or torch.device("cpu")
    if volume.ndim != 4:
        raise ValueError(f"expected a (channels, X, Y, Z) volume, got shape {tuple(volume.shape)}")
    size = tuple(int(v) for v in volume.shape[1:])
    point = tuple(int(v) for v in voxel)
    if len(point) != 3 or not all(0 <= p < s for p, s in zip(point, size, strict=True)):
        raise ValueError(f"voxel {point} is outside the volume of size {size}")
    pads = _padding(size, roi_size)
    padded = torch.nn.functional.pad(
        volume.detach().float(), [p for before_after in reversed(pads) for p in before_after]
    )
    shifted = tuple(p + before for p, (before, _) in zip(point, pads, strict=True))
    covering = [
        window
        for window in window_slices(tuple(padded.shape[1:]), roi_size, overlap)
        if all(s.start <= p < s.stop for s, p in zip(window, shifted, strict=True))
    ]
    local = torch.tensor(
        [[p - s.start for s, p in zip(window, shifted, strict=True)] for window in covering]
    )
    importance = compute_importance_map(
        tuple(int(v) for v in roi_size), mode=IMPORTANCE_MODE, sigma_scale=SIGMA_SCALE
    ).float()
    weights = importance[local[:, 0], local[:, 1], local[:, 2]].double()
    weights = weights / weights.sum()

    def at_voxel(output: torch.Tensor) -> torch.Tensor:
        rows = torch.arange(len(covering), device=output.device)
        index = local.to(output.device)
        return output[rows, channel, index[:, 0], index[:, 1], index[:, 2]][:, None]

    place_network(network, device)
    explainer = cam(network, reduce=at_voxel, layer=layer)
    windows = torch.stack([padded[(slice(None), *window)] for window in covering]).to(device)
    output = explainer(windows, [0] * len(covering))
    logit = float((output.logits[:, 0].double().cpu() * weights).sum())
    heat = torch.zeros(padded.shape[1:], dtype=torch.float64)
    for window, weight, window_heat in zip(covering, weights, output.heatmaps.cpu(), strict=True):
        heat[window] += weight * window_heat.double()
    crop = tuple(
        slice(before, before + length) for (before, _), length in zip(pads, size, strict=True)
    )
    values = heat[crop].clamp_min(0.0)
    peak = float(values.max()) if values.numel() else 0.0
    if peak > 0:
        values = values / peak
    x, y, z = (
        slice(
            max(min(w[axis].start for w in covering) - before, 0),
            min(max(w[axis].stop for w in covering) - before, length),
        )
        for axis, ((before, _), length) in enumerate(zip(pads, size, strict=True))
    )
    return VoxelExplanation(
        heatmap=values.float().numpy(), logit=logit, windows=len(covering), region=(x, y, z)
    )
