import numpy as np
import pytest
import torch

from medvision.modality import Modality
from medvision.transforms import cxr
from medvision.transforms.chain import MapKind, to_original_grid
from medvision.transforms.loading import study_item
from tests.transforms.phantoms import (
    MakeStudy,
    device_models,
    dice,
    ground_truth_masks,
    pearson,
)


@pytest.mark.parametrize("model", device_models(Modality.CXR))
def test_chain_gives_a_256_square_unit_range_float32_image_on_every_device(
    phantom_on_device: MakeStudy, model: str
) -> None:
    manifest, row = phantom_on_device(Modality.CXR, model)
    item = cxr.build_transforms(False)(study_item(row, manifest))
    image = item["image"]
    assert tuple(image.shape) == (cxr.CHANNELS, *cxr.INPUT_SIZE) == (1, 256, 256)
    assert image.dtype == torch.float32
    assert float(image.min()) >= 0.0
    assert float(image.max()) == pytest.approx(1.0, abs=1e-3)


def test_monochrome1_and_monochrome2_acquisitions_of_one_phantom_correlate(
    phantom_on_device: MakeStudy,
) -> None:
    chain = cxr.build_transforms(False)
    images = {}
    for model in ("Cygnus CR-200", "Aquila DR-9"):
        manifest, row = phantom_on_device(Modality.CXR, model)
        image = chain(study_item(row, manifest))["image"]
        images[image.meta["photometric_interpretation"]] = image.numpy()
    assert set(images) == {"MONOCHROME1", "MONOCHROME2"}
    assert pearson(images["MONOCHROME1"], images["MONOCHROME2"]) > 0.95


def test_masks_map_back_onto_the_original_grid(phantom_on_device: MakeStudy) -> None:
    study = manifest, row = phantom_on_device(Modality.CXR, "Aquila DR-9")
    chain = cxr.build_transforms(False, mask_key="label")
    item = chain(study_item(row, manifest))
    back = to_original_grid(item["label"], item, chain, MapKind.LABEL)
    assert back.shape == (len(cxr.MASK_NAMES), 512, 512)
    uid = item["image"].meta["sop_instance_uids"][0]
    truth = ground_truth_masks(study)
    scores = [
        dice(truth[f"{uid}__{name}"] > 0, back[channel] > 0.5)
        for channel, name in enumerate(cxr.MASK_NAMES)
    ]
    assert len(scores) == 4
    assert min(scores) > 0.9


def test_a_heatmap_maps_back_smoothly_and_keeps_its_peak(phantom_on_device: MakeStudy) -> None:
    manifest, row = phantom_on_device(Modality.CXR, "Aquila DR-9")
    chain = cxr.build_transforms(False)
    item = chain(study_item(row, manifest))
    heatmap = torch.zeros(256, 256)
    heatmap[100:120, 60:80] = 1.0
    back = to_original_grid(heatmap, item, chain)
    assert back.shape == (1, 512, 512)
    peak = np.unravel_index(int(np.argmax(back[0])), back[0].shape)
    assert 200 <= peak[0] < 240 and 120 <= peak[1] < 160
    assert 0.0 < float(back[0, 199, 140]) < 1.0  # interpolated edge, not blocks
