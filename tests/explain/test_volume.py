"""Grad-CAM of one voxel of a sliding-window segmenter: the windows and the blend MONAI uses."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.networks.nets.unet import UNet

from medvision.explain.gradcam import GradCam
from medvision.explain.volume import explain_voxel, window_slices
from medvision.inference.ct import predict_logit_map
from medvision.transforms.ct import sliding_window_inferer

ROI = (16, 16, 16)


def _network() -> UNet:
    torch.manual_seed(0)
    return UNet(3, 1, 1, channels=(4, 8), strides=(2,), num_res_units=1).eval()


@pytest.mark.parametrize(
    ("shape", "voxel"),
    [
        ((40, 36, 30), (0, 0, 0)),  # a corner: one window
        ((40, 36, 30), (13, 14, 13)),  # where windows overlap on every axis
        ((40, 36, 30), (39, 35, 29)),  # the far corner: the last windows end at the edge
        ((12, 20, 18), (5, 10, 8)),  # smaller than a window along x: padded as MONAI pads
    ],
)
def test_the_explained_logit_is_the_sliding_window_s_blended_logit(
    shape: tuple[int, int, int], voxel: tuple[int, int, int]
) -> None:
    network = _network()
    volume = torch.rand(1, *shape, generator=torch.Generator().manual_seed(1))
    blended = predict_logit_map(
        network, sliding_window_inferer(ROI, 3), volume, torch.device("cpu")
    )
    explained = explain_voxel(network, volume, voxel, ROI)
    assert explained.logit == pytest.approx(float(blended[(0, *voxel)]), abs=1e-5)
    heat = explained.heatmap
    assert heat.shape == shape and heat.dtype == np.float32
    assert float(heat.min()) >= 0.0 and float(heat.max()) == pytest.approx(1.0)
    # Only the windows that cover the voxel are explained; nothing farther away.
    far = np.argwhere(heat > 0)
    assert np.all(np.abs(far - np.array(voxel)) < np.array(ROI))
    outside = np.ones(shape, dtype=bool)
    outside[explained.region] = False
    assert not heat[outside].any()
    assert all(s.start <= v < s.stop for s, v in zip(explained.region, voxel, strict=True))


def test_overlapping_windows_all_count() -> None:
    size = (40, 36, 30)
    windows = window_slices(size, ROI, 0.25)
    covering = [
        w
        for w in windows
        if all(s.start <= p < s.stop for s, p in zip(w, (13, 14, 13), strict=True))
    ]
    network = _network()
    explained = explain_voxel(network, torch.rand(1, *size), (13, 14, 13), ROI)
    assert explained.windows == len(covering) == 8  # two windows along each axis
    # The last window of each axis ends at the volume's edge, as MONAI places it.
    assert {w[0].stop for w in windows} >= {40} and {w[2].stop for w in windows} >= {30}


def test_a_voxel_outside_the_volume_is_refused() -> None:
    with pytest.raises(ValueError, match=r"voxel \(4, 4, 9\) is outside the volume"):
        explain_voxel(_network(), torch.rand(1, 8, 8, 8), (4, 4, 9), ROI)
    with pytest.raises(ValueError, match=r"expected a \(channels, X, Y, Z\) volume"):
        explain_voxel(_network(), torch.rand(8, 8, 8), (4, 4, 4), ROI)


def test_the_method_and_layer_can_be_chosen_and_leave_the_logit_alone() -> None:
    network = _network()
    volume = torch.rand(1, 24, 24, 20, generator=torch.Generator().manual_seed(2))
    voxel = (11, 12, 9)
    hires = explain_voxel(network, volume, voxel, ROI)
    grad_cam = explain_voxel(network, volume, voxel, ROI, cam=GradCam)
    deeper = explain_voxel(network, volume, voxel, ROI, layer=unet_levels_bottom(network))
    assert hires.logit == grad_cam.logit == deeper.logit
    assert not np.array_equal(hires.heatmap, grad_cam.heatmap)
    assert not np.array_equal(hires.heatmap, deeper.heatmap)


def unet_levels_bottom(network: UNet) -> torch.nn.Module:
    """The bottom block of a one-level U-Net: what its skip connection wraps."""
    skip = list(network.model.children())[1]
    assert isinstance(skip.submodule, torch.nn.Module)
    return skip.submodule
