"""Grad-CAM on the input grid: shapes, scaling, the forward pass's logits, the right place."""

from __future__ import annotations

import pytest
import torch
from monai.networks.nets.unet import UNet
from torch import nn

from medvision.explain.gradcam import GradCam, HiResCam, explanation_layer
from medvision.models.networks import (
    EvidenceMapDenseNet,
    FeatureHeadUNet,
    build_network,
    mirror_looks,
    unmirror_looks,
)
from tests.conftest import tiny_densenet


class MaxOfIdentity(nn.Module):
    """A 1 x 1 convolution that copies the image, then the maximum pixel as the logit.

    Grad-CAM of its convolution is the image itself (positive part), scaled: the
    gradient of the maximum is one pixel, so the channel weight is ``1 / pixels``.
    """

    def __init__(self) -> None:
        super().__init__()
        self.copy = nn.Conv2d(1, 1, kernel_size=1, bias=False)
        with torch.no_grad():
            self.copy.weight.fill_(1.0)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.copy(image).flatten(1).amax(dim=1, keepdim=True)


def test_heatmaps_are_the_image_where_grad_cam_has_a_closed_form() -> None:
    image = torch.zeros(1, 1, 16, 12)
    image[0, 0, 4:7, 8:10] = 2.0
    image[0, 0, 12, 1] = 1.0
    network = MaxOfIdentity()
    output = GradCam(network, layer=network.copy)(image, [0])
    assert output.heatmaps.shape == (1, 16, 12)
    assert torch.equal(output.heatmaps[0], image[0, 0] / 2.0)
    assert torch.equal(output.logits, torch.tensor([[2.0]]))


def test_heatmaps_of_a_densenet_fill_the_input_grid_scaled_to_one() -> None:
    torch.manual_seed(0)
    network = build_network(tiny_densenet(3, "evidence_densenet"))
    images = torch.rand(2, 1, 64, 48)
    output = GradCam(network)(images, [0, 2])
    assert output.heatmaps.shape == (2, 64, 48)
    assert output.heatmaps.dtype == torch.float32
    for heatmap in output.heatmaps:
        assert float(heatmap.min()) >= 0.0
        assert float(heatmap.max()) in (0.0, pytest.approx(1.0))
    # The logits are those of the explained forward pass, i.e. the network's own.
    with torch.no_grad():
        assert torch.allclose(output.logits, network(images), atol=1e-6)


def test_the_weights_are_not_changed_by_an_explanation() -> None:
    torch.manual_seed(0)
    network = build_network(tiny_densenet(2, "evidence_densenet"))
    before = {k: v.clone() for k, v in network.state_dict().items()}
    GradCam(network)(torch.rand(3, 1, 32, 32), [1, 0, 1])
    after = network.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert all(p.grad is None or not p.grad.any() for p in network.parameters())


def test_the_layer_is_the_densenet_features_or_the_unet_decoder() -> None:
    densenet = build_network(tiny_densenet(2, "evidence_densenet"))
    assert isinstance(densenet, EvidenceMapDenseNet)
    assert explanation_layer(densenet) is densenet.features
    plain = build_network(tiny_densenet(2))
    assert explanation_layer(plain) is plain.features
    unet = UNet(3, 1, 1, channels=(4, 8), strides=(2,))
    layer = explanation_layer(unet)
    assert layer is list(unet.model.children())[1]
    volume = torch.rand(1, 1, 16, 16, 8)
    output = GradCam(unet, reduce=lambda out: out.flatten(1).amax(dim=1, keepdim=True))(volume, [0])
    assert output.heatmaps.shape == (1, 16, 16, 8)
    headed = FeatureHeadUNet(3, 1, 1, feature_channels=2, channels=(4, 8), strides=(2,))
    assert explanation_layer(headed) is list(headed.unet.model.children())[1]
    with pytest.raises(ValueError, match="no Grad-CAM layer is known for networks of type Linear"):
        explanation_layer(nn.Linear(2, 2))


