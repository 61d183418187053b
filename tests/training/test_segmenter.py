"""Tests of the CT nodule segmenter's training run."""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from medvision.data.manifest import read_manifest, write_manifest
from medvision.modality import Modality
from medvision.models.networks import build_network
from medvision.models.registry import Task, load_model, load_registry
from medvision.synth.generator import SynthConfig, generate
from medvision.training.classifier import LossKind, TrainOptions
from medvision.training.hard_negatives import mine_hard_negatives
from medvision.training.segmenter import (
    SegmenterEpochRecord,
    SegmenterTrainingResult,
    default_segmenter_network,
    segmentation_loss,
    segmenter_chain,
    selection_score,
    train_ct_segmenter,
)
from medvision.transforms.ct import SPACING_MM, CtTransforms
from tests.conftest import tiny_unet

#: Seed of eight CT phantoms, four with nodules and four without.
SEED = 3
SPLITS = ("train", "tune", "calibration", "test")
TINY_NETWORK = tiny_unet()
#: Coarse 4 mm voxels, small patches, one per study: a run of seconds on a CPU.
TINY_CHAIN = CtTransforms(spacing_mm=(4.0, 4.0, 4.0), roi_size=(48, 48, 32), samples_per_volume=1)

Run = tuple[Path, SegmenterTrainingResult]


