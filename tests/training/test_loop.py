import json
import math
import time
from pathlib import Path

import pytest
import torch

from medvision.models.networks import EvidenceMapDenseNet, build_network
from medvision.training.loop import (
    EpochPlan,
    EpochRecord,
    gate_masks,
    lesion_map_loss,
    network_memory_format,
    place_network,
    predict_logits,
    seed_everything,
    select_device,
    train_classifier,
)
from tests.conftest import tiny_unet

NETWORK = {
    "architecture": "densenet",
    "spatial_dims": 2,
    "in_channels": 1,
    "out_channels": 1,
    "init_features": 4,
    "growth_rate": 4,
    "block_config": [1, 1],
}


def _batches(seed: int, count: int = 4, size: int = 8) -> list[dict[str, torch.Tensor]]:
    """Images with a bright square (label 1) or without (label 0)."""
    generator = torch.Generator().manual_seed(seed)
    batches = []
    for _ in range(count):
        image = torch.rand(size, 1, 16, 16, generator=generator) * 0.2
        label = (torch.arange(size) % 2).float()[:, None]
        image[label[:, 0] == 1, :, 4:10, 4:10] += 1.0
        batches.append({"image": image, "label": label})
    return batches


def _run(tmp_path: Path, name: str, time_limit_seconds: float | None = None) -> list[EpochRecord]:
    seed_everything(3)
    network = build_network(NETWORK)
    return train_classifier(
        network,
        _batches(1),
        _batches(2),
        torch.nn.BCEWithLogitsLoss(),
        ["square"],
        epochs=3,
        learning_rate=0.01,
        device=torch.device("cpu"),
        metrics_log=tmp_path / name / "metrics.jsonl",
        progress=False,
        time_limit_seconds=time_limit_seconds,
    )


def test_training_learns_an_easy_task_and_logs_every_epoch(tmp_path: Path) -> None:
    records = _run(tmp_path, "a")
    assert [r.epoch for r in records] == [1, 2, 3]
    assert records[-1].tune_auroc == {"square": 1.0}
    lines = (tmp_path / "a" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines[:3]] == [1, 2, 3]
    kept = json.loads(lines[3])
    best = max(records, key=lambda r: r.tune_auroc["square"])
    assert kept == {"kept_epoch": best.epoch, "mean_tune_auroc": best.tune_auroc["square"]}


def test_same_seed_gives_the_same_run_on_cpu(tmp_path: Path) -> None:
    first = [(r.train_loss, r.tune_auroc) for r in _run(tmp_path, "a")]
    second = [(r.train_loss, r.tune_auroc) for r in _run(tmp_path, "b")]
    assert first == second


def test_predict_logits_stacks_batches_in_order() -> None:
    network = build_network(NETWORK)
    logits, labels = predict_logits(network, _batches(5, count=3), torch.device("cpu"))
    assert logits.shape == (24, 1)
    assert labels[:, 0].tolist() == [0.0, 1.0] * 12


def test_cuda_on_a_machine_without_gpu_is_a_clear_error() -> None:
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    with pytest.raises(ValueError, match="has no CUDA GPU"):
        select_device("cuda")
    assert select_device("auto") == torch.device("cpu")


def test_gated_mask_channels_count_only_in_images_labelled_positive() -> None:
    masks = torch.ones(2, 3, 2, 2)
    labels = torch.tensor([[0.0, 0.0, 1.0], [1.0, 1.0, 0.0]])
    gated = gate_masks(masks, labels, (1, 2))
    # channel 0 is not gated; channels 1 and 2 follow each image's label
    assert gated[:, :, 0, 0].tolist() == [[1.0, 0.0, 1.0], [1.0, 1.0, 0.0]]
    assert torch.equal(gated[..., 0, 0, None, None].expand(2, 3, 2, 2), gated)
    assert gate_masks(masks, labels, ()) is masks


def test_lesion_map_loss_targets_every_map_cell_a_lesion_touches() -> None:
    maps = torch.zeros(1, 1, 2, 2)
    masks = torch.zeros(1, 1, 8, 8)
    masks[0, 0, 0, 3] = 1.0  # one pixel in the top-left cell
    loss = lesion_map_loss(maps, masks)
    # Logit 0 everywhere: BCE is log 2 per cell whatever the target.
    assert float(loss) == pytest.approx(math.log(2.0))
    maps[0, 0, 0, 0] = 20.0  # confident on the lesion cell
    maps[0, 0, 1, :] = -20.0
    maps[0, 0, 0, 1] = -20.0  # and confident elsewhere
    assert float(lesion_map_loss(maps, masks)) == pytest.approx(0.0, abs=1e-6)


