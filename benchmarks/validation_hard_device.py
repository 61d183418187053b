"""Check the validation report on phantoms with one device made harder, against statsmodels.

Runs, into ``--out``: ``medvision synth`` (chest X-ray, one device's lesion
contrast cut with ``--device-conspicuity``), ``medvision predict`` with the bundled
models, and ``medvision validate`` with the example pleural-effusion protocol.
Then recomputes, from the predictions CSV and the manifest read with the ``csv``
module alone, the hard device's 2 x 2 table, its sensitivity with the Wilson
interval and its difference from the rest with Newcombe's interval, all with
statsmodels, and prints them beside the report's. Exit status 0 when the hard
device's sensitivity failure is listed first and every number agrees to 1e-9; 1
otherwise. Usage::

    python benchmarks/validation_hard_device.py [--out build/hard-device] [--studies 600]
"""

from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
from pathlib import Path

from statsmodels.stats.proportion import confint_proportions_2indep, proportion_confint

FINDING = "pleural_effusion"
PROTOCOL = Path(__file__).resolve().parents[1] / "validation/protocols/cxr_pleural_effusion.yaml"
TOLERANCE = 1e-9


def _run(arguments: list[str]) -> int:
    print("$ medvision " + " ".join(arguments), flush=True)
    return subprocess.run(["medvision", *arguments], check=False).returncode


def _independent(out: Path, device: str, threshold_from_csv: bool) -> dict[str, float]:
    """Return the hard device's figures computed from the two CSV files with statsmodels."""
    with (out / "manifest.csv").open(newline="") as handle:
        manifest = {row["study_instance_uid"]: row for row in csv.DictReader(handle)}
    with (out / "preds.csv").open(newline="") as handle:
        predictions = [row for row in csv.DictReader(handle) if row["finding"] == FINDING]
    assert threshold_from_csv, "the example protocol takes the registry's threshold"
    counts = {"device": [0, 0], "rest": [0, 0]}  # [detected, with the finding]
    for row in predictions:
        study = manifest[row["study_instance_uid"]]
        if study[FINDING] != "1":
            continue
        side = "device" if study["manufacturer_model"] == device else "rest"
        counts[side][0] += int(row["flagged"])
        counts[side][1] += 1
    (tp, positives), (rest_tp, rest_positives) = counts["device"], counts["rest"]
    low, high = proportion_confint(tp, positives, alpha=0.05, method="wilson")
    difference = confint_proportions_2indep(
        tp, positives, rest_tp, rest_positives, method="newcomb", compare="diff", alpha=0.05
    )
    return {
        "tp": tp,
        "positives": positives,
        "sensitivity": tp / positives,
        "ci_low": float(low),
        "ci_high": float(high),
        "difference": tp / positives - rest_tp / rest_positives,
        "difference_low": float(difference[0]),
        "difference_high": float(difference[1]),
    }


def main() -> int:
    """Run the three commands, compare, print; return 0 when everything agrees."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("build/hard-device"))
    parser.add_argument("--studies", type=int, default=600)
    parser.add_argument("--seed", type=int, default=9301)
    parser.add_argument("--device", default="Borealis Flat 4")
    parser.add_argument("--conspicuity", type=float, default=0.3)
    args = parser.parse_args()
    out: Path = args.out
    synth = ["synth", "--modality", "cxr", "--studies", str(args.studies), "--seed"]
    synth += [str(args.seed), "--prevalence", "0.3", "--split", "test", "--out", str(out)]
    synth += ["--device-conspicuity", f"{args.device}={args.conspicuity}"]
    if not (out / "manifest.csv").is_file() and _run(synth) != 0:
        return 1
    if not (out / "preds.csv").is_file() and _run(
        ["predict", str(out / "cxr"), "--out", str(out / "preds.csv"), "--no-progress"]
    ) not in (0,):
        return 1
    validate = ["validate", "--predictions", str(out / "preds.csv"), "--manifest"]
    validate += [str(out / "manifest.csv"), "--protocol", str(PROTOCOL), "--out"]
    validate += [str(out / "report")]
    if _run(validate) not in (0, 1):
        return 1
    report = json.loads((out / "report" / "report.json").read_text())
    first = report["acceptance"]["failures"][0] if report["acceptance"]["failures"] else None
    group = report["subgroups"]["manufacturer_model"][args.device]
    ours = {
        "tp": group["tp"],
        "positives": group["tp"] + group["fn"],
        "sensitivity": group["metrics"]["sensitivity"]["value"],
        "ci_low": group["metrics"]["sensitivity"]["ci_low"],
        "ci_high": group["metrics"]["sensitivity"]["ci_high"],
        "difference": group["differences"]["sensitivity"]["value"],
        "difference_low": group["differences"]["sensitivity"]["ci_low"],
        "difference_high": group["differences"]["sensitivity"]["ci_high"],
    }
    theirs = _independent(out, args.device, report["protocol"]["threshold"] == "registry")
    agree = True
    print(f"\n{'figure':<16} {'report':>12} {'statsmodels':>12}")
    for name, value in ours.items():
        same = abs(value - theirs[name]) <= TOLERANCE
        agree &= same
        print(f"{name:<16} {value:>12.6f} {theirs[name]:>12.6f} {'' if same else 'DIFFERENT'}")
    named_first = (
        first is not None
        and first["column"] == "manufacturer_model"
        and first["value"] == args.device
        and first["criterion"] == "sensitivity_lower_ci_min"
    )
    print(f"\nfirst failure: {first['column']} = {first['value']}" if first else "no failure")
    print(f"hard device listed first: {named_first}; numbers agree to {TOLERANCE:g}: {agree}")
    return 0 if named_first and agree else 1


if __name__ == "__main__":
    sys.exit(main())
