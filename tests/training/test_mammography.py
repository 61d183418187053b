import json
import math
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from monai.transforms.traits import RandomizableTrait

from medvision.calibration.refit import SplitScores
from medvision.data.manifest import ManifestRow, read_manifest, write_manifest
from medvision.modality import FINDINGS, Modality
from medvision.models.registry import load_model, load_registry, sha256_of
from medvision.synth.generator import SynthConfig, generate
from medvision.training.classifier import LESION_MASK_KEY, LossKind, TrainOptions
from medvision.training.mammography import (
    LESION_MASK_NAMES,
    MALIGNANT_MASK,
    PatchLabeld,
    per_breast_auroc,
    split_chain,
    train_mammography,
    view_items,
)
from medvision.transforms.crop_centres import BACKGROUND_INDICES_KEY
from medvision.transforms.loading import study_item
from medvision.transforms.mammo import MammoTransforms

TINY_NETWORK = {
    "architecture": "evidence_densenet",
    "spatial_dims": 2,
    "in_channels": 1,
    "out_channels": 1,
    "init_features": 4,
    "growth_rate": 4,
    "block_config": [1, 1],
}

#: Per split, the kinds of study it gets: left-only, right-only cancer, or none.
SPLIT_PLAN = {"tune": "LRN", "calibration": "LRN", "test": "L"}


def _kind(row: ManifestRow) -> str:
    left, right = row.labels["malignancy_left"], row.labels["malignancy_right"]
    return "B" if left and right else "L" if left else "R" if right else "N"


def _assign_splits(rows: list[ManifestRow]) -> list[ManifestRow]:
    """Give tune and calibration a left, a right and a negative study; the rest trains."""
    unused = list(range(len(rows)))
    split = ["train"] * len(rows)
    for name, kinds in SPLIT_PLAN.items():
        for kind in kinds:
            index = next(i for i in unused if _kind(rows[i]) == kind)
            unused.remove(index)
            split[index] = name
    return [replace(row, split=s) for row, s in zip(rows, split, strict=True)]


def _tiny_set(tmp_path: Path) -> Path:
    """Write nine phantom studies with splits (:data:`SPLIT_PLAN`); return the manifest."""
    data = tmp_path / "data"
    config = SynthConfig((Modality.MAMMO,), 9, 5, data, prevalence={"*": 0.5}, workers=1)
    rows = _assign_splits(generate(config, progress=False))
    write_manifest(rows, data / "manifest.csv")
    return data / "manifest.csv"


def _tiny_run(tmp_path: Path, **changes: Any) -> TrainOptions:
    """Options of a one-epoch run of the tiny network on :func:`_tiny_set`, with ``changes``."""
    options = TrainOptions(
        modality=Modality.MAMMO,
        manifest=_tiny_set(tmp_path),
        out=tmp_path / "model",
        epochs=1,
        batch_size=8,
        loss=LossKind.CLASS_BALANCED_FOCAL,
        device="cpu",
        max_studies=3,
        network=TINY_NETWORK,
        lesion_masks=True,
        input_size=(128, 96),
        workers=1,
    )
    return replace(options, **changes)


@pytest.mark.slow
def test_training_writes_a_verified_model_calibrated_for_every_finding(tmp_path: Path) -> None:
    options = _tiny_run(tmp_path)
    result = train_mammography(options, progress=False)
    entry = result.entry
    out = tmp_path / "model"
    assert entry.name == "mammo-densenet"
    assert entry.findings == ("malignancy", "malignancy_left", "malignancy_right")
    assert entry.transforms["name"] == "mammo"
    # The asked-for input size is what the entry records and serving rebuilds.
    assert entry.input_size == (128, 96)
    assert entry.transforms["parameters"]["input_size"] == [128, 96]
    assert entry.model_card == "model_cards/mammo-densenet.md"
    assert load_registry(out) == {entry.name: entry}
    assert entry.weights_sha256 == sha256_of(out / entry.weights_file)
    assert set(entry.calibration) == set(entry.thresholds) == set(entry.findings)
    assert set(result.calibration) == set(entry.findings)
    assert all(0.0 <= t <= 1.0 for t in entry.thresholds.values())
    assert len(result.epochs) == 1
    assert set(result.epochs[0].tune_auroc) == {"malignancy_of_view_breast"}
    lines = (out / "mammo-densenet.metrics.jsonl").read_text().splitlines()
    assert json.loads(lines[-1])["kept_epoch"] == 1
    # Test split: one study, cancer in the left breast only.
    assert set(result.test_auroc) == set(entry.findings)
    assert all(math.isnan(value) for value in result.test_auroc.values())
    assert 0.0 <= result.per_breast_test_auroc <= 1.0
    network = load_model(entry, out)
    with torch.no_grad():
        assert tuple(network(torch.zeros(2, 1, 128, 96)).shape) == (2, 1)


