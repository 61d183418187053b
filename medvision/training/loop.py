"""The training loop shared by every classifier: seeds, device, AMP, epochs, metrics log.

GPU when present, CPU always (design decision 7): on CUDA the loop uses bf16
autocast and channels-last memory; on CPU it runs in float32. Each epoch appends
one JSON line (loss, per-finding AUROC on the tuning data, seconds) to the
metrics log, so a run can be followed and audited.
"""

from __future__ import annotations

import json
import math
import random
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.data.meta_tensor import MetaTensor
from monai.utils.misc import set_determinism
from numpy.typing import NDArray
from sklearn.metrics import roc_auc_score
from torch import nn
from tqdm import tqdm

from medvision.models.networks import EvidenceMapDenseNet

Batch = Mapping[str, Any]
LossFunction = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def select_device(preference: str = "auto") -> torch.device:
    """Return the device to train or infer on: ``auto`` picks CUDA when present.

    Raises
    ------
    ValueError
        If ``cuda`` is asked for on a machine without a GPU, or the name is unknown.
    """
    if preference == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if preference == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda was asked for, but this machine has no CUDA GPU")
    if preference not in {"cpu", "cuda"}:
        raise ValueError(f"unknown device '{preference}': expected auto, cpu or cuda")
    return torch.device(preference)


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy, PyTorch and MONAI so that a run repeats exactly on CPU."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    set_determinism(seed=seed)


@dataclass(frozen=True)
class EpochRecord:
    """What one epoch did (one line of the metrics log)."""

    epoch: int
    train_loss: float
    tune_auroc: dict[str, float]
    seconds: float
    learning_rate: float


def autocast(device: torch.device) -> torch.autocast:
    """Return the autocast context of ``device``: bf16 on CUDA, disabled (float32) on CPU."""
    return torch.autocast(
        device_type=device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"
    )


def plain_tensor(value: Any) -> torch.Tensor:
    """Return ``value`` as a plain tensor (networks and stacking need no MONAI metadata)."""
    tensor = torch.as_tensor(value)
    return tensor.as_tensor() if isinstance(tensor, MetaTensor) else tensor


def network_memory_format(network: nn.Module, device: torch.device) -> torch.memory_format:
    """Return the memory format ``network``'s weights should take on ``device``.

    Channels-last for 2-D networks on CUDA (cuDNN's tensor-core layout) and for 3-D
    networks on the CPU, where oneDNN's 3-D convolutions run in it about 1.6 times
    faster (the CT U-Net's training step, 82 against 132 patches a second on the
    2-core development machine: ``benchmarks/ct_patch_supply.py``);
    3-D networks on CUDA and 2-D networks on the CPU keep the contiguous layout,
    which is what their recorded timings used. A convolution takes the layout of
    its weights when the input's differs, so inputs need no change.
    """
    modules = list(network.modules())
    if device.type == "cpu" and any(isinstance(m, nn.Conv3d) for m in modules):
        return torch.channels_last_3d
    if device.type == "cuda" and any(isinstance(m, nn.Conv2d) for m in modules):
        return torch.channels_last
    return torch.contiguous_format


def place_network(network: nn.Module, device: torch.device) -> nn.Module:
    """Move ``network`` to ``device`` in its memory format there (in place); return it.

    See :func:`network_memory_format`. The layout changes the order of floating-point
    sums only: outputs agree with the contiguous network's to about 1e-6.
    """
    network.to(device)
    network.to(memory_format=network_memory_format(network, device))  # type: ignore[call-overload]
    return network


