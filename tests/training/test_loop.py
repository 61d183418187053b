import json
from pathlib import Path

import pytest
import torch

from medvision.models.networks import build_network
from medvision.training.loop import (
    EpochRecord,
    predict_logits,
    seed_everything,
    select_device,
    train_classifier,
)

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


def _run(tmp_path: Path, name: str) -> list[EpochRecord]:
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