@pytest.mark.slow
def test_patch_training_records_its_patches_and_serves_whole_views(tmp_path: Path) -> None:
    options = _tiny_run(
        tmp_path,
        epochs=2,
        batch_size=4,
        loss=LossKind.BCE,
        balanced_sampler=True,
        workers=0,
        patch_size=(64, 48),
        patches_per_view=3,
        patch_symmetries=True,
        hard_negatives=0.5,
    )
    result = train_mammography(options, progress=False)
    parameters = result.entry.transforms["parameters"]
    assert parameters["patch_size"] == [64, 48] and parameters["patches_per_view"] == 3
    assert parameters["patch_symmetries"] is True and parameters["hard_negatives"] == 0.5
    assert result.entry.input_size == (128, 96)
    assert [record.epoch for record in result.epochs] == [1, 2]
    # Tuning scored whole views: two classes of breasts among the tune views.
    assert all(0.0 <= r.tune_auroc["malignancy_of_view_breast"] <= 1.0 for r in result.epochs)
    # Serving rebuilds the chain without patches: a whole view in, one logit out.
    served = MammoTransforms.from_parameters(parameters).build(training=False)
    row = next(r for r in read_manifest(options.manifest) if r.split == "test")
    views = served(study_item(row, options.manifest))
    assert [tuple(v["image"].shape) for v in views] == [(1, 128, 96)] * 4
    network = load_model(result.entry, options.out)
    with torch.no_grad():
        logits = network(torch.stack([v["image"] for v in views]))
    assert tuple(logits.shape) == (4, 1)


def _scores(logits: list[list[float]], labels: list[list[int]]) -> SplitScores:
    return SplitScores(
        rows=[], logits=np.array(logits, dtype=np.float64), labels=np.array(labels, dtype=float)
    )


def test_per_breast_auroc_pools_left_and_right_breasts_as_cases() -> None:
    findings = FINDINGS[Modality.MAMMO]
    # Columns: malignancy, left, right. Breasts: (0.9, 1) (0.1, 0) (0.2, 0) (0.8, 1) — perfect;
    # the study column (ranked wrongly on purpose) must not count.
    scores = _scores([[-5.0, 0.9, 0.1], [5.0, 0.2, 0.8]], [[1, 1, 0], [1, 0, 1]])
    assert per_breast_auroc(scores, findings) == 1.0
    mixed = _scores([[0.0, 0.9, 0.1], [0.0, 0.85, 0.8]], [[1, 1, 0], [1, 0, 1]])
    assert per_breast_auroc(mixed, findings) == 0.75
    assert math.isnan(per_breast_auroc(_scores([[0.0, 1.0, 2.0]], [[0, 0, 0]]), findings))


def test_the_training_chain_splits_before_its_first_random_step() -> None:
    deterministic, random = split_chain(MammoTransforms().build(training=True))
    assert not any(isinstance(step, RandomizableTrait) for step in deterministic.transforms)
    assert isinstance(random.transforms[0], RandomizableTrait)
    assert type(deterministic.transforms[0]).__name__ == "LoadStudyd"


def test_options_of_another_modality_are_refused(tmp_path: Path) -> None:
    options = TrainOptions(modality=Modality.CXR, manifest=tmp_path, out=tmp_path)
    with pytest.raises(ValueError, match="trains mammography models, got modality cxr"):
        train_mammography(options, progress=False)


def test_a_network_with_more_than_one_output_is_refused(tmp_path: Path) -> None:
    with pytest.raises(
        ValueError, match="mammo needs in_channels 1 and out_channels 1, got 1 and 3"
    ):
        TrainOptions(
            modality=Modality.MAMMO,
            manifest=tmp_path,
            out=tmp_path,
            network={**TINY_NETWORK, "out_channels": 3},
        )


def test_views_carry_their_own_malignancy_mask_when_lesion_masks_are_asked(
    tmp_path: Path,
) -> None:
    data = tmp_path / "data"
    config = SynthConfig((Modality.MAMMO,), 6, 5, data, prevalence={"*": 0.5}, workers=1)
    rows = generate(config, progress=False)
    row = next(r for r in rows if _kind(r) in ("L", "R"))
    chain = MammoTransforms().build(
        training=False, mask_key=LESION_MASK_KEY, mask_names=LESION_MASK_NAMES
    )
    views = view_items([row], data / "manifest.csv", chain, progress=False)
    assert len(views) == 4
    for view in views:
        mask = view[LESION_MASK_KEY]
        assert tuple(mask.shape) == (1, 256, 192)
        assert set(torch.unique(mask).tolist()) <= {0.0, 1.0}
        # A view of the malignant breast shows its lesion; the other breast's views do not.
        assert bool(mask.sum() > 0) == bool(view["label"][0] == 1)


