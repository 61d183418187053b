"""Faithfulness measures: exact values on constructed heatmaps and lesions."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from medvision.explain.faithfulness import (
    POINTING_TOLERANCE_MM,
    lesion_mask,
    mass_inside,
    pointing_game_hit,
    randomised_copy,
    rank_correlation,
)
from medvision.modality import Modality
from medvision.models.networks import build_network
from tests.conftest import tiny_densenet


def _lesion() -> np.ndarray:
    lesion = np.zeros((100, 80), dtype=bool)
    lesion[40:50, 30:40] = True
    return lesion


def test_the_pointing_game_hits_on_the_lesion_and_within_the_tolerance_only() -> None:
    lesion = _lesion()
    heatmap = np.zeros((100, 80))
    heatmap[45, 35] = 1.0
    assert pointing_game_hit(heatmap, lesion)
    heatmap[45, 35], heatmap[45, 55] = 0.0, 1.0  # 16 px right of the lesion's last column
    assert not pointing_game_hit(heatmap, lesion)
    assert pointing_game_hit(heatmap, lesion, tolerance=16)
    with pytest.raises(ValueError, match="the lesion mask is empty"):
        pointing_game_hit(heatmap, np.zeros_like(lesion))
    with pytest.raises(ValueError, match="differ in shape"):
        pointing_game_hit(heatmap[:99], lesion)


def test_a_ct_peak_hits_within_the_tolerance_in_millimetres() -> None:
    nodule = np.zeros((20, 30, 30), dtype=bool)
    nodule[8:12, 10:14, 10:14] = True
    heatmap = np.zeros(nodule.shape)
    # Two slices above the nodule: 2 voxels, 5 mm at 2.5 mm slices, 3 mm at 1.5 mm.
    heatmap[6, 12, 12] = 1.0
    assert pointing_game_hit(heatmap, nodule, POINTING_TOLERANCE_MM, (2.5, 2.2, 2.2))
    assert not pointing_game_hit(heatmap, nodule, POINTING_TOLERANCE_MM, (3.0, 2.2, 2.2))
    assert pointing_game_hit(heatmap, nodule, POINTING_TOLERANCE_MM, (1.5, 2.2, 2.2))
    heatmap[6, 12, 12], heatmap[9, 11, 12] = 0.0, 1.0
    assert pointing_game_hit(heatmap, nodule, 0.0, (3.0, 2.2, 2.2))  # inside: always a hit


def test_mass_inside_is_the_share_of_the_heatmap_on_the_lesion() -> None:
    lesion = _lesion()
    heatmap = np.zeros((100, 80))
    heatmap[40:50, 30:40] = 0.5  # 100 pixels x 0.5 = 50 on the lesion
    heatmap[0, :50] = 1.0  # 50 off it
    assert mass_inside(heatmap, lesion) == 0.5
    assert mass_inside(np.ones((100, 80)), lesion) == 100 / 8000
    assert math.isnan(mass_inside(np.zeros((100, 80)), lesion))


def test_rank_correlation_is_spearman_of_the_pixels() -> None:
    ramp = np.arange(12, dtype=float).reshape(3, 4)
    assert rank_correlation(ramp, ramp**3) == pytest.approx(1.0)
    assert rank_correlation(ramp, -ramp) == pytest.approx(-1.0)
    assert math.isnan(rank_correlation(ramp, np.ones((3, 4))))


def test_lesion_masks_join_the_finding_s_mask_names_of_one_image() -> None:
    a = np.zeros((4, 4), dtype=np.uint8)
    b = np.zeros((4, 4), dtype=np.uint8)
    a[0, 0], b[3, 3] = 1, 1
    masks = {"1.2__microaneurysm": a, "1.2__hard_exudate": b, "1.3__haemorrhage": b}
    union = lesion_mask(masks, Modality.FUNDUS, "referable_dr", "1.2")
    assert union is not None
    assert union.sum() == 2 and union[0, 0] and union[3, 3]
    assert lesion_mask(masks, Modality.FUNDUS, "referable_dr", "9.9") is None
    assert lesion_mask({"1.2__nodule": a}, Modality.CXR, "nodule", "1.2").sum() == 1  # type: ignore[union-attr]


def test_a_randomised_copy_has_new_weights_and_leaves_the_network_alone() -> None:
    torch.manual_seed(0)
    network = build_network(tiny_densenet(2, "evidence_densenet"))
    before = {k: v.clone() for k, v in network.state_dict().items()}
    first, again = randomised_copy(network, seed=1), randomised_copy(network, seed=1)
    weights = [k for k in before if k.endswith("weight")]
    assert all(torch.equal(before[k], network.state_dict()[k]) for k in before)
    assert all(torch.equal(first.state_dict()[k], again.state_dict()[k]) for k in before)
    changed = [k for k in weights if not torch.equal(first.state_dict()[k], before[k])]
    convolutions = [k for k in weights if before[k].ndim == 4]
    assert set(convolutions) <= set(changed)
    assert not first.training
