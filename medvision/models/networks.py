"""Network architectures, built from a JSON-serialisable description.

Every architecture is a MONAI network; the description (``{"architecture": ...,
**keyword arguments}``) is what the model registry stores, so a model can be
rebuilt exactly before its weights are loaded.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import torch
from monai.networks.layers.factories import Conv
from monai.networks.nets.basic_unet import BasicUNet
from monai.networks.nets.densenet import DenseNet
from monai.networks.nets.unet import UNet
from torch import nn

from medvision.choices import did_you_mean


def _densenet(spatial_dims: int, in_channels: int, out_channels: int, **options: Any) -> nn.Module:
    return DenseNet(spatial_dims, in_channels, out_channels, **options)


#: The numbers of test-time looks an evidence-map network can average (its
#: ``test_time_looks``): the input, then upside down, then left-right, then both.
TEST_TIME_LOOKS: tuple[int, ...] = (1, 2, 4)


def check_looks(looks: int, spatial_dims: int = 2) -> None:
    """Refuse a number of test-time looks :func:`mirror_looks` does not make.

    Raises
    ------
    ValueError
        For a number not in :data:`TEST_TIME_LOOKS`, or more than one look of a
        network that is not 2-D.
    """
    if looks not in TEST_TIME_LOOKS:
        known = ", ".join(str(n) for n in TEST_TIME_LOOKS)
        raise ValueError(f"test_time_looks must be one of {known}, got {looks}")
    if looks > 1 and spatial_dims != 2:
        raise ValueError(f"test-time looks are for 2-D networks, not {spatial_dims}-D")


def _look_axes(look: int) -> list[int]:
    """Return the axes look ``look`` flips: bit 0 the rows, bit 1 the columns."""
    return [axis for axis, bit in ((-2, 1), (-1, 2)) if look & bit]


def mirror_looks(images: torch.Tensor, looks: int) -> torch.Tensor:
    """Stack ``looks`` mirror images of a ``(batch, channels, rows, columns)`` batch.

    Returns ``(looks * batch, channels, rows, columns)``, look by look: the images,
    then upside down, then left-right, then both (:data:`TEST_TIME_LOOKS`).
    """
    check_looks(looks, images.dim() - 2)
    return torch.cat([images.flip(_look_axes(look)) if look else images for look in range(looks)])


def unmirror_looks(maps: torch.Tensor, looks: int) -> torch.Tensor:
    """Flip each look's maps back onto the input's grid: ``(looks, batch, ...)``.

    ``maps`` is ``(looks * batch, ...)`` in :func:`mirror_looks`'s order, on any grid
    whose rows and columns run as the input's (an evidence map, a feature map).
    """
    check_looks(looks, maps.dim() - 2)
    parts = maps.chunk(looks)
    return torch.stack(
        [part.flip(_look_axes(look)) if look else part for look, part in enumerate(parts)]
    )


class EvidenceMapDenseNet(nn.Module):
    """A DenseNet whose head maps features to one evidence map per finding, then pools.

    MONAI's DenseNet averages its last features over the whole image before the
    linear layer, so a lesion covering 1 % of the image moves the average by
    about 1 %. Here a 1x1 convolution gives a logit per finding at every
    position of the last feature map, and log-sum-exp pooling,
    ``(1/r) log(mean(exp(r * map)))``, joins them: between the mean (``r -> 0``)
    and the maximum (``r -> inf``), so one strong region can carry the image
    (Wang et al. 2017, ChestX-ray8, section 3.2; Pinheiro and Collobert 2015).
    The maps themselves are also what class-activation explanations show.

    Parameters
    ----------
    spatial_dims, in_channels, out_channels
        As MONAI's DenseNet; ``out_channels`` is the number of findings.
    sharpness
        ``r`` of the pooling.
    grade_outputs
        Further evidence maps, after the findings', from a 1x1 convolution of their
        own (``grade_evidence``): a grading scale's cut points
        (:mod:`medvision.grading`). Kept apart so that they can be trained on a
        network whose findings are frozen (:meth:`freeze_findings`).
    test_time_looks
        In evaluation mode, the evidence maps are the mean of the maps of this many
        mirror images of the input (:data:`TEST_TIME_LOOKS`; :func:`mirror_looks`),
        each flipped back onto the input's grid, before pooling: 1 (the input
        alone), 2 (and upside down) or 4 (and left-right, and both). For networks
        trained on mirrored patches (mammography's ``--patch-symmetries``), whose
        evidence for a lesion does not depend on which way up it lies, while the
        tissue noise of each look differs. Training always sees the input alone.
    **options
        MONAI DenseNet options (``init_features``, ``growth_rate``, ``block_config``, ...).
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        out_channels: int,
        sharpness: float = 5.0,
        grade_outputs: int = 0,
        test_time_looks: int = 1,
        **options: Any,
    ) -> None:
        super().__init__()
        if sharpness <= 0:
            raise ValueError(f"sharpness must be positive, got {sharpness}")
        check_looks(test_time_looks, spatial_dims)
        if grade_outputs < 0:
            raise ValueError(f"grade_outputs must be 0 or more, got {grade_outputs}")
        backbone = DenseNet(spatial_dims, in_channels, out_channels, **options)
        self.features = backbone.features
        head = backbone.class_layers.out
        if not isinstance(head, nn.Linear):
            raise TypeError("MONAI DenseNet changed: its class_layers.out is not nn.Linear")
        channels = head.in_features
        self.evidence = Conv[Conv.CONV, spatial_dims](channels, out_channels, kernel_size=1)
        self.grade_evidence = (
            Conv[Conv.CONV, spatial_dims](channels, grade_outputs, kernel_size=1)
            if grade_outputs
            else None
        )
        self.sharpness = float(sharpness)
        self.test_time_looks = int(test_time_looks)
        self.findings_frozen = False

    def evidence_maps(self, image: torch.Tensor) -> torch.Tensor:
        """Return the logit maps ``(batch, findings + grade outputs, *spatial)``."""
        features = torch.relu(self.features(image))
        maps = self.evidence(features)
        if self.grade_evidence is None:
            return maps
        return torch.cat([maps, self.grade_evidence(features)], dim=1)

    def freeze_findings(self) -> None:
        """Freeze everything but the grade outputs' convolution, batch statistics included.

        The findings' outputs then stay exactly as they were while the grade's are
        trained: the features and the findings' convolution get no gradient (so no
        optimiser step or weight decay touches them), and the features stay in
        evaluation mode, so batch normalisation neither uses nor updates batch
        statistics.

        Raises
        ------
        ValueError
            If the network has no grade outputs.
        """
        if self.grade_evidence is None:
            raise ValueError("the network has no grade outputs to train on frozen findings")
        for parameter in [*self.features.parameters(), *self.evidence.parameters()]:
            parameter.requires_grad_(False)
        self.findings_frozen = True
        self.features.eval()

    def train(self, mode: bool = True) -> EvidenceMapDenseNet:
        """Set the training mode; frozen features stay in evaluation mode."""
        super().train(mode)
        if self.findings_frozen:
            self.features.eval()
        return self

    def pool(self, maps: torch.Tensor) -> torch.Tensor:
        """Return one logit per finding from evidence maps (log-sum-exp pooling)."""
        flat = maps.flatten(2)
        pooled = torch.logsumexp(self.sharpness * flat, dim=2) - math.log(flat.shape[2])
        return pooled / self.sharpness

    def served_maps(self, image: torch.Tensor) -> torch.Tensor:
        """Return the maps the output pools: in evaluation mode, the mean over the looks.

        The looks go through the features in one batch (one call of the layer
        Grad-CAM explains, :mod:`medvision.explain.gradcam`).
        """
        looks = 1 if self.training else self.test_time_looks
        if looks == 1:
            return self.evidence_maps(image)
        maps = self.evidence_maps(mirror_looks(image, looks))
        return unmirror_looks(maps, looks).mean(dim=0)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        """Return one logit per finding, ``(batch, findings)``."""
        return self.pool(self.served_maps(image))