def test_views_loaded_by_threads_equal_those_loaded_in_order(tmp_path: Path) -> None:
    data = tmp_path / "data"
    rows = generate(SynthConfig((Modality.MAMMO,), 3, 5, data, workers=1), progress=False)
    chain = MammoTransforms(input_size=(64, 48)).build(training=False)
    in_order = view_items(rows, data / "manifest.csv", chain, progress=False)
    threaded = view_items(rows, data / "manifest.csv", chain, progress=False, workers=3)
    assert len(in_order) == len(threaded) == 12
    for one, other in zip(in_order, threaded, strict=True):
        assert torch.equal(one["image"], other["image"])
        assert np.array_equal(one["label"], other["label"])


def test_a_patch_s_target_is_whether_it_holds_lesion_pixels() -> None:
    label = PatchLabeld()
    lesion = torch.zeros(1, 8, 8)
    lesion[0, 3, 4] = 1.0
    # A patch of a malignant breast away from its lesion is a negative patch.
    away = label({LESION_MASK_KEY: torch.zeros(1, 8, 8), "label": np.array([1.0])})
    on = label({LESION_MASK_KEY: lesion, "label": np.array([0.0])})
    assert away["label"].tolist() == [0.0] and away["label"].dtype == np.float32
    assert on["label"].tolist() == [1.0]


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"lesion_masks": False}, "--patch-size needs --lesion-masks"),
        ({"loss": LossKind.CLASS_BALANCED_FOCAL}, "class-balanced weights come from the views'"),
        ({"modality": Modality.CXR}, "--patch-size applies to mammography"),
        ({"patch_size": None, "patch_symmetries": True}, "--patch-symmetries applies to patches"),
        ({}, None),
        ({"patch_symmetries": True}, None),
        ({"patch_size": None, "hard_negatives": 0.5}, "give --patch-size"),
        ({"hard_negatives": 1.5}, r"--hard-negatives must be in \(0, 1\]"),
        ({"hard_negatives": 0.5}, None),
    ],
)
def test_patch_training_refuses_bad_combinations(
    tmp_path: Path, changes: dict[str, Any], message: str | None
) -> None:
    options: dict[str, Any] = {
        "modality": Modality.MAMMO,
        "manifest": tmp_path,
        "out": tmp_path,
        "patch_size": (64, 64),
        "lesion_masks": True,
        "loss": LossKind.FOCAL,
        **changes,
    }
    if message is None:
        TrainOptions(**options)
    else:
        with pytest.raises(ValueError, match=message):
            TrainOptions(**options)


def test_hard_negative_patches_are_centred_on_benign_lesions_only(tmp_path: Path) -> None:
    data = tmp_path / "data"
    config = SynthConfig((Modality.MAMMO,), 12, 5, data, prevalence={"*": 0.5}, workers=1)
    rows = generate(config, progress=False)
    chain = MammoTransforms(input_size=(128, 96), patch_size=(32, 32), hard_negatives=1.0)
    names = chain.training_mask_names(MALIGNANT_MASK)
    assert names == ("malignancy", "benign")
    assert MammoTransforms().training_mask_names(MALIGNANT_MASK) == ("malignancy",)
    loading, augmentation = split_chain(
        chain.build(training=True, mask_key=LESION_MASK_KEY, mask_names=names)
    )
    benign_views = 0
    for row in rows:
        for view in loading(study_item(row, data / "manifest.csv")):
            mask = np.asarray(view[LESION_MASK_KEY])
            assert mask.shape[0] == 2  # malignant, then benign
            benign = np.flatnonzero(((mask[1] > 0) & (mask[0] == 0)).ravel())
            background = np.asarray(view[BACKGROUND_INDICES_KEY])
            if len(benign):
                # A share of 1: every patch without a malignant lesion around a benign one.
                benign_views += 1
                assert sorted(set(background.tolist())) == benign.tolist()
                patches = augmentation(view)
                assert all(tuple(p[LESION_MASK_KEY].shape) == (1, 32, 32) for p in patches)
            else:  # no benign lesion: the plain patches, anywhere in the breast
                assert len(background) > 32 * 32
    assert benign_views > 0


def test_hard_negative_training_refuses_views_without_a_benign_mask(tmp_path: Path) -> None:
    options = _tiny_run(tmp_path, loss=LossKind.BCE, patch_size=(64, 48), hard_negatives=0.5)
    for row in read_manifest(options.manifest):
        assert row.masks is not None
        path = options.manifest.parent / row.masks
        with np.load(path) as npz:
            kept = {k: npz[k] for k in npz.files if not k.endswith("__benign")}
        np.savez_compressed(path, **kept)
    with pytest.raises(ValueError, match="--hard-negatives needs the mask benign in every train"):
        train_mammography(options, progress=False)
