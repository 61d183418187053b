"""Time the validation statistics on a large prediction set (target: 100,000 in under a minute).

Builds ``--cases`` synthetic cases (a finding at 30 % prevalence, probabilities from
a logistic model) spread over subgroup columns with 10 values in all (4 sites, 4
devices, 2 sexes), one site x device intersection, and times
:func:`validation.subgroups.evaluate` with every figure and interval: the 2 x 2
tables, Wilson intervals, PPV and NPV at an intended-use prevalence, DeLong AUROC
intervals, Newcombe differences from the rest, and acceptance; then the report
(:func:`validation.report.build_report`, with calibration per group) and its HTML
and PDF renderings (into a temporary folder). With ``--studies-per-patient 2`` the
patients repeat and the protocol clusters by patient, so every interval resamples
patients (1,000 cluster-bootstrap resamples) or, for the AUROC, uses Obuchowski's
variance. Usage::

    python benchmarks/validation_speed.py [--cases 100000] [--seed 0] [--studies-per-patient 1]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from validation.inputs import ValidationInputs
from validation.protocol import parse_protocol
from validation.render import write_html, write_pdf
from validation.report import build_report, write_report_json
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
    parser.add_argument(
        "--studies-per-patient",
        type=int,
        default=1,
        help="above 1, patients repeat and the protocol clusters by patient: every interval "
        "then resamples patients (bootstrap) or uses Obuchowski's AUROC variance",
    )
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
            {
                "site": sites[i],
                "manufacturer_model": devices[i],
                "sex": sexes[i],
                "patient_id": f"P{i // args.studies_per_patient}",
            },
        )
        for i in range(args.cases)
    ]
    built = time.perf_counter()
    clustered = args.studies_per_patient > 1
    protocol = parse_protocol(PROTOCOL + ("cluster: patient_id\n" if clustered else ""))
    groups = evaluate(cases, protocol)
    done = time.perf_counter()
    inputs = ValidationInputs(cases)
    report = build_report(groups, inputs, protocol, predictions_sha256="-", manifest_sha256="-")
    reported = time.perf_counter()
    with tempfile.TemporaryDirectory() as folder:
        write_report_json(report, Path(folder) / "report.json")
        write_html(report, cases, Path(folder) / "report.html")
        write_pdf(report, cases, Path(folder) / "report.pdf")
    rendered = time.perf_counter()
    print(
        f"{args.cases} cases, {len(groups)} groups (overall, 10 subgroup values, "
        f"{len(groups) - 11} site x device): cases built in {built - start:.2f} s, "
        f"figures in {done - built:.2f} s, report data in {reported - done:.2f} s, "
        f"JSON, HTML and PDF in {rendered - reported:.2f} s; "
        f"{rendered - start:.2f} s in all"
        + (f" (clustered: {args.studies_per_patient} studies per patient)" if clustered else "")
    )


if __name__ == "__main__":
    main()