def test_lesion_map_loss_weighs_lesion_cells_as_much_as_the_rest() -> None:
    masks = torch.zeros(1, 2, 16, 16)
    masks[0, 0, 0, 0] = 1.0  # finding 0: one lesion cell of 16; finding 1: none
    maps = torch.full((1, 2, 4, 4), -20.0)  # marks nothing
    # Finding 0: BCE 20 on its lesion cell, ~0 elsewhere -> (20 + 0) / 2 = 10;
    # finding 1: ~0. Plain BCE would give 20 / 16 / 2 = 0.625.
    assert float(lesion_map_loss(maps, masks)) == pytest.approx(10.0 / 2, abs=1e-6)


def _square_batches(seed: int, count: int) -> list[dict[str, torch.Tensor]]:
    """32x32 images, half with an 8x8 square at a random place, and its mask."""
    generator = torch.Generator().manual_seed(seed)
    batches = []
    for _ in range(count):
        image = torch.rand(8, 1, 32, 32, generator=generator) * 0.2
        mask = torch.zeros_like(image)
        label = (torch.arange(8) % 2).float()[:, None]
        for index in range(1, 8, 2):
            row, column = torch.randint(0, 24, (2,), generator=generator).tolist()
            image[index, :, row : row + 8, column : column + 8] += 1.0
            mask[index, :, row : row + 8, column : column + 8] = 1.0
        batches.append({"image": image, "label": label, "lesion_mask": mask})
    return batches


def _train_with_lesion_masks(
    network: torch.nn.Module,
    train: list[dict[str, torch.Tensor]],
    tune: list[dict[str, torch.Tensor]],
    epochs: int,
    folder: Path,
) -> None:
    """Train one ``square`` finding with BCE, the batches' ``lesion_mask`` supervising."""
    train_classifier(
        network,
        train,
        tune,
        torch.nn.BCEWithLogitsLoss(),
        ["square"],
        epochs=epochs,
        learning_rate=0.01,
        device=torch.device("cpu"),
        metrics_log=folder / "metrics.jsonl",
        progress=False,
        lesion_mask_key="lesion_mask",
    )


def test_lesion_supervision_trains_the_evidence_maps_where_the_lesion_is(
    tmp_path: Path,
) -> None:
    seed_everything(3)
    network = build_network({**NETWORK, "architecture": "evidence_densenet"})
    _train_with_lesion_masks(
        network, _square_batches(1, count=8), _square_batches(2, count=1), 6, tmp_path
    )
    assert isinstance(network, EvidenceMapDenseNet)
    network.eval()
    image = torch.rand(1, 1, 32, 32) * 0.2
    image[:, :, 20:28, 2:10] += 1.0  # bottom-left
    with torch.no_grad():
        maps = network.evidence_maps(image)[0, 0]
    assert maps.shape == (4, 4)  # cells of 8x8 pixels
    row, column = divmod(int(torch.argmax(maps)), 4)
    assert row in (2, 3) and column in (0, 1)


def test_lesion_supervision_needs_an_evidence_map_network(tmp_path: Path) -> None:
    batches = _batches(1, count=1)
    batches[0]["lesion_mask"] = torch.zeros_like(batches[0]["image"])
    with pytest.raises(ValueError, match="needs an evidence-map network"):
        _train_with_lesion_masks(build_network(NETWORK), batches, _batches(2, count=1), 1, tmp_path)


class _Clock:
    """A fake monotonic clock: each call returns the next of the given readings."""

    def __init__(self, *readings: float) -> None:
        self.readings = list(readings)

    def __call__(self) -> float:
        return self.readings.pop(0)


def _optimiser(rate: float = 0.01) -> torch.optim.Optimizer:
    return torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=rate)


def _rates(plan: EpochPlan, optimiser: torch.optim.Optimizer) -> list[float]:
    rates = []
    for _ in plan:
        rates.append(plan.learning_rate)
        optimiser.step()
        plan.end_epoch()
    return rates


def _run_plan(
    epochs: int, limit: float | None = None, *readings: float, rate: float = 0.01
) -> tuple[EpochPlan, list[float]]:
    """Run a plan over an optimiser of ``rate``; the clock gives ``readings`` when given."""
    optimiser = _optimiser(rate)
    clock = _Clock(*readings) if readings else time.perf_counter
    plan = EpochPlan(optimiser, epochs, time_limit_seconds=limit, clock=clock)
    return plan, _rates(plan, optimiser)


