"""Confidence intervals for proportions (sensitivity, specificity, prevalence).

Two intervals for a binomial proportion ``successes / trials``:

- :func:`wilson_interval`, the Wilson score interval (Wilson 1927), the
  default for reporting: close to nominal coverage even for small samples and
  proportions near 0 or 1;
- :func:`clopper_pearson_interval`, the "exact" interval (Clopper and Pearson
  1934), conservative (coverage at least nominal), which some protocols ask for.

Both return ``(0.0, 1.0)`` for zero trials: nothing was observed, so nothing is
excluded.
"""

from __future__ import annotations

import math

from scipy.stats import beta, norm


def _check_proportion(successes: int, trials: int, confidence: float) -> None:
    """Check the arguments shared by both intervals.

    Raises
    ------
    ValueError
        If ``trials`` is negative, ``successes`` is outside ``[0, trials]``, or
        ``confidence`` is outside the open interval (0, 1).
    """
    if trials < 0:
        raise ValueError(f"trials must be zero or more, got {trials}")
    if not 0 <= successes <= trials:
        raise ValueError(f"successes must be between 0 and trials ({trials}), got {successes}")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be strictly between 0 and 1, got {confidence}")


def wilson_interval(successes: int, trials: int, confidence: float = 0.95) -> tuple[float, float]:
    """Return the Wilson score interval of the proportion ``successes / trials``.

    With ``p = successes / trials``, ``n = trials`` and ``z`` the standard normal
    quantile at ``1 - (1 - confidence) / 2``, the bounds are::

        (p + z²/2n ± z·sqrt(p(1-p)/n + z²/4n²)) / (1 + z²/n)

    (Wilson, E. B. 1927, "Probable inference, the law of succession, and
    statistical inference", J. Am. Stat. Assoc. 22:209–212.)

    Parameters
    ----------
    successes
        Number of successes (e.g. true positives).
    trials
        Number of trials (e.g. positive cases).
    confidence
        Two-sided confidence level, strictly between 0 and 1.

    Returns
    -------
    tuple of float
        ``(lower, upper)``, clipped to [0, 1]; ``(0.0, 1.0)`` when ``trials`` is 0.

    Raises
    ------
    ValueError
        If ``trials`` is negative, ``successes`` is outside ``[0, trials]``, or
        ``confidence`` is not strictly between 0 and 1.
    """
    _check_proportion(successes, trials, confidence)
    if trials == 0:
        return 0.0, 1.0
    z = float(norm.ppf(1.0 - (1.0 - confidence) / 2.0))
    p = successes / trials
    z2_n = z * z / trials
    centre = (p + z2_n / 2.0) / (1.0 + z2_n)
    half_width = z * math.sqrt(p * (1.0 - p) / trials + z2_n / (4.0 * trials)) / (1.0 + z2_n)
    return max(0.0, centre - half_width), min(1.0, centre + half_width)


def clopper_pearson_interval(
    successes: int, trials: int, confidence: float = 0.95
) -> tuple[float, float]:
    """Return the Clopper–Pearson ("exact") interval of ``successes / trials``.

    The bounds are beta quantiles: ``Beta(α/2; x, n-x+1)`` and
    ``Beta(1-α/2; x+1, n-x)`` with ``α = 1 - confidence``, ``x = successes`` and
    ``n = trials``; the lower bound is 0 when ``x = 0`` and the upper bound 1 when
    ``x = n``. (Clopper, C. J. and Pearson, E. S. 1934, "The use of confidence or
    fiducial limits illustrated in the case of the binomial", Biometrika
    26:404–413.)

    Parameters
    ----------
    successes, trials, confidence
        As for :func:`wilson_interval`.

    Returns
    -------
    tuple of float
        ``(lower, upper)``; ``(0.0, 1.0)`` when ``trials`` is 0.

    Raises
    ------
    ValueError
        As for :func:`wilson_interval`.
    """
    _check_proportion(successes, trials, confidence)
    if trials == 0:
        return 0.0, 1.0
    alpha = 1.0 - confidence
    lower = (
        0.0 if successes == 0 else float(beta.ppf(alpha / 2.0, successes, trials - successes + 1))
    )
    upper = (
        1.0
        if successes == trials
        else float(beta.ppf(1.0 - alpha / 2.0, successes + 1, trials - successes))
    )
    return lower, upper
