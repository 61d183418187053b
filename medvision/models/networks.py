"""Network architectures, built from a JSON-serialisable description.

Every architecture is a MONAI network; the description (``{"architecture": ...,
**keyword arguments}``) is what the model registry stores, so a model can be
rebuilt exactly before its weights are loaded.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from monai.networks.nets.basic_unet import BasicUNet
from monai.networks.nets.densenet import DenseNet
from monai.networks.nets.unet import UNet
from torch import nn

from medvision.choices import did_you_mean


def _densenet(spatial_dims: int, in_channels: int, out_channels: int, **options: Any) -> nn.Module:
    return DenseNet(spatial_dims, in_channels, out_channels, **options)


def _unet(spatial_dims: int, in_channels: int, out_channels: int, **options: Any) -> nn.Module:
    return UNet(spatial_dims, in_channels, out_channels, **options)


def _basic_unet(
    spatial_dims: int, in_channels: int, out_channels: int, **options: Any
) -> nn.Module:
    return BasicUNet(spatial_dims, in_channels, out_channels, **options)


#: Architecture names and the MONAI network each builds.
ARCHITECTURES: dict[str, Callable[..., nn.Module]] = {
    "densenet": _densenet,
    "unet": _unet,
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
