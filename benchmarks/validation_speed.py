"""Time the validation statistics on a large prediction set (target: 100,000 in under a minute).

Builds ``--cases`` synthetic cases (a finding at 30 % prevalence, probabilities from
a logistic model) spread over subgroup columns with 10 values in all (4 sites, 4
devices, 2 sexes), one site x device intersection, and times
:func:`validation.subgroups.evaluate` with every figure and interval: the 2 x 2
tables, Wilson intervals, PPV and NPV at an intended-use prevalence, DeLong AUROC
intervals, Newcombe differences from the rest, and acceptance. Usage::

    python benchmarks/validation_speed.py [--cases 100000] [--seed 0]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from validation.protocol import parse_protocol
from validation.subgroups import Case, evaluate

PROTOCOL = """
name: speed
modality: cxr
finding: nodule
intended_use_prevalence: 0.05
subgroups: [site, manufacturer_model, sex]
intersections: [[site, manufacturer_model]]
acceptance:
  sensitivity_lower_ci_min: 0.85
  specificity_lower_ci_min: 0.80
  auroc_lower_ci_min: 0.85
"""


def main() -> None:
    """Print the case count, the group count and the seconds taken."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--cases", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    labels = (rng.random(args.cases) < 0.3).astype(int)
    probabilities = 1 / (1 + np.exp(-(rng.normal(size=args.cases) + 2.5 * (labels - 0.5))))
    sites = rng.choice(["North", "River", "Brendan", "Harbour"], args.cases)
    devices = rng.choice(["Aquila", "Borealis", "Cygnus", "Delphin"], args.cases)
    sexes = rng.choice(["F", "M"], args.cases)
    start = time.perf_counter()
    cases = [
        Case(
            str(i),
            int(labels[i]),
            float(probabilities[i]),
            int(probabilities[i] >= 0.5),
            {"site": sites[i], "manufacturer_model": devices[i], "sex": sexes[i]},
        )
        for i in range(args.cases)
    ]
    built = time.perf_counter()
    groups = evaluate(cases, parse_protocol(PROTOCOL))
    done = time.perf_counter()
    print(
        f"{args.cases} cases, {len(groups)} groups (overall, 10 subgroup values, "
        f"{len(groups) - 11} site x device): cases built in {built - start:.2f} s, "
        f"figures in {done - built:.2f} s"
    )


if __name__ == "__main__":
    main()