def to_device(image: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Move an image batch to ``device`` as a plain tensor (channels-last for 2-D on CUDA)."""
    image = plain_tensor(image).to(device, non_blocking=True)
    if device.type == "cuda" and image.ndim == 4:
        image = image.contiguous(memory_format=torch.channels_last)
    return image


def predict_logits(
    network: nn.Module, batches: Iterable[Batch], device: torch.device
) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
    """Return ``(logits, labels)`` stacked over ``batches`` (network in eval mode).

    Batches are mappings with ``image`` and ``label`` tensors.
    """
    logits, labels = [], []
    for batch in batches:
        logits.append(forward_logits(network, batch["image"], device))
        labels.append(plain_tensor(batch["label"]).float().cpu().numpy())
    return np.concatenate(logits).astype(np.float32), np.concatenate(labels).astype(np.float32)


def forward_logits(network: nn.Module, images: Any, device: torch.device) -> NDArray[np.float32]:
    """Return the network's output for a batch of images as float32 (eval mode, no gradients).

    The one inference forward pass of every scorer: bf16 autocast and channels-last
    on CUDA, plain float32 on CPU.
    """
    network.eval()
    with torch.no_grad(), autocast(device):
        output = network(to_device(images, device))
    return output.float().cpu().numpy().astype(np.float32)


def auroc_per_finding(
    logits: NDArray[np.float32], labels: NDArray[np.float32], findings: Sequence[str]
) -> dict[str, float]:
    """Return AUROC per finding (NaN where the labels hold one class only)."""
    scores = {}
    for index, name in enumerate(findings):
        column = labels[:, index]
        scores[name] = (
            float(roc_auc_score(column, logits[:, index]))
            if len(set(column)) == 2
            else float("nan")
        )
    return scores


def _evidence(network: nn.Module) -> EvidenceMapDenseNet:
    """Return ``network`` as an evidence-map network, or explain why it cannot be one."""
    if not isinstance(network, EvidenceMapDenseNet):
        raise ValueError(
            "lesion-mask supervision needs an evidence-map network (evidence_densenet), "
            f"got {type(network).__name__}"
        )
    return network


def gate_masks(masks: torch.Tensor, labels: torch.Tensor, channels: Sequence[int]) -> torch.Tensor:
    """Return ``masks`` with each of ``channels`` zeroed in the images whose label is 0.

    ``masks`` is ``(batch, outputs, *spatial)``, ``labels`` ``(batch, outputs)``.
    """
    if not channels:
        return masks
    gate = torch.ones(masks.shape[:2], dtype=masks.dtype, device=masks.device)
    index = list(channels)
    gate[:, index] = (labels[:, index] > 0).to(masks.dtype)
    return masks * gate.reshape(*gate.shape, *([1] * (masks.ndim - 2)))


def lesion_map_loss(maps: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """Return the class-balanced BCE between evidence maps and lesion masks.

    Targets are the masks max-pooled to the maps' grid (a cell is a target when
    any lesion pixel falls in it). A small lesion covers one cell in hundreds, so
    plain BCE would be won by marking nothing: per finding, the mean BCE over
    target cells and the mean over the other cells are averaged with equal weight
    (the target term only where the batch has target cells).
    """
    spatial = tuple(maps.shape[2:])
    if len(spatial) == 2:
        targets = nn.functional.adaptive_max_pool2d(masks, spatial)
    else:
        targets = nn.functional.adaptive_max_pool3d(masks, spatial)
    losses = nn.functional.binary_cross_entropy_with_logits(maps, targets, reduction="none")
    per_finding_losses = losses.transpose(0, 1).flatten(1)
    per_finding_targets = targets.transpose(0, 1).flatten(1) > 0.5
    terms = []
    for values, positive in zip(per_finding_losses, per_finding_targets, strict=True):
        negative = values[~positive].mean() if (~positive).any() else values.new_zeros(())
        if positive.any():
            terms.append(0.5 * (values[positive].mean() + negative))
        else:
            terms.append(negative)
    return torch.stack(terms).mean()


class EpochPlan:
    """The epochs of a run and their cosine learning-rate schedule, under an optional time limit.

    Without a limit the run trains ``epochs`` epochs with
    ``torch.optim.lr_scheduler.CosineAnnealingLR`` (the rate falls from the
    optimiser's to 0 over the run). With ``time_limit_seconds`` the run must end
    that many seconds after the plan was made (the start of the first epoch):

    - after the first epoch, the plan shrinks to the epochs that fit in the time
      left at the first epoch's pace (at least one), and the rate then follows the
      cosine over the shorter run, ``rate * (1 + cos(pi * e / E)) / 2`` before epoch
      ``e + 1`` of ``E``, so it still ends near 0;
    - after each later epoch, the run stops when another epoch as long as the
      longest so far would end past the limit.

    The first epoch is usually the slowest (warm-up), so the plan errs on the short
    side. Iterate over the plan for the epoch numbers and call :meth:`end_epoch`
    after each.

    Parameters
    ----------
    optimiser
        The run's optimiser; its learning rates are the schedule's peaks.
    epochs
        Epochs asked for.
    time_limit_seconds
        Seconds the epochs may take in all, or ``None``.
    clock
        Seconds from a monotonic clock (tests pass a fake one).

    Raises
    ------
    ValueError
        If ``epochs`` is below 1 or the limit is not a positive, finite number.
    """

    def __init__(
        self,
        optimiser: torch.optim.Optimizer,
        epochs: int,
        time_limit_seconds: float | None = None,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        if epochs < 1:
            raise ValueError(f"a run needs at least one epoch, got {epochs}")
        if time_limit_seconds is not None and not 0 < time_limit_seconds < math.inf:
            raise ValueError(
                f"the time limit must be a positive, finite number of seconds, "
                f"got {time_limit_seconds}"
            )
        self.requested = epochs
        self.epochs = epochs
        self.time_limit_seconds = time_limit_seconds
        self.completed = 0
        self._optimiser = optimiser
        self._peaks = [float(group["lr"]) for group in optimiser.param_groups]
        self._schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, T_max=epochs)
        self._shortened = False
        self._clock = clock
        self._started = self._last = clock()
        self._longest = 0.0

    def __iter__(self) -> Iterator[int]:
        """Yield epoch numbers 1, 2, … while the plan has epochs left."""
        while self.completed < self.epochs:
            yield self.completed + 1

    @property
    def learning_rate(self) -> float:
        """The rate of the optimiser's first parameter group for the coming epoch."""
        return float(self._optimiser.param_groups[0]["lr"])

    @property
    def stopped_early(self) -> bool:
        """Whether the time limit cut the run short of the epochs asked for."""
        return self.epochs < self.requested

    def end_epoch(self) -> None:
        """Count an epoch, shrink the plan if the time limit needs it, and set the next rate."""
        now = self._clock()
        self._longest = max(self._longest, now - self._last)
        self._last = now
        self.completed += 1
        if self.time_limit_seconds is not None and self.completed < self.epochs:
            left = self.time_limit_seconds - (now - self._started)
            if self.completed == 1 and self._longest > 0:
                fit = self.completed + math.floor(left / self._longest)
                if fit < self.epochs:
                    self.epochs = max(1, fit)
                    self._shortened = True
            elif left < self._longest:
                self.epochs = self.completed
        if not self._shortened:
            self._schedule.step()
            return
        share = 0.5 * (1.0 + math.cos(math.pi * self.completed / self.epochs))
        for group, peak in zip(self._optimiser.param_groups, self._peaks, strict=True):
            group["lr"] = peak * share

    def summary(self) -> dict[str, Any]:
        """For the metrics log: nothing without a limit, else the limit and what it left."""
        if self.time_limit_seconds is None:
            return {}
        return {
            "time_limit_seconds": self.time_limit_seconds,
            "epochs_requested": self.requested,
            "epochs_run": self.completed,
        }


def mean_tune_auroc(record: EpochRecord, selected: Sequence[str] | None = None) -> float:
    """Return the mean tuning AUROC over ``selected`` outputs (default all) with both classes.

    -inf when there is none.
    """
    names = record.tune_auroc if selected is None else selected
    values = [v for v in (record.tune_auroc[n] for n in names) if not np.isnan(v)]
    return float(np.mean(values)) if values else float("-inf")


def train_classifier(
    network: nn.Module,
    train_batches: Iterable[Batch],
    tune_batches: Iterable[Batch],
    loss_function: LossFunction,
    findings: Sequence[str],
    *,
    epochs: int,
    learning_rate: float,
    device: torch.device,
    metrics_log: Path,
    progress: bool = True,
    selected: Sequence[str] | None = None,
    lesion_mask_key: str | None = None,
    lesion_mask_weight: float = 1.0,
    gated_mask_channels: Sequence[int] = (),
    time_limit_seconds: float | None = None,
) -> list[EpochRecord]:
    """Train ``network`` for ``epochs`` epochs with AdamW and a cosine schedule.

    Parameters
    ----------
    network
        The classifier; it is moved to ``device`` and left there.
    train_batches, tune_batches
        Re-iterable batches (e.g. data loaders) of ``image`` and ``label`` tensors.
    loss_function
        Maps ``(logits, labels)`` to a scalar loss.
    findings
        Names of the output channels, in order, for the metrics log.
    selected
        The outputs whose mean tuning AUROC chooses the kept epoch (default all).
    epochs, learning_rate
        Length and peak learning rate of the run.
    device
        Where to train (CUDA with bf16 autocast, or CPU).
    metrics_log
        JSON-lines file that receives one :class:`EpochRecord` per epoch.
    progress
        Show a progress bar per epoch.
    lesion_mask_key, lesion_mask_weight
        When set, batches carry ground-truth lesion masks (one channel per finding)
        under this key and the network's evidence maps
        (:class:`~medvision.models.networks.EvidenceMapDenseNet`) are also trained to
        mark them: binary cross-entropy between each map and its mask max-pooled to
        the map's grid, weighted by ``lesion_mask_weight`` (location supervision as
        in Li et al. 2018, "Thoracic disease identification and localization with
        limited supervision").
    gated_mask_channels
        Output channels whose mask counts only in images labelled positive for that
        output (zeroed elsewhere): a grade's cut point, whose lesions are evidence of
        "grade ≥ k" only in images of grade k or more (:mod:`medvision.grading`).
    time_limit_seconds
        When set, the epochs end within this many seconds of the first one's start;
        the run may then train fewer epochs over a shorter schedule (:class:`EpochPlan`).

    Returns
    -------
    list of EpochRecord
        One per epoch. The network is left with the weights of the epoch with the
        best mean tuning AUROC (early model selection); the metrics log's last line
        names that epoch.
    """
    place_network(network, device)
    optimiser = torch.optim.AdamW(network.parameters(), lr=learning_rate, weight_decay=1e-4)
    metrics_log.parent.mkdir(parents=True, exist_ok=True)
    records: list[EpochRecord] = []
    best_state: dict[str, torch.Tensor] | None = None
    best_score, best_epoch = float("-inf"), 0
    plan = EpochPlan(optimiser, epochs, time_limit_seconds)
    for epoch in plan:
        start = time.perf_counter()
        network.train()
        total, count = 0.0, 0
        for batch in tqdm(
            train_batches,
            desc=f"epoch {epoch}/{plan.epochs}",
            unit="batch",
            disable=not progress,
            leave=False,
        ):
            image = to_device(batch["image"], device)
            label = plain_tensor(batch["label"]).float().to(device)
            optimiser.zero_grad(set_to_none=True)
            with autocast(device):
                if lesion_mask_key is None:
                    logits = network(image)
                else:
                    maps = _evidence(network).evidence_maps(image)
                    logits = _evidence(network).pool(maps)
            loss = loss_function(logits.float(), label)
            if lesion_mask_key is not None:
                masks = plain_tensor(batch[lesion_mask_key]).float().to(device)
                loss = loss + lesion_mask_weight * lesion_map_loss(
                    maps.float(), gate_masks(masks, label, gated_mask_channels)
                )
            loss.backward()  # type: ignore[no-untyped-call]
            optimiser.step()
            total += float(loss.detach()) * len(label)
            count += len(label)
        rate = plan.learning_rate
        logits_tune, labels_tune = predict_logits(network, tune_batches, device)
        record = EpochRecord(
            epoch=epoch,
            train_loss=total / max(count, 1),
            tune_auroc=auroc_per_finding(logits_tune, labels_tune, findings),
            seconds=time.perf_counter() - start,
            learning_rate=rate,
        )
        records.append(record)
        with metrics_log.open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(asdict(record)) + "\n")
        score = mean_tune_auroc(record, selected)
        if best_state is None or score > best_score:
            best_score, best_epoch = score, epoch
            best_state = {k: v.detach().clone() for k, v in network.state_dict().items()}
        plan.end_epoch()
    if best_state is not None:
        network.load_state_dict(best_state)
    kept = {"kept_epoch": best_epoch, "mean_tune_auroc": best_score, **plan.summary()}
    with metrics_log.open("a", encoding="utf-8") as handle:
        handle.write(json.dumps(kept) + "\n")
    return records