def _evidence_densenet(
    spatial_dims: int, in_channels: int, out_channels: int, **options: Any
) -> nn.Module:
    return EvidenceMapDenseNet(spatial_dims, in_channels, out_channels, **options)


def _unet(spatial_dims: int, in_channels: int, out_channels: int, **options: Any) -> nn.Module:
    return UNet(spatial_dims, in_channels, out_channels, **options)


class FeatureHeadUNet(nn.Module):
    """A MONAI U-Net that ends in feature channels, then a 1x1 convolution to the logits.

    MONAI's residual ``UNet`` ends in a transposed convolution to ``out_channels``
    followed by instance normalisation and PReLU, then a residual unit. With one
    output channel (one finding) that normalises the logit map itself over each
    window: every window's logits have zero mean and unit variance before the last
    unit, whether or not the window holds a lesion, so a lesion-free window of a
    sliding-window pass is pushed to score some voxels high. Here the U-Net ends in
    ``feature_channels`` normalised feature channels (as nnU-Net's decoder does) and
    a PReLU and a plain 1x1 convolution map them to the logits, so no logit is
    normalised.

    On the CT phantoms it did not segment better than MONAI's ``UNet`` (fewer false
    positives per scan, worse detection at one per scan; ``docs/training.md``), so
    it is an option (``medvision train --network``), not the default.

    Parameters
    ----------
    spatial_dims, in_channels, out_channels
        As MONAI's ``UNet``; ``out_channels`` is the number of findings.
    feature_channels
        Channels of the U-Net's last features (the head's input).
    **options
        MONAI ``UNet`` options (``channels``, ``strides``, ``num_res_units``, ...).
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        out_channels: int,
        feature_channels: int = 8,
        **options: Any,
    ) -> None:
        super().__init__()
        if feature_channels < 1:
            raise ValueError(f"feature_channels must be at least 1, got {feature_channels}")
        self.unet = UNet(spatial_dims, in_channels, feature_channels, **options)
        self.activation = nn.PReLU()
        self.head = Conv[Conv.CONV, spatial_dims](feature_channels, out_channels, kernel_size=1)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        """Return the logit map ``(batch, out_channels, *spatial)``."""
        return self.head(self.activation(self.unet(image)))


def _feature_head_unet(
    spatial_dims: int, in_channels: int, out_channels: int, **options: Any
) -> nn.Module:
    return FeatureHeadUNet(spatial_dims, in_channels, out_channels, **options)


def _basic_unet(
    spatial_dims: int, in_channels: int, out_channels: int, **options: Any
) -> nn.Module:
    return BasicUNet(spatial_dims, in_channels, out_channels, **options)


#: Architecture names and the MONAI network each builds.
ARCHITECTURES: dict[str, Callable[..., nn.Module]] = {
    "densenet": _densenet,
    "evidence_densenet": _evidence_densenet,
    "unet": _unet,
    "feature_head_unet": _feature_head_unet,
    "basic_unet": _basic_unet,
}


def build_network(description: Mapping[str, Any]) -> nn.Module:
    """Build the network a registry entry describes.

    Parameters
    ----------
    description
        ``architecture`` (a key of :data:`ARCHITECTURES`), ``spatial_dims``,
        ``in_channels``, ``out_channels`` and the network's other keyword arguments.

    Raises
    ------
    ValueError
        For an unknown architecture (with a "did you mean" hint) or missing sizes.
    """
    options = dict(description)
    name = str(options.pop("architecture", ""))
    if name not in ARCHITECTURES:
        hint = did_you_mean(name, ARCHITECTURES)
        known = ", ".join(sorted(ARCHITECTURES))
        raise ValueError(f"unknown architecture '{name}' (known: {known}).{hint}")
    missing = [k for k in ("spatial_dims", "in_channels", "out_channels") if k not in options]
    if missing:
        raise ValueError(f"network description lacks {', '.join(missing)}")
    for key, value in options.items():
        if isinstance(value, list):
            options[key] = tuple(value)
    return ARCHITECTURES[name](
        options.pop("spatial_dims"),
        options.pop("in_channels"),
        options.pop("out_channels"),
        **options,
    )