@pytest.fixture(scope="module")
def manifest(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Eight phantoms; each split gets one study with nodules and one without."""
    out = tmp_path_factory.mktemp("ct-segmenter")
    config = SynthConfig((Modality.CT,), 8, SEED, out, prevalence={"*": 0.5}, workers=1)
    rows = generate(config, progress=False)
    positive = [row for row in rows if row.labels["nodule"] == 1]
    negative = [row for row in rows if row.labels["nodule"] == 0]
    assert len(positive) == len(negative) == 4
    paired = [row for pair in zip(positive, negative, strict=True) for row in pair]
    rows = [replace(row, split=SPLITS[index // 2]) for index, row in enumerate(paired)]
    write_manifest(rows, out / "manifest.csv")
    return out / "manifest.csv"


@pytest.fixture(scope="module")
def run(manifest: Path, tmp_path_factory: pytest.TempPathFactory) -> Run:
    out = tmp_path_factory.mktemp("model")
    options = TrainOptions(
        modality=Modality.CT,
        manifest=manifest,
        out=out,
        epochs=2,
        batch_size=2,
        device="cpu",
        max_studies=2,
        network=TINY_NETWORK,
        time_limit_seconds=3600.0,  # far more than two tiny epochs need: changes nothing
    )
    # One intra-op thread: on a small shared CPU, torch's thread pool mostly waits.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return out, train_ct_segmenter(options, progress=False, chain=TINY_CHAIN)
    finally:
        torch.set_num_threads(threads)


@pytest.mark.slow
def test_training_writes_a_calibrated_segmenter_whose_hash_verifies(run: Run) -> None:
    out, result = run
    entry = result.entry
    assert sorted(path.name for path in out.iterdir()) == [
        "ct-unet.json",
        "ct-unet.metrics.jsonl",
        "ct-unet.pt",
    ]
    assert load_registry(out) == {"ct-unet": entry}
    network = load_model(entry, out)
    assert sum(p.numel() for p in network.parameters()) > 0
    assert (entry.task, entry.findings, entry.input_size) == (
        Task.SEGMENTATION,
        ("nodule",),
        (48, 48, 32),
    )
    assert entry.transforms == TINY_CHAIN.describe()
    assert entry.model_card == "model_cards/ct-unet.md"
    assert set(entry.calibration) == {"nodule"}
    assert entry.calibration["nodule"]["method"] == result.calibration["nodule"].method
    assert 0.0 <= entry.thresholds["nodule"] <= 1.0


@pytest.mark.slow
def test_training_logs_each_epoch_then_the_kept_one(run: Run) -> None:
    out, result = run
    lines = [json.loads(line) for line in (out / "ct-unet.metrics.jsonl").read_text().splitlines()]
    assert [line.get("epoch") for line in lines] == [1, 2, None]
    assert set(lines[0]) == {
        "epoch",
        "train_loss",
        "tune_dice",
        "tune_soft_dice",
        "seconds",
        "tune_seconds",
        "learning_rate",
    }
    assert all(0.0 < line["tune_seconds"] < line["seconds"] for line in lines[:2])
    assert lines[0]["learning_rate"] == 2e-3
    assert lines[-1]["kept_epoch"] == result.kept_epoch in {1, 2}
    assert (lines[-1]["epochs_requested"], lines[-1]["epochs_run"]) == (2, 2)
    kept = max(result.epochs, key=selection_score)
    assert result.kept_epoch == kept.epoch
    assert (lines[-1]["tune_dice"], lines[-1]["tune_soft_dice"]) == selection_score(kept)
    assert [record.epoch for record in result.epochs] == [1, 2]


@pytest.mark.slow
def test_training_evaluates_detection_on_the_test_split(run: Run) -> None:
    _, result = run
    evaluation = result.test_evaluation
    assert evaluation is not None
    assert evaluation.scans == 2
    assert len(evaluation.dice_per_scan) == 1  # one test study has nodules
    assert 0.0 <= evaluation.mean_dice <= 1.0


def test_default_network_is_a_3d_unet_with_one_logit_channel() -> None:
    description = default_segmenter_network()
    assert (description["architecture"], description["spatial_dims"]) == ("unet", 3)
    assert (description["in_channels"], description["out_channels"]) == (1, 1)
    network = build_network(description)
    assert 500_000 < sum(p.numel() for p in network.parameters()) < 700_000
    assert default_segmenter_network(2)["in_channels"] == 2


def test_dot_enhancement_is_ct_only_and_needs_a_two_channel_network(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="--dot-enhancement applies to CT; it filters 3-D"):
        TrainOptions(Modality.CXR, tmp_path, tmp_path, dot_enhancement=True)
    expected = r"--network: ct needs in_channels 2 and out_channels 1, got 1 and 1"
    with pytest.raises(ValueError, match=expected):
        TrainOptions(Modality.CT, tmp_path, tmp_path, dot_enhancement=True, network=TINY_NETWORK)
    two = {**TINY_NETWORK, "in_channels": 2}
    assert TrainOptions(Modality.CT, tmp_path, tmp_path, dot_enhancement=True, network=two).network


def test_training_refuses_a_network_whose_channels_differ_from_the_chain(
    manifest: Path, tmp_path: Path
) -> None:
    # E.g. --init-from a one-channel model with --dot-enhancement, or a chain given directly.
    options = TrainOptions(Modality.CT, manifest, tmp_path, network=TINY_NETWORK)
    dotted = replace(TINY_CHAIN, dot_enhancement=True)
    expected = r"the network takes 1 input channel\(s\), the CT chain gives 2 \(with --dot-enh"
    with pytest.raises(ValueError, match=expected):
        train_ct_segmenter(options, progress=False, chain=dotted)


def test_the_training_chain_takes_the_spacing_and_positive_fraction_options(tmp_path: Path) -> None:
    options = TrainOptions(modality=Modality.CT, manifest=tmp_path, out=tmp_path)
    assert segmenter_chain(options) == CtTransforms()
    assert CtTransforms().spacing_mm == SPACING_MM == (2.0, 2.0, 2.0)
    finer = replace(options, spacing_mm=(1.5, 1.5, 1.5))
    chain = segmenter_chain(finer)
    assert chain == CtTransforms(spacing_mm=(1.5, 1.5, 1.5))
    assert chain.describe()["parameters"]["spacing_mm"] == [1.5, 1.5, 1.5]
    assert segmenter_chain(finer, CtTransforms(spacing_mm=(1.5, 1.5, 1.5))) == chain
    assert segmenter_chain(options, TINY_CHAIN) is TINY_CHAIN
    with pytest.raises(ValueError, match=r"spacing_mm \(1.5, 1.5, 1.5\) differs from the given"):
        segmenter_chain(finer, TINY_CHAIN)
    fewer = replace(options, positive_fraction=0.33)
    assert segmenter_chain(fewer) == CtTransforms(positive_fraction=0.33)
    assert CtTransforms().positive_fraction == 0.67
    assert segmenter_chain(fewer).describe()["parameters"]["positive_fraction"] == 0.33
    expected = r"positive_fraction 0\.33 differs from the given chain's 0\.67"
    with pytest.raises(ValueError, match=expected):
        segmenter_chain(fewer, CtTransforms())
    dotted = replace(options, dot_enhancement=True)
    assert segmenter_chain(dotted) == CtTransforms(dot_enhancement=True)
    assert (segmenter_chain(dotted).channels, CtTransforms().channels) == (2, 1)
    assert segmenter_chain(dotted).describe()["parameters"]["dot_enhancement"] is True
    symmetric = replace(options, patch_symmetries=True)
    assert segmenter_chain(symmetric) == CtTransforms(patch_symmetries=True)
    assert segmenter_chain(symmetric).describe()["parameters"]["patch_symmetries"] is True
    assert CtTransforms().patch_symmetries is False
    fading = replace(options, lesion_contrast=(0.4, 1.0))
    assert segmenter_chain(fading) == CtTransforms(lesion_contrast=(0.4, 1.0))
    with pytest.raises(ValueError, match=r"lesion_contrast \(0.4, 1.0\) differs from the given"):
        segmenter_chain(fading, TINY_CHAIN)
    mined = replace(options, hard_negatives=0.5)
    assert segmenter_chain(mined) == CtTransforms(hard_negatives=0.5)
    assert segmenter_chain(mined).describe()["parameters"]["hard_negatives"] == 0.5
    assert segmenter_chain(mined).training_mask_names(["nodule"]) == ("nodule", "hard_negative")
    assert CtTransforms().training_mask_names(["nodule"]) == ("nodule",)


@pytest.mark.parametrize("symmetries", [False, True])
def test_patch_symmetries_flip_and_turn_each_ct_patch_after_it_is_cut(symmetries: bool) -> None:
    steps = CtTransforms(patch_symmetries=symmetries).steps(
        True, ["image", "mask"], ["bilinear", "nearest"]
    )
    names = [type(step).__name__ for step in steps]
    assert names.count("RandFlipd") == (3 if symmetries else 0)
    assert names.count("RandRotate90d") == (1 if symmetries else 0)
    if symmetries:
        assert names.index("RandFlipd") > names.index("RandSpatialCropd")


def test_options_refuse_a_spacing_or_positive_fraction_outside_ct_or_range(tmp_path: Path) -> None:
    assert TrainOptions(Modality.CT, tmp_path, tmp_path, patch_symmetries=True).patch_symmetries
    assert TrainOptions(Modality.CT, tmp_path, tmp_path, dice_per_patch=True).dice_per_patch
    with pytest.raises(ValueError, match="--dice-per-patch applies to CT"):
        TrainOptions(Modality.CXR, tmp_path, tmp_path, dice_per_patch=True)
    with pytest.raises(ValueError, match="--spacing applies to CT"):
        TrainOptions(Modality.CXR, tmp_path, tmp_path, spacing_mm=(1.0, 1.0, 1.0))
    for bad in ((1.0, 1.0), (1.0, -1.0, 1.0), (1.0, float("inf"), 1.0)):
        with pytest.raises(ValueError, match="--spacing takes three positive voxel sizes"):
            TrainOptions(Modality.CT, tmp_path, tmp_path, spacing_mm=bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="--positive-fraction applies to CT; for mammography"):
        TrainOptions(Modality.MAMMO, tmp_path, tmp_path, positive_fraction=0.5)
    for share in (0.0, 1.5):
        with pytest.raises(ValueError, match=r"--positive-fraction must be in \(0, 1\]"):
            TrainOptions(Modality.CT, tmp_path, tmp_path, positive_fraction=share)
    with pytest.raises(ValueError, match="--lesion-contrast applies to CT; it fades nodules"):
        TrainOptions(Modality.MAMMO, tmp_path, tmp_path, lesion_contrast=(0.4, 1.0))
    for interval in [(0.8, 0.4), (-0.1, 1.0), (0.4, 1.5), (0.4,)]:
        with pytest.raises(ValueError, match="--lesion-contrast takes LOW HIGH with 0 <= LOW"):
            TrainOptions(Modality.CT, tmp_path, tmp_path, lesion_contrast=interval)  # type: ignore[arg-type]
    assert TrainOptions(Modality.CT, tmp_path, tmp_path, lesion_contrast=(0.5, 0.5)).lesion_contrast
    with pytest.raises(ValueError, match="--hard-negatives applies to CT; for mammography"):
        TrainOptions(Modality.CXR, tmp_path, tmp_path, hard_negatives=0.5)
    for share in (0.0, 1.5):
        with pytest.raises(ValueError, match=r"--hard-negatives must be in \(0, 1\]"):
            TrainOptions(Modality.CT, tmp_path, tmp_path, hard_negatives=share)
    with pytest.raises(ValueError, match=r"hard_negatives must be in \[0, 1\]"):
        CtTransforms(hard_negatives=2.0)


@pytest.mark.parametrize("share", [0.0, 0.5])
def test_hard_negatives_are_a_second_mask_channel_dropped_once_the_patch_is_cut(
    share: float,
) -> None:
    names = [
        type(step).__name__
        for step in CtTransforms(hard_negatives=share, patch_symmetries=True).steps(
            True, ["image", "mask"], ["bilinear", "nearest"]
        )
    ]
    if share:
        cut = names.index("RandSpatialCropd")
        assert names[cut + 1] == "FirstChannelsd"
        assert names.index("RandFlipd") > cut + 1
    else:
        assert "FirstChannelsd" not in names


def test_hard_negative_training_refuses_a_manifest_that_was_not_mined(
    manifest: Path, tmp_path: Path
) -> None:
    options = TrainOptions(
        Modality.CT, manifest, tmp_path, network=TINY_NETWORK, hard_negatives=0.5
    )
    expected = (
        r"--hard-negatives needs the mask hard_negative in every train study's masks file: "
        r"2 lack it .*scripts/mine_ct_hard_negatives\.py"
    )
    with pytest.raises(ValueError, match=expected):
        train_ct_segmenter(options, progress=False, chain=replace(TINY_CHAIN, hard_negatives=0.5))
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_mined_false_positives_become_hard_negative_patches(
    run: Run, manifest: Path, tmp_path: Path
) -> None:
    out, result = run
    mined = mine_hard_negatives(out / "ct-unet.json", manifest, tmp_path / "mined", progress=False)
    rows = read_manifest(tmp_path / "mined" / "manifest.csv")
    before = {row.study_instance_uid: row for row in read_manifest(manifest)}
    train = [row for row in rows if row.split == "train"]
    assert [study.study_instance_uid for study in mined] == [r.study_instance_uid for r in train]
    for row in rows:
        assert row.masks is not None
        old = before[row.study_instance_uid].masks
        assert old is not None
        if row.split != "train":
            assert row.masks.resolve() == (manifest.parent / old).resolve()
            continue
        assert row.masks.parent == (tmp_path / "mined" / "masks").resolve()
        with np.load(row.masks) as npz, np.load(manifest.parent / old) as source:
            assert set(npz.files) == set(source.files) | {
                name.replace("__nodule", "__hard_negative") for name in source.files
            }
            for name in source.files:
                np.testing.assert_array_equal(npz[name], source[name])
                hard = npz[name.replace("__nodule", "__hard_negative")]
                assert hard.shape == source[name].shape and hard.dtype == np.uint8
                assert not (hard.astype(bool) & source[name].astype(bool)).any()
                marked = next(s for s in mined if s.study_instance_uid == row.study_instance_uid)
                assert int(hard.sum()) == marked.marked_voxels
    # Mining the mined manifest again keeps every place marked before: mark one more
    # voxel (a corner, far from any nodule) in the first study, as an earlier round might.
    first_mined = next(row for row in rows if row.split == "train").masks
    assert first_mined is not None
    with np.load(first_mined) as npz:
        arrays = {name: npz[name] for name in npz.files}
    hard_name = next(name for name in arrays if name.endswith("__hard_negative"))
    assert arrays[hard_name][0, 0, 0] == 0
    arrays[hard_name][0, 0, 0] = 1
    np.savez_compressed(first_mined, **arrays)
    again = mine_hard_negatives(
        out / "ct-unet.json",
        tmp_path / "mined" / "manifest.csv",
        tmp_path / "again",
        progress=False,
    )
    assert [s.marked_voxels for s in again] == [
        s.marked_voxels + (index == 0) for index, s in enumerate(mined)
    ]
    for row in read_manifest(tmp_path / "again" / "manifest.csv"):
        if row.split == "train":
            assert row.masks is not None and row.masks.parent == (tmp_path / "again" / "masks")
            first = tmp_path / "mined" / "masks" / row.masks.name
            with np.load(row.masks) as npz, np.load(first) as earlier:
                for name in earlier.files:
                    np.testing.assert_array_equal(npz[name], earlier[name])
    # The mined manifest trains with hard-negative patches; the chain records the share.
    options = TrainOptions(
        Modality.CT,
        tmp_path / "mined" / "manifest.csv",
        tmp_path / "model",
        epochs=1,
        batch_size=2,
        device="cpu",
        max_studies=2,
        network=TINY_NETWORK,
        hard_negatives=0.5,
        init_from=out / "ct-unet.json",
    )
    trained = train_ct_segmenter(
        options, progress=False, chain=replace(TINY_CHAIN, hard_negatives=0.5)
    )
    assert trained.entry.transforms["parameters"]["hard_negatives"] == 0.5
    assert result.entry.transforms["parameters"]["hard_negatives"] == 0.0


def test_training_refuses_a_modality_other_than_ct(tmp_path: Path) -> None:
    options = TrainOptions(modality=Modality.CXR, manifest=tmp_path, out=tmp_path)
    with pytest.raises(ValueError, match="the CT segmenter trains on ct studies, the options name"):
        train_ct_segmenter(options, progress=False)


def test_training_refuses_train_studies_without_masks(manifest: Path, tmp_path: Path) -> None:
    rows = [replace(row, masks=None) for row in read_manifest(manifest)]
    write_manifest(rows, manifest.parent / "no-masks.csv")
    options = TrainOptions(
        modality=Modality.CT, manifest=manifest.parent / "no-masks.csv", out=tmp_path
    )
    expected = r"2 train studies have no masks file \(manifest column 'masks'; first [0-9.]+\)"
    with pytest.raises(ValueError, match=expected):
        train_ct_segmenter(options, progress=False)


def _record(epoch: int, dice: float, soft_dice: float) -> SegmenterEpochRecord:
    return SegmenterEpochRecord(
        epoch=epoch,
        train_loss=1.0,
        tune_dice=dice,
        tune_soft_dice=soft_dice,
        seconds=1.0,
        tune_seconds=0.5,
        learning_rate=1e-3,
    )


def test_the_kept_epoch_has_the_best_dice_then_the_best_soft_dice() -> None:
    records = [
        _record(1, 0.0, 0.05),
        _record(2, 0.0, 0.30),  # learning, but nothing over the cut yet
        _record(3, math.nan, math.nan),
        _record(4, 0.0, 0.20),
    ]
    assert max(records, key=selection_score).epoch == 2
    records.append(_record(5, 0.10, 0.01))  # any nodule found beats a higher soft Dice
    assert max(records, key=selection_score).epoch == 5
    assert selection_score(records[2]) == (-math.inf, -math.inf)


@pytest.mark.parametrize(
    ("kind", "voxel_term"),
    [
        (LossKind.BCE, "cross-entropy"),
        (LossKind.FOCAL, "focal"),
        (LossKind.CLASS_BALANCED_FOCAL, "focal"),
    ],
)
def test_the_segmentation_loss_is_batch_dice_plus_the_chosen_voxel_term(
    kind: LossKind, voxel_term: str
) -> None:
    logits = torch.tensor([[[[[2.0, -1.0], [0.5, -3.0]]]], [[[[-2.0, 1.0], [0.0, -0.5]]]]])
    truth = torch.tensor([[[[[1.0, 0.0], [1.0, 0.0]]]], [[[[0.0, 0.0], [0.0, 0.0]]]]])
    p = torch.sigmoid(logits)
    # Dice over the whole batch (MONAI's smoothing of 1e-5 in numerator and denominator).
    dice = 1.0 - (2.0 * (p * truth).sum() + 1e-5) / (p.sum() + truth.sum() + 1e-5)
    bce = torch.nn.functional.binary_cross_entropy_with_logits(logits, truth, reduction="none")
    if voxel_term == "cross-entropy":
        expected = dice + bce.mean()
    else:
        p_true = torch.where(truth > 0.5, p, 1.0 - p)
        expected = dice + ((1.0 - p_true) ** 2 * bce).mean()
    loss = segmentation_loss(kind)(logits, truth)
    assert float(loss) == pytest.approx(float(expected), rel=1e-5)

    # Per patch: each patch's Dice, then their mean; the nodule-free patch scores about 1.
    per_patch = [
        1.0 - (2.0 * (p[i] * truth[i]).sum() + 1e-5) / (p[i].sum() + truth[i].sum() + 1e-5)
        for i in range(2)
    ]
    assert float(per_patch[1]) == pytest.approx(1.0, abs=1e-4)
    patch_loss = segmentation_loss(kind, dice_per_patch=True)(logits, truth)
    expected_patch = expected - dice + (per_patch[0] + per_patch[1]) / 2.0
    assert float(patch_loss) == pytest.approx(float(expected_patch), rel=1e-5)
