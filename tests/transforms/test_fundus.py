import numpy as np
import pytest
import torch

from medvision.modality import Modality
from medvision.transforms import fundus
from medvision.transforms.chain import MapKind, to_original_grid
from medvision.transforms.loading import study_item
from medvision.transforms.spatial import ForegroundSelector
from tests.transforms.phantoms import MakeStudy, device_models, pearson


@pytest.mark.parametrize("model", device_models(Modality.FUNDUS))
def test_chain_normalises_each_channel_inside_the_field_of_view_on_every_device(
    phantom_on_device: MakeStudy, model: str
) -> None:
    manifest, row = phantom_on_device(Modality.FUNDUS, model)
    image = fundus.build_transforms(False)(study_item(row, manifest))["image"]
    assert tuple(image.shape) == (fundus.CHANNELS, *fundus.INPUT_SIZE) == (3, 256, 256)
    assert image.dtype == torch.float32
    values = image.numpy()
    inside = values.any(axis=0)
    assert 0.6 < inside.mean() < 0.85  # a disc filling the square: pi / 4 of it
    for channel in values:
        assert float(channel[inside].mean()) == pytest.approx(0.0, abs=1e-4)
        assert float(channel[inside].std()) == pytest.approx(1.0, abs=1e-3)
    assert values[:, 0, 0].tolist() == [0.0, 0.0, 0.0]


def test_crop_to_the_field_of_view_removes_the_black_surround(
    phantom_on_device: MakeStudy,
) -> None:
    manifest, row = phantom_on_device(Modality.FUNDUS, "Delphin FC-50")
    chain = fundus.build_transforms(False)
    item = chain(study_item(row, manifest))
    start, end = item["foreground_start_coord"], item["foreground_end_coord"]
    # The phantom's field of view spans pixels 12 to 499 with a soft edge.
    assert all(12 <= s <= 20 for s in start) and all(492 <= e <= 500 for e in end)
    back = to_original_grid(torch.ones(256, 256), item, chain, MapKind.LABEL)[0]
    rows, columns = np.nonzero(back)
    assert [rows.min(), columns.min()] == list(start)
    assert [rows.max() + 1, columns.max() + 1] == list(end)


def test_two_cameras_give_correlated_images_of_one_eye(phantom_on_device: MakeStudy) -> None:
    chain = fundus.build_transforms(False)
    images = []
    for model in ("Aquila Retina 3", "Delphin FC-50"):  # JPEG 2000 (YBR_RCT) and uncompressed
        manifest, row = phantom_on_device(Modality.FUNDUS, model)
        images.append(chain(study_item(row, manifest))["image"].numpy())
    assert pearson(images[0], images[1]) > 0.9


def test_field_of_view_selector_keeps_the_largest_region_only() -> None:
    image = np.zeros((1, 40, 40), dtype=np.float32)
    image[0, 5:30, 5:30] = 100.0
    image[0, 36:38, 36:38] = 100.0  # a burnt-in marker
    selected = ForegroundSelector(0.1)(image)[0].numpy()
    assert selected.sum() == 25 * 25
    assert not selected[36:38, 36:38].any()