def test_without_a_limit_the_plan_is_torchs_cosine_schedule_exactly() -> None:
    reference = _optimiser()
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(reference, T_max=7)
    expected = []
    for _ in range(7):
        expected.append(schedule.get_last_lr()[0])
        reference.step()
        schedule.step()
    plan, rates = _run_plan(7)
    assert rates == expected
    assert plan.completed == 7 and not plan.stopped_early and plan.summary() == {}


def test_a_limit_that_fits_changes_nothing() -> None:
    plan, rates = _run_plan(3, 100.0, 0.0, 10.0, 20.0, 30.0)
    assert rates == _run_plan(3)[1]
    assert plan.summary() == {"time_limit_seconds": 100.0, "epochs_requested": 3, "epochs_run": 3}


def test_after_the_first_epoch_the_plan_shrinks_to_what_fits_with_a_shorter_cosine() -> None:
    # 30 s for the first epoch, 100 s in all: 1 + floor(70 / 30) = 3 epochs of 10.
    plan, rates = _run_plan(10, 100.0, 0.0, 30.0, 55.0, 80.0)
    assert plan.epochs == plan.completed == 3 and plan.stopped_early
    assert rates[0] == 0.01
    assert rates[1:] == pytest.approx([0.0075, 0.0025], rel=1e-12)
    assert plan.summary() == {"time_limit_seconds": 100.0, "epochs_requested": 10, "epochs_run": 3}


def test_a_run_stops_when_another_epoch_as_long_as_the_longest_would_end_past_the_limit() -> None:
    # Epoch 1 takes 10 s (plan stays 5); epoch 2 takes 40 s: at 50 s, 50 + 40 > 80.
    plan, _ = _run_plan(5, 80.0, 0.0, 10.0, 50.0)
    assert plan.completed == 2 and plan.epochs == 2 and plan.stopped_early


def test_a_first_epoch_past_the_limit_still_ends_with_one_epoch() -> None:
    plan, _ = _run_plan(4, 5.0, 0.0, 9.0)
    assert plan.completed == 1 and plan.stopped_early


@pytest.mark.parametrize(("epochs", "limit"), [(0, None), (3, 0.0), (3, -1.0), (3, math.inf)])
def test_a_plan_refuses_no_epochs_or_a_limit_that_is_not_positive(
    epochs: int, limit: float | None
) -> None:
    with pytest.raises(ValueError, match=r"at least one epoch|positive, finite number"):
        EpochPlan(_optimiser(), epochs, time_limit_seconds=limit)


def test_a_time_limited_run_keeps_its_best_epoch_and_logs_what_ran(tmp_path: Path) -> None:
    records = _run(tmp_path, "limited", time_limit_seconds=1e-9)  # over after epoch 1
    assert [r.epoch for r in records] == [1]
    kept = json.loads((tmp_path / "limited" / "metrics.jsonl").read_text().splitlines()[-1])
    assert kept["kept_epoch"] == 1
    assert (kept["epochs_requested"], kept["epochs_run"], kept["time_limit_seconds"]) == (
        3,
        1,
        1e-9,
    )


UNET_3D = tiny_unet(residual_units=1)


def test_a_3d_network_on_the_cpu_is_placed_channels_last_and_computes_the_same() -> None:
    torch.manual_seed(0)
    network = build_network(UNET_3D).eval()
    volume = torch.rand(2, 1, 16, 16, 16)
    with torch.no_grad():
        contiguous = network(volume)
    assert place_network(network, torch.device("cpu")) is network
    weights = [p for p in network.parameters() if p.ndim == 5]
    assert weights
    assert all(p.is_contiguous(memory_format=torch.channels_last_3d) for p in weights)
    assert not all(p.is_contiguous() for p in weights)
    with torch.no_grad():
        channels_last = network(volume)
    torch.testing.assert_close(channels_last, contiguous, rtol=1e-5, atol=1e-5)


def test_a_2d_network_on_the_cpu_keeps_the_contiguous_layout() -> None:
    network = build_network(NETWORK)
    assert network_memory_format(network, torch.device("cpu")) == torch.contiguous_format
    place_network(network, torch.device("cpu"))
    assert all(p.is_contiguous() for p in network.parameters())


def test_on_cuda_2d_networks_go_channels_last_and_3d_ones_stay_contiguous() -> None:
    cuda = torch.device("cuda")
    assert network_memory_format(build_network(NETWORK), cuda) == torch.channels_last
    assert network_memory_format(build_network(UNET_3D), cuda) == torch.contiguous_format
