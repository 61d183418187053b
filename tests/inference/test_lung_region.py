"""Tests of the lung region the CT scorer keeps nodules in."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from monai.data.meta_tensor import MetaTensor

from medvision.inference.ct import find_nodules, nodule_region
from medvision.inference.lung_region import AIR_HU, lung_region
from medvision.modality import Modality
from medvision.synth import ct
from medvision.synth.generator import SynthConfig, make_spec


def _chest(bay: bool = False) -> np.ndarray:
    """A 40 x 40 x 6 chest in HU: air around a body, two lungs, a nodule, a vessel.

    With ``bay``, the left lung's outer edge has a 2-voxel-deep notch of soft tissue.
    """
    hu = np.full((40, 40, 6), -1000.0)
    hu[5:35, 5:35] = 40.0  # body
    hu[8:32, 8:18] = -850.0  # right lung
    hu[8:32, 22:32] = -850.0  # left lung
    hu[14:17, 11:14] = 20.0  # a nodule inside the right lung
    hu[20, 24:30] = -300.0  # a vessel in the left lung
    if bay:
        hu[18:22, 30:32] = 40.0
    return hu


def test_the_region_is_the_lungs_with_their_holes_not_the_air_around_the_patient() -> None:
    hu = _chest()
    region = lung_region(hu < AIR_HU, (2.0, 2.0, 2.0), closing_mm=0.0)
    lungs = np.zeros_like(region)
    lungs[8:32, 8:18] = lungs[8:32, 22:32] = True
    assert np.array_equal(region, lungs)  # the nodule filled in, the air outside left out


def test_the_closing_takes_in_a_notch_at_the_lung_s_edge() -> None:
    hu = _chest(bay=True)
    open_region = lung_region(hu < AIR_HU, (2.0, 2.0, 2.0), closing_mm=0.0)
    closed = lung_region(hu < AIR_HU, (2.0, 2.0, 2.0), closing_mm=6.0)
    assert not open_region[18:22, 30:32].any()
    assert closed[18:22, 30].all()  # a nodule in the notch would touch the region
    assert not closed[:5].any() and not closed[:, :5].any()  # still none of the air outside


def test_without_air_inside_the_patient_the_region_is_empty() -> None:
    hu = np.full((20, 20, 4), -1000.0)
    hu[4:16, 4:16] = 40.0
    assert not lung_region(hu < AIR_HU, (2.0, 2.0, 2.0)).any()


@pytest.mark.parametrize(
    ("air", "voxel_mm", "message"),
    [
        (np.zeros((4, 4), dtype=bool), (2.0, 2.0, 2.0), "must be 3-D"),
        (np.zeros((4, 4, 4), dtype=bool), (2.0, 2.0), "three positive sizes"),
        (np.zeros((4, 4, 4), dtype=bool), (2.0, 0.0, 2.0), "three positive sizes"),
    ],
)
def test_bad_input_is_refused(air: np.ndarray, voxel_mm: tuple[float, ...], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        lung_region(air, voxel_mm)


@pytest.mark.parametrize("index", [0, 3])
def test_on_phantoms_the_region_holds_the_lungs_and_every_nodule(
    tmp_path: Path, index: int
) -> None:
    config = SynthConfig((Modality.CT,), 8, 4, tmp_path, prevalence={"nodule": 1.0})
    volume = ct.render_volume(make_spec(config, Modality.CT, index))
    # (slices, rows, columns) -> (rows, columns, slices): the axial plane first.
    hu = np.moveaxis(volume.hu, 0, -1)
    lungs = np.moveaxis(volume.lung, 0, -1).astype(bool)
    nodules = np.moveaxis(volume.nodule, 0, -1)
    g = volume.geometry
    region = lung_region(hu < AIR_HU, (g.spacing_mm, g.spacing_mm, g.thickness_mm))
    assert nodules.any() and region[nodules > 0].all()
    assert region[lungs].mean() > 0.96  # measured 0.970-0.985 on six phantoms
    assert (region & ~lungs).sum() / region.sum() < 0.06  # the airways: 0.035-0.047
    edges = region[0], region[-1], region[:, 0], region[:, -1]
    assert not any(edge.any() for edge in edges)


def _model_space(hu: np.ndarray) -> MetaTensor:
    """The chain's output for ``hu``: the lung-nodule window scaled to [0, 1], 2 mm voxels."""
    scaled = np.clip((hu + 1000.0) / 1400.0, 0.0, 1.0).astype(np.float32)
    return MetaTensor(
        torch.from_numpy(scaled[None]), affine=torch.diag(torch.tensor([2.0] * 3 + [1.0]))
    )


def test_nodule_region_reads_the_lungs_from_a_model_space_image() -> None:
    image = _model_space(_chest())
    region = nodule_region(image, "lung_nodule")
    assert region is not None
    assert np.array_equal(region, lung_region(_chest() < AIR_HU, (2.0, 2.0, 2.0)))


def test_no_region_where_the_window_shows_no_air_or_no_lung_is_found() -> None:
    assert nodule_region(_model_space(_chest()), "mediastinum") is None
    solid = np.full((20, 20, 4), 40.0)
    assert nodule_region(_model_space(solid), "lung_nodule") is None
    with pytest.raises(ValueError, match="carries no geometry"):
        nodule_region(torch.zeros(1, 4, 4, 4), "lung_nodule")


def test_components_outside_the_region_are_dropped_and_the_rest_kept() -> None:
    logits = np.full((40, 40, 6), -10.0, dtype=np.float32)
    logits[14:17, 11:14, 2:4] = 5.0  # on the nodule, in the right lung
    logits[1:3, 1:3, 2:4] = 9.0  # in the air around the patient, stronger
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    _, everywhere = find_nodules(logits, affine)
    region = lung_region(_chest() < AIR_HU, (2.0, 2.0, 2.0))
    labels, kept = find_nodules(logits, affine, region=region)
    assert len(everywhere) == 2
    assert [n.voxels for n in kept] == [18]
    assert kept[0].logit == pytest.approx(5.0)
    assert set(np.unique(labels)) == {0, 1} and labels[1:3, 1:3].max() == 0
    with pytest.raises(ValueError, match="nodule region's shape"):
        find_nodules(logits, affine, region=region[:-1])
