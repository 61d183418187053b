"""Imbalance-aware training: class-balanced loss weights and a balanced study sampler.

Findings are rare, so a model trained on raw frequencies learns to say "absent".
Two remedies live here; use one of them per finding, not both, or the correction
is applied twice:

- :func:`class_balanced_weights` re-weights the loss by the effective number of
  samples of each class (Cui et al. 2019) and builds the matching
  ``torch.nn.BCEWithLogitsLoss`` or ``monai.losses.FocalLoss``;
- :func:`balanced_sampler_weights` re-samples studies so that studies with a
  finding are drawn as often as studies without one.

The losses themselves are PyTorch's and MONAI's; this module only computes
their weights.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from monai.losses.focal_loss import FocalLoss
from numpy.typing import NDArray


@dataclass(frozen=True, eq=False)
class ClassBalancedWeights:
    """Per finding, the loss weight of its positive and of its negative class.

    For finding ``c`` a positive target is weighted ``positive[c]`` and a
    negative target ``negative[c]``; the two sum to 2, the number of classes of
    a finding (Cui et al. 2019 normalise the weights to sum to the number of
    classes).

    Attributes
    ----------
    positive
        Weight of a positive target, shape ``(findings,)``, float32.
    negative
        Weight of a negative target, shape ``(findings,)``, float32.
    """

    positive: torch.Tensor
    negative: torch.Tensor

    @property
    def pos_weight(self) -> torch.Tensor:
        """Return ``positive / negative``, the ``pos_weight`` of ``BCEWithLogitsLoss``.

        Used alone (``BCEWithLogitsLoss(pos_weight=...)``) it keeps the ratio of
        the class weights but not their scale; :meth:`bce_loss` applies both.
        """
        return self.positive / self.negative

    def bce_loss(self) -> torch.nn.BCEWithLogitsLoss:
        """Return a binary cross-entropy loss with exactly these class weights.

        ``BCEWithLogitsLoss(weight=negative, pos_weight=positive / negative)``:
        PyTorch multiplies the positive term by ``weight * pos_weight`` and the
        negative term by ``weight``, i.e. by ``positive`` and ``negative``.
        Logits and targets have shape ``(batch, findings)``.
        """
        return torch.nn.BCEWithLogitsLoss(weight=self.negative, pos_weight=self.pos_weight)

    def focal_loss(self, gamma: float = 2.0) -> FocalLoss:
        """Return MONAI's sigmoid focal loss (Lin et al. 2017) with these class weights.

        MONAI's ``FocalLoss`` (``monai/losses/focal_loss.py``, sigmoid branch)
        multiplies the loss of channel ``c`` by ``weight[c]`` for every target,
        and, when ``alpha`` is a sequence, further by ``alpha[c]`` for positive
        targets only (negative targets keep 1). So ``weight = negative`` and
        ``alpha = positive / negative`` give positives ``positive[c]`` and
        negatives ``negative[c]``. MONAI's docstring says alpha "should be in
        [0, 1]", but it does not enforce it for a sequence and the arithmetic
        above holds for any non-negative value;
        ``tests/training/test_imbalance.py`` pins this, so a MONAI upgrade that
        changes it fails there. A single finding gets a scalar ``weight``
        (MONAI refuses a per-class weight for one channel).

        ``monai.losses.DiceFocalLoss`` accepts only a scalar ``alpha``: pass it
        ``weight=negative`` and rely on sampling for the positive/negative ratio.

        Parameters
        ----------
        gamma
            Focusing parameter; 0 gives the same loss as :meth:`bce_loss`.

        Returns
        -------
        monai.losses.FocalLoss
            With ``use_softmax=False``; inputs are logits of shape
            ``(batch, findings, ...)``.
        """
        weight: float | torch.Tensor = (
            float(self.negative[0]) if self.negative.numel() == 1 else self.negative
        )
        return FocalLoss(
            gamma=gamma,
            alpha=[float(value) for value in self.pos_weight],
            weight=weight,
            use_softmax=False,
        )


def _effective_number_weight(count: NDArray[np.float64], beta: float) -> NDArray[np.float64]:
    """Return ``(1 - beta) / (1 - beta**count)``, the inverse effective number of samples."""
    if beta == 0.0:
        return np.ones_like(count)
    return (1.0 - beta) / (1.0 - np.power(beta, count))


def class_balanced_weights(
    positives: Sequence[int], negatives: Sequence[int], beta: float = 0.999
) -> ClassBalancedWeights:
    """Return class-balanced loss weights from per-finding class counts.

    For each finding and each of its two classes with ``n`` training samples the
    weight is the inverse effective number of samples,
    ``w = (1 - beta) / (1 - beta**n)``; the two weights of a finding are then
    scaled to sum to 2. ``beta = 0`` gives equal weights (1 and 1), and ``beta``
    towards 1 approaches inverse class frequency. (Cui, Jia, Lin, Song and
    Belongie 2019, "Class-Balanced Loss Based on Effective Number of Samples",
    CVPR.)

    Parameters
    ----------
    positives
        Per finding, the number of training studies in which it is present.
    negatives
        Per finding, the number of training studies in which it is absent.
    beta
        Hyper-parameter in [0, 1); the paper uses 0.9–0.9999.

    Returns
    -------
    ClassBalancedWeights
        Positive and negative weight of each finding.

    Raises
    ------
    ValueError
        If the two sequences are empty or differ in length, a count is below 1
        (a class with no samples cannot be weighted: drop the finding or add
        data), or ``beta`` is outside [0, 1).
    """
    if len(positives) != len(negatives) or len(positives) == 0:
        raise ValueError(
            "positives and negatives must give one count per finding and be equally long, "
            f"got {len(positives)} and {len(negatives)}"
        )
    if not 0.0 <= beta < 1.0:
        raise ValueError(f"beta must be in [0, 1), got {beta}")
    for name, counts in (("positives", positives), ("negatives", negatives)):
        empty = [index for index, count in enumerate(counts) if count < 1]
        if empty:
            raise ValueError(
                f"{name} count is below 1 for finding index(es) {empty}: a class with no "
                "training samples cannot be weighted; drop the finding or add studies"
            )
    positive = _effective_number_weight(np.asarray(positives, dtype=np.float64), beta)
    negative = _effective_number_weight(np.asarray(negatives, dtype=np.float64), beta)
    scale = 2.0 / (positive + negative)
    return ClassBalancedWeights(
        positive=torch.as_tensor(positive * scale, dtype=torch.float32),
        negative=torch.as_tensor(negative * scale, dtype=torch.float32),
    )


def balanced_sampler_weights(
    labels: NDArray[np.integer] | NDArray[np.floating],
) -> NDArray[np.float64]:
    """Return per-study weights that draw positive and all-negative studies equally often.

    A study is *positive* when any of its findings is 1, otherwise *negative*.
    With ``P`` positive and ``N`` negative studies, each positive study gets
    weight ``1 / (2P)`` and each negative study ``1 / (2N)``; the weights sum
    to 1, and each group's sum is 1/2. Pass them to
    ``torch.utils.data.WeightedRandomSampler(weights, num_samples, replacement=True)``:
    every draw is then a positive study with probability exactly 1/2, and all
    studies of a group are equally likely. (Without replacement the share drifts
    towards the data's own as the groups run out.)

    Parameters
    ----------
    labels
        Study labels, 0 or 1: shape ``(studies,)`` for one finding, or
        ``(studies, findings)``.

    Returns
    -------
    numpy.ndarray
        Shape ``(studies,)``, float64.

    Raises
    ------
    ValueError
        If ``labels`` is not 1-D or 2-D, holds a value other than 0 or 1, or
        has no positive or no negative study (no balance is possible).
    """
    values = np.asarray(labels)
    if values.ndim not in (1, 2) or values.shape[0] == 0:
        raise ValueError(
            f"labels must have shape (studies,) or (studies, findings), got {values.shape}"
        )
    if not np.isin(values, (0, 1)).all():
        raise ValueError("labels must be 0 or 1 (a missing label must be resolved first)")
    positive = values.reshape(values.shape[0], -1).any(axis=1)
    positives = int(positive.sum())
    negatives = positive.size - positives
    if positives == 0 or negatives == 0:
        raise ValueError(
            f"balanced sampling needs positive and negative studies, got {positives} "
            f"positive and {negatives} negative"
        )
    return np.where(positive, 0.5 / positives, 0.5 / negatives)
