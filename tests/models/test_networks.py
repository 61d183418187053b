"""Tests of the network builders: the evidence-map DenseNet and the feature-head U-Net."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
import torch
from monai.networks.nets.unet import UNet
from torch import nn

from medvision.modality import Modality
from medvision.models.networks import (
    EvidenceMapDenseNet,
    FeatureHeadUNet,
    build_network,
    mirror_looks,
    unmirror_looks,
)
from medvision.training import TrainOptions

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


def test_grade_outputs_follow_the_findings_and_train_alone_on_frozen_findings() -> None:
    torch.manual_seed(0)
    network = build_network({**DESCRIPTION, "grade_outputs": 2})
    assert isinstance(network, EvidenceMapDenseNet)
    image = torch.randn(4, 1, 64, 64)
    network.eval()
    with torch.no_grad():
        before = network(image)
    assert before.shape == (4, 5)
    network.freeze_findings()
    network.train()
    assert not network.features.training  # batch statistics neither used nor updated
    trained = [name for name, p in network.named_parameters() if p.requires_grad]
    assert trained == ["grade_evidence.weight", "grade_evidence.bias"]
    optimiser = torch.optim.AdamW(network.parameters(), lr=0.1, weight_decay=0.1)
    for _ in range(3):
        optimiser.zero_grad()
        network(image).sum().backward()
        optimiser.step()
    network.eval()
    with torch.no_grad():
        after = network(image)
    assert torch.equal(after[:, :3], before[:, :3])  # the findings, exactly
    assert not torch.allclose(after[:, 3:], before[:, 3:])  # the grade's outputs moved
    with pytest.raises(ValueError, match="no grade outputs to train on frozen findings"):
        build_network(DESCRIPTION).freeze_findings()  # type: ignore[operator]


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


UNET_OPTIONS: dict[str, Any] = {"channels": (4, 8), "strides": (2,), "num_res_units": 1}


def test_monai_unet_with_one_output_normalises_its_logit_map_away() -> None:
    # Why FeatureHeadUNet exists: MONAI's UNet instance-normalises its one output
    # channel, so a bias added before that normalisation cannot move any logit.
    torch.manual_seed(0)
    network = UNet(3, 1, 1, **UNET_OPTIONS).eval()
    image = torch.randn(1, 1, 8, 8, 8)
    with torch.no_grad():
        before = network(image)
        up = list(network.model.children())[2]
        assert isinstance(up, nn.Sequential)
        top = up[0].conv
        assert isinstance(top, nn.ConvTranspose3d) and top.bias is not None
        top.bias += 5.0
        after = network(image)
    assert torch.allclose(before, after, atol=1e-5)


def test_feature_head_unet_bias_moves_every_logit() -> None:
    torch.manual_seed(0)
    network = build_network(
        {
            "architecture": "feature_head_unet",
            "spatial_dims": 3,
            "in_channels": 1,
            "out_channels": 1,
            "feature_channels": 3,
            **UNET_OPTIONS,
        }
    )
    assert isinstance(network, FeatureHeadUNet)
    network.eval()
    image = torch.randn(2, 1, 8, 8, 8)
    with torch.no_grad():
        before = network(image)
        network.head.bias += 5.0
        after = network(image)
    assert before.shape == (2, 1, 8, 8, 8)
    assert torch.allclose(after - before, torch.full_like(before, 5.0), atol=1e-5)


def test_feature_head_unet_needs_a_feature_channel() -> None:
    with pytest.raises(ValueError, match="feature_channels"):
        FeatureHeadUNet(3, 1, 1, feature_channels=0, **UNET_OPTIONS)


def test_the_benchmark_network_files_are_valid_ct_networks(tmp_path: Path) -> None:
    folder = Path(__file__).resolve().parents[2] / "benchmarks" / "networks"
    paths = sorted(folder.glob("*.json"))
    assert paths
    for path in paths:
        description = json.loads(path.read_text(encoding="utf-8"))
        # TrainOptions builds the network and checks its spatial_dims, as `--network` does;
        # a network of two input channels is for the chain with the dot filter.
        options = TrainOptions(
            modality=Modality.CT,
            manifest=tmp_path,
            out=tmp_path,
            network=description,
            dot_enhancement=description["in_channels"] == 2,
        )
        assert options.network == description


def test_mirror_looks_stack_the_flips_look_by_look_and_unmirror_undoes_them() -> None:
    images = torch.arange(2 * 3 * 4, dtype=torch.float32).reshape(2, 1, 3, 4)
    looks = mirror_looks(images, 4)
    assert looks.shape == (8, 1, 3, 4)
    assert torch.equal(looks[:2], images)
    assert torch.equal(looks[2:4], images.flip(-2))
    assert torch.equal(looks[4:6], images.flip(-1))
    assert torch.equal(looks[6:], images.flip(-2).flip(-1))
    back = unmirror_looks(looks, 4)
    assert back.shape == (4, 2, 1, 3, 4)
    for look in back:
        assert torch.equal(look, images)
    assert torch.equal(mirror_looks(images, 1), images)
    assert torch.equal(mirror_looks(images, 2), torch.cat([images, images.flip(-2)]))


def test_test_time_looks_average_the_flipped_back_maps_in_evaluation_only() -> None:
    torch.manual_seed(0)
    network = build_network({**DESCRIPTION, "out_channels": 1, "test_time_looks": 4})
    assert isinstance(network, EvidenceMapDenseNet)
    image = torch.randn(2, 1, 64, 48)
    network.eval()
    with torch.no_grad():
        flips: list[list[int]] = [[], [-2], [-1], [-2, -1]]
        maps = [network.evidence_maps(image.flip(axes)).flip(axes) for axes in flips]
        expected = network.pool(torch.stack(maps).mean(dim=0))
        served = network(image)
        single = network.pool(network.evidence_maps(image))
    assert torch.allclose(served, expected, atol=1e-5)
    assert (served - single).abs().min() > 1e-3  # the looks do change the logit
    network.train()
    assert torch.equal(network(image), network.pool(network.evidence_maps(image)))


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"test_time_looks": 3}, "test_time_looks must be one of 1, 2, 4, got 3"),
        ({"test_time_looks": 2, "spatial_dims": 3}, "test-time looks are for 2-D networks"),
    ],
)
def test_test_time_looks_the_network_cannot_make_are_refused(
    changes: dict[str, object], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        build_network({**DESCRIPTION, **changes})


def test_training_refuses_test_time_looks_without_mirrored_patches(tmp_path: Path) -> None:
    network = {**DESCRIPTION, "out_channels": 1, "test_time_looks": 4}
    common: dict[str, Any] = {
        "manifest": tmp_path / "m.csv",
        "out": tmp_path,
        "network": network,
        "input_size": (512, 384),
        "patch_size": (128, 128),
        "loss": "bce",
        "lesion_masks": True,
    }
    TrainOptions(modality=Modality.MAMMO, patch_symmetries=True, **common)
    with pytest.raises(ValueError, match=r"--network: test-time looks need a model trained on"):
        TrainOptions(modality=Modality.MAMMO, **common)
    with pytest.raises(ValueError, match="test-time looks are for mammography models, not cxr"):
        TrainOptions(
            modality=Modality.CXR,
            manifest=tmp_path / "m.csv",
            out=tmp_path,
            network={**DESCRIPTION, "out_channels": 4, "test_time_looks": 2},
        )
