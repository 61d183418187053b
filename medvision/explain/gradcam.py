"""Grad-CAM heatmaps with Captum, on the network's input grid.

Grad-CAM (Selvaraju et al. 2017) weighs each channel of a convolutional layer by
the mean gradient of the target logit with respect to it, sums the weighted
channels and keeps the positive part: where the layer's features raised the
finding's logit. Here Captum's ``LayerGradCam`` computes it for a batch, one
target output per image, and ``LayerAttribution.interpolate`` brings it from the
layer's grid up to the network's input grid (bilinear in 2-D, trilinear in 3-D).

The layer (:func:`explanation_layer`) is the last one with a spatial grid before
the output: for the evidence-map DenseNet its feature block, whose positive part
the 1 x 1 evidence convolution turns into the per-finding maps (for a plain MONAI
DenseNet the same block, before its global pooling); for the CT U-Net the
decoder's finest features, the skip connection before the output block (at half
the input's grid).

The same forward pass that gives the gradients also gives the logits
(:class:`GradCam` keeps them), so a caller can check that the explanation belongs
to the score it explains.

:class:`HiResCam` (Draelos and Carin 2020) is the variant for a target that is one
place of a dense output, the CT segmenter's peak voxel: it multiplies gradient and
activation position by position before summing the channels
(``relu(sum_k dY/dA_k * A_k)``, Captum's ``LayerGradientXActivation``) instead of
weighing each channel by its gradient's mean over the whole grid. For one voxel's
logit that mean says little about where: measured on a CT segmenter's flagged true
positives (``benchmarks/ct_gradcam_layers.py``, docs/explanations.md), Grad-CAM's
peak fell on the nodule in 0 to 2 of 12 cases at any level of the U-Net, HiResCAM's
in 12 of 12 at the two finest.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import ClassVar

import torch
from captum.attr import LayerAttribution, LayerGradCam, LayerGradientXActivation
from monai.networks.nets.densenet import DenseNet
from monai.networks.nets.unet import UNet
from torch import nn

from medvision.models.networks import EvidenceMapDenseNet, FeatureHeadUNet, unmirror_looks


def explanation_layer(network: nn.Module) -> nn.Module:
    """Return the layer Grad-CAM explains for ``network``.

    Raises
    ------
    ValueError
        For a network this module does not know (a heatmap of an arbitrary layer
        would be a guess).
    """
    if isinstance(network, EvidenceMapDenseNet | DenseNet):
        return network.features
    if isinstance(network, FeatureHeadUNet):
        network = network.unet
    if isinstance(network, UNet):
        # MONAI's UNet is Sequential(down, SkipConnection(...), up); the last block
        # ``up`` maps the decoder's finest features to the output logits, so the layer
        # is the skip connection feeding it (half the input's grid: the first block
        # down-samples).
        blocks = list(network.model.children())
        return blocks[1]
    raise ValueError(f"no Grad-CAM layer is known for networks of type {type(network).__name__}")


@dataclass(frozen=True)
class GradCamOutput:
    """Heatmaps of one batch and the logits of the forward pass that made them.

    Attributes
    ----------
    heatmaps
        ``(batch, *spatial)`` on the input grid, float32, each scaled to a maximum
        of 1 (all zero when no position raised the target).
    logits
        The network's output in that pass, ``(batch, outputs)`` (a segmenter's
        ``(batch, 1, *spatial)`` is reduced by ``reduce`` first).
    """

    heatmaps: torch.Tensor
    logits: torch.Tensor


class GradCam:
    """Grad-CAM of one network at its :func:`explanation_layer`.

    Parameters
    ----------
    network
        The network, in eval mode (it is put there). Its weights are not changed.
    reduce
        Turns the network's raw output into ``(batch, outputs)`` logits to explain;
        e.g. the highest voxel logit of a segmenter. ``None``: the output already is.
    layer
        The layer to explain (default: :func:`explanation_layer`).
    """

    #: The Captum attribution the class computes at its layer.
    _method: ClassVar[type[LayerGradCam] | type[LayerGradientXActivation]] = LayerGradCam

    def __init__(
        self,
        network: nn.Module,
        reduce: Callable[[torch.Tensor], torch.Tensor] | None = None,
        layer: nn.Module | None = None,
    ) -> None:
        self.network = network.eval()
        self.reduce = reduce
        self.layer = layer if layer is not None else explanation_layer(network)
        self._last_logits: torch.Tensor | None = None
        self._cam = self._method(self._forward, self.layer)

    def _forward(self, images: torch.Tensor) -> torch.Tensor:
        output = self.network(images)
        logits = self.reduce(output) if self.reduce is not None else output
        self._last_logits = logits.detach()
        return logits

    def _attribute(self, images: torch.Tensor, targets: list[int]) -> torch.Tensor:
        """Return the ``(batch, 1, *layer grid)`` attribution, at least 0.

        A network that averages test-time looks (``test_time_looks`` of
        :class:`~medvision.models.networks.EvidenceMapDenseNet`) runs its layer on all
        of them in one batch; each look's map is flipped back onto the input's grid
        and their mean, the Grad-CAM of the averaged logit, is kept.
        """
        looks = int(getattr(self.network, "test_time_looks", 1))
        attribution: torch.Tensor = self._cam.attribute(
            images, target=targets, relu_attributions=looks == 1
        )
        if looks == 1:
            return attribution
        return torch.relu(unmirror_looks(attribution, looks).mean(dim=0))

    def __call__(self, images: torch.Tensor, targets: Sequence[int]) -> GradCamOutput:
        """Explain output ``targets[i]`` of image ``i``; see :class:`GradCamOutput`.

        Raises
        ------
        ValueError
            If there is not one target per image.
        """
        if len(targets) != len(images):
            raise ValueError(f"one target per image: {len(images)} images, {len(targets)} targets")
        images = images.detach().float()
        with torch.enable_grad():
            attribution = self._attribute(images, [int(t) for t in targets])
        spatial = tuple(int(size) for size in images.shape[2:])
        mode = "bilinear" if len(spatial) == 2 else "trilinear"
        upsampled = LayerAttribution.interpolate(attribution, spatial, interpolate_mode=mode)
        heatmaps = upsampled[:, 0].detach().float().clamp_min(0.0)
        peaks = heatmaps.flatten(1).amax(dim=1).clamp_min(torch.finfo(torch.float32).tiny)
        heatmaps = heatmaps / peaks.view(-1, *([1] * len(spatial)))
        assert self._last_logits is not None
        return GradCamOutput(heatmaps=heatmaps, logits=self._last_logits.float())


class HiResCam(GradCam):
    """HiResCAM of one network at a layer: gradient times activation, summed over channels.

    Same interface and output as :class:`GradCam` (see the module docstring for
    when it is the right one).
    """

    _method = LayerGradientXActivation

    def _attribute(self, images: torch.Tensor, targets: list[int]) -> torch.Tensor:
        product: torch.Tensor = self._cam.attribute(images, target=targets)
        return product.sum(dim=1, keepdim=True).clamp_min(0.0)