class CopyThenPixel(nn.Module):
    """A 1 x 1 convolution that doubles the image, then the logit of one pixel.

    HiResCAM of the convolution is gradient times activation: the gradient is 1 at
    the target pixel and 0 elsewhere, so the map is that pixel alone. Grad-CAM
    weighs the channel by the gradient's mean instead and returns the whole
    (positive) image: it does not say where.
    """

    def __init__(self, pixel: tuple[int, int]) -> None:
        super().__init__()
        self.pixel = pixel
        self.copy = nn.Conv2d(1, 1, kernel_size=1, bias=False)
        with torch.no_grad():
            self.copy.weight.fill_(2.0)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        row, column = self.pixel
        return self.copy(image)[:, :, row, column]


def test_hirescam_keeps_the_place_of_a_one_pixel_target_where_grad_cam_does_not() -> None:
    image = torch.zeros(2, 1, 8, 6)
    image[:, 0, 2, 3] = 0.5
    image[:, 0, 6, 1] = 1.5
    network = CopyThenPixel((2, 3))
    hires = HiResCam(network, layer=network.copy)(image, [0, 0])
    expected = torch.zeros(8, 6)
    expected[2, 3] = 1.0
    assert torch.equal(hires.heatmaps[0], expected) and torch.equal(hires.heatmaps[1], expected)
    assert torch.equal(hires.logits, torch.tensor([[1.0], [1.0]]))
    grad_cam = GradCam(network, layer=network.copy)(image, [0, 0])
    assert torch.allclose(grad_cam.heatmaps[0], image[0, 0] / 1.5)  # the peak is elsewhere
    # A negative product at the target is no evidence: the map is zero everywhere.
    assert not HiResCam(network, layer=network.copy)(-image, [0, 0]).heatmaps.any()


def test_one_target_per_image_is_required() -> None:
    network = MaxOfIdentity()
    with pytest.raises(ValueError, match="one target per image: 2 images, 1 targets"):
        GradCam(network, layer=network.copy)(torch.zeros(2, 1, 4, 4), [0])


def test_grad_cam_of_a_network_averaging_looks_explains_the_averaged_logit() -> None:
    """By hand with autograd: the looks' Grad-CAM maps flipped back, averaged, positive part."""
    torch.manual_seed(0)
    network = build_network({**tiny_densenet(1, "evidence_densenet"), "test_time_looks": 4})
    assert isinstance(network, EvidenceMapDenseNet)
    network.eval()
    with torch.no_grad():  # evidence rising with every feature: a map that is not all zero
        network.evidence.weight.abs_()
    images = torch.rand(2, 1, 64, 48)
    output = GradCam(network)(images, [0, 0])
    activations = network.features(mirror_looks(images, 4))
    activations.retain_grad()
    maps = network.evidence(torch.relu(activations))
    logits = network.pool(unmirror_looks(maps, 4).mean(dim=0))
    logits[:, 0].sum().backward()
    assert activations.grad is not None
    weights = activations.grad.mean(dim=(2, 3), keepdim=True)
    looks = (weights * activations).sum(dim=1, keepdim=True).detach()
    cam = torch.relu(unmirror_looks(looks, 4).mean(dim=0))
    upsampled = nn.functional.interpolate(cam, size=(64, 48), mode="bilinear")[:, 0]
    expected = upsampled / upsampled.flatten(1).amax(dim=1).view(-1, 1, 1)
    assert output.heatmaps.shape == (2, 64, 48)
    assert bool((expected.flatten(1).amax(dim=1) == 1.0).all())
    assert torch.allclose(output.heatmaps, expected, atol=1e-5)
    assert torch.allclose(output.logits, logits.detach(), atol=1e-6)
    with torch.no_grad():
        assert torch.allclose(output.logits, network(images), atol=1e-6)
