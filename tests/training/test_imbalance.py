import numpy as np
import pytest
import torch
from torch.utils.data import WeightedRandomSampler

from medvision.training.imbalance import balanced_sampler_weights, class_balanced_weights


def test_class_balanced_weights_match_hand_computed_values() -> None:
    # beta = 0.999: positives (n = 10): 0.001 / (1 - 0.999**10) = 0.1004508;
    # negatives (n = 990): 0.001 / (1 - 0.999**990) = 0.0015908.
    # Scaled to sum to 2: 2 * 0.1004508 / 0.1020416 = 1.968820, and 0.031180.
    weights = class_balanced_weights([10], [990], beta=0.999)
    assert weights.positive.tolist() == pytest.approx([1.968820], abs=1e-5)
    assert weights.negative.tolist() == pytest.approx([0.031180], abs=1e-5)
    assert weights.pos_weight.tolist() == pytest.approx([63.1441], abs=1e-3)


def test_class_balanced_weights_of_each_finding_sum_to_two() -> None:
    weights = class_balanced_weights([10, 300, 50], [990, 700, 50], beta=0.99)
    assert (weights.positive + weights.negative).tolist() == pytest.approx([2.0, 2.0, 2.0])
    assert weights.positive[2].item() == pytest.approx(1.0)


def test_beta_zero_gives_equal_weights() -> None:
    weights = class_balanced_weights([1, 5], [99, 95], beta=0.0)
    assert weights.positive.tolist() == [1.0, 1.0]
    assert weights.negative.tolist() == [1.0, 1.0]


def _logits_and_targets() -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(8, 2, generator=generator)
    targets = torch.tensor([[1, 0], [0, 0], [0, 1], [1, 1], [0, 0], [0, 0], [1, 0], [0, 0]])
    return logits, targets.float()


def test_bce_loss_weights_positives_and_negatives_by_their_class_weights() -> None:
    weights = class_balanced_weights([3, 2], [5, 6], beta=0.9)
    logits, targets = _logits_and_targets()
    per_element = torch.nn.functional.binary_cross_entropy_with_logits(
        logits, targets, reduction="none"
    )
    expected = torch.where(targets == 1, weights.positive, weights.negative) * per_element
    assert torch.allclose(weights.bce_loss()(logits, targets), expected.mean(), atol=1e-6)


def test_monai_focal_loss_with_gamma_zero_equals_class_weighted_bce() -> None:
    # Pins MONAI's semantics: weight[c] on every target, alpha[c] on positives only.
    weights = class_balanced_weights([3, 2], [5, 6], beta=0.9)
    logits, targets = _logits_and_targets()
    focal = weights.focal_loss(gamma=0.0)(logits, targets)
    assert torch.allclose(focal, weights.bce_loss()(logits, targets), atol=1e-6)


def test_focal_loss_of_a_single_finding_uses_a_scalar_weight() -> None:
    weights = class_balanced_weights([3], [5], beta=0.9)
    logits, targets = _logits_and_targets()
    focal = weights.focal_loss(gamma=0.0)(logits[:, :1], targets[:, :1])
    assert torch.allclose(focal, weights.bce_loss()(logits[:, :1], targets[:, :1]), atol=1e-6)


@pytest.mark.parametrize(
    ("positives", "negatives", "beta", "message"),
    [
        ([0, 4], [10, 6], 0.9, r"positives count is below 1 for finding index\(es\) \[0\]"),
        ([1, 4], [10, 0], 0.9, r"negatives count is below 1 for finding index\(es\) \[1\]"),
        ([1, 4], [10], 0.9, "got 2 and 1"),
        ([], [], 0.9, "got 0 and 0"),
        ([1], [1], 1.0, r"beta must be in \[0, 1\), got 1.0"),
    ],
)
def test_class_balanced_weights_refuse_unusable_counts(
    positives: list[int], negatives: list[int], beta: float, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        class_balanced_weights(positives, negatives, beta=beta)


def test_sampler_weights_give_positive_studies_an_expected_share_of_one_half() -> None:
    labels = np.array([[0, 0], [1, 0], [0, 0], [0, 0], [0, 1], [0, 0], [0, 0], [0, 0], [0, 0]])
    weights = balanced_sampler_weights(labels)
    positive = labels.any(axis=1)
    assert weights[positive].tolist() == [0.25, 0.25]
    assert weights[~positive].tolist() == pytest.approx([1 / 14] * 7)
    assert weights[positive].sum() / weights.sum() == pytest.approx(0.5, abs=1e-15)


def test_weighted_random_sampler_draws_positive_studies_half_the_time() -> None:
    labels = np.array([1] * 10 + [0] * 90)
    sampler = WeightedRandomSampler(
        balanced_sampler_weights(labels).tolist(),
        num_samples=20000,
        replacement=True,
        generator=torch.Generator().manual_seed(0),
    )
    share = float(np.mean(labels[list(sampler)]))
    # Standard error of the share is sqrt(0.25 / 20000) = 0.0035; allow about 4 of them.
    assert share == pytest.approx(0.5, abs=0.015)


@pytest.mark.parametrize(
    ("labels", "message"),
    [
        (np.zeros(5, dtype=int), "got 0 positive and 5 negative"),
        (np.ones((3, 2), dtype=int), "got 3 positive and 0 negative"),
        (np.array([0, 1, 2]), "labels must be 0 or 1"),
        (np.zeros((2, 2, 2), dtype=int), r"labels must have shape \(studies,\)"),
    ],
)
def test_sampler_weights_refuse_unusable_labels(labels: np.ndarray, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        balanced_sampler_weights(labels)
