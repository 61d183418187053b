"""MONAI transform chains per modality: DICOM study in, model input out, and back.

- :mod:`~medvision.transforms.loading`: studies and ground-truth masks as MONAI
  dictionary items (``LoadStudyd``, ``LoadMasksd``, ``StudyLoadError``);
- :mod:`~medvision.transforms.cxr`, :mod:`~medvision.transforms.fundus`,
  :mod:`~medvision.transforms.mammo`, :mod:`~medvision.transforms.ct`: one chain
  per modality, each with ``build_transforms(training, ...)`` and its input spec
  (``INPUT_SIZE`` or ``SPACING_MM``/``ROI_SIZE``, ``CHANNELS``);
- :mod:`~medvision.transforms.chain`: what chains share, including
  :func:`~medvision.transforms.chain.to_original_grid` (model-input space back to
  the DICOM pixel grid) and ``describe()`` for the model registry.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from medvision.modality import Modality
from medvision.transforms.chain import MapKind, TransformChain, to_original_grid
from medvision.transforms.ct import CtTransforms
from medvision.transforms.cxr import CxrTransforms
from medvision.transforms.fundus import FundusTransforms
from medvision.transforms.loading import LoadMasksd, LoadStudyd, StudyLoadError, study_item
from medvision.transforms.mammo import MammoTransforms

#: The chain of each modality, by chain name (the ``name`` that ``describe()`` records).
CHAINS: dict[str, type[TransformChain]] = {
    chain.name: chain for chain in (CxrTransforms, FundusTransforms, MammoTransforms, CtTransforms)
}


def default_chain(modality: Modality | str) -> TransformChain:
    """Return the chain of ``modality`` with default parameters."""
    return CHAINS[Modality.parse(str(modality)).value]()


def chain_from_description(description: Mapping[str, Any]) -> TransformChain:
    """Rebuild a chain from what its ``describe()`` returned (e.g. a registry entry).

    Raises
    ------
    ValueError
        For an unknown chain name, a version other than the code's (the steps
        changed since the model was trained), or parameters the chain refuses.
    """
    name = str(description.get("name", ""))
    if name not in CHAINS:
        raise ValueError(f"unknown transform chain '{name}': expected one of {', '.join(CHAINS)}")
    chain = CHAINS[name]
    version = description.get("version")
    if version != chain.version:
        raise ValueError(
            f"transform chain '{name}' is version {chain.version} in this code, the "
            f"description has version {version}: the model was prepared differently"
        )
    return chain.from_parameters(description.get("parameters", {}))


__all__ = [
    "CHAINS",
    "CtTransforms",
    "CxrTransforms",
    "FundusTransforms",
    "LoadMasksd",
    "LoadStudyd",
    "MammoTransforms",
    "MapKind",
    "StudyLoadError",
    "TransformChain",
    "chain_from_description",
    "default_chain",
    "study_item",
    "to_original_grid",
]
