"""Tests of the network builders, in particular the evidence-map DenseNet."""

from __future__ import annotations

import math

import pytest
import torch

from medvision.models.networks import EvidenceMapDenseNet, build_network

DESCRIPTION = {
    "architecture": "evidence_densenet",
    "spatial_dims": 2,
    "in_channels": 1,
    "out_channels": 3,
    "init_features": 8,
    "growth_rate": 4,
    "block_config": [2, 2],
}


def test_evidence_densenet_gives_one_logit_per_finding_and_a_map_per_finding() -> None:
    network = build_network(DESCRIPTION)
    assert isinstance(network, EvidenceMapDenseNet)
    network.eval()
    image = torch.randn(2, 1, 64, 64)
    assert network(image).shape == (2, 3)
    assert network.evidence_maps(image).shape == (2, 3, 8, 8)


def test_pooling_is_the_log_mean_exp_of_the_evidence_map() -> None:
    network = EvidenceMapDenseNet(
        2, 1, 3, sharpness=4.0, init_features=8, growth_rate=4, block_config=(2, 2)
    )
    network.eval()
    image = torch.randn(1, 1, 64, 64)
    with torch.no_grad():
        maps = network.evidence_maps(image).flatten(2)
        expected = torch.log(torch.exp(4.0 * maps).mean(dim=2)) / 4.0
        assert torch.allclose(network(image), expected, atol=1e-5)


def test_a_single_strong_position_dominates_with_a_sharp_pooling(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    network = EvidenceMapDenseNet(
        2, 1, 1, sharpness=50.0, init_features=8, growth_rate=4, block_config=(2, 2)
    )
    maps = torch.zeros(1, 1, 8, 8)
    maps[0, 0, 2, 5] = 10.0
    monkeypatch.setattr(network, "evidence_maps", lambda image: maps)
    pooled = float(network(torch.zeros(1, 1, 64, 64)))
    # The maximum is 10 and the mean 10/64; a sharp pooling lands near the maximum.
    assert pooled == pytest.approx(10.0 - math.log(64) / 50.0, abs=1e-5)


def test_sharpness_must_be_positive() -> None:
    with pytest.raises(ValueError, match="sharpness must be positive"):
        EvidenceMapDenseNet(2, 1, 1, sharpness=0.0)
