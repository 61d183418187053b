"""Per-subgroup figures equal independent computations; weak groups fail, small ones wait."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest
from fairlearn.metrics import (
    MetricFrame,
    selection_rate,
    true_negative_rate,
    true_positive_rate,
)
from sklearn.metrics import recall_score, roc_auc_score
from statsmodels.stats.proportion import proportion_confint

from validation.auroc import delong_auroc, obuchowski_auroc
from validation.binary import Estimate, at_intended_prevalence
from validation.protocol import parse_protocol
from validation.subgroups import OVERALL, UNKNOWN, Case, Verdict, age_band, evaluate

PROTOCOL = """
name: test
modality: cxr
finding: nodule
subgroups: [site, manufacturer_model, age_band]
age_bands: [40, 65]
intersections: [[site, manufacturer_model]]
minimum_subgroup_size: 30
intended_use_prevalence: 0.1
acceptance:
  sensitivity_lower_ci_min: 0.7
  specificity_lower_ci_min: 0.7
  auroc_lower_ci_min: 0.8
"""


def _cases(seed: int = 0, size: int = 1500) -> list[Case]:
    rng = np.random.default_rng(seed)
    cases = []
    for index in range(size):
        site = ["A", "B", "C"][index % 3]
        device = "weak" if rng.random() < 0.3 else "good"
        label = int(rng.random() < 0.3)
        signal = 0.6 if device == "weak" else 3.0  # the weak device shows lesions faintly
        score = 1 / (1 + np.exp(-(rng.normal() + signal * (label - 0.5))))
        age = None if index % 50 == 0 else int(rng.integers(20, 90))
        cases.append(
            Case(
                study_instance_uid=str(index),
                label=label,
                probability=float(score),
                flagged=int(score >= 0.5),
                attributes={"site": site, "manufacturer_model": device, "age": age},
            )
        )
    return cases


def test_every_group_equals_an_independent_computation() -> None:
    cases = _cases()
    groups = evaluate(cases, parse_protocol(PROTOCOL))
    labels = np.array([c.label for c in cases])
    flagged = np.array([c.flagged for c in cases])
    scores = np.array([c.probability for c in cases])
    sites = np.array([c.attributes["site"] for c in cases])
    assert [(g.column, g.value) for g in groups][:4] == [
        (OVERALL, "all"),
        ("site", "A"),
        ("site", "B"),
        ("site", "C"),
    ]
    for group in groups:
        if group.column == OVERALL:
            members = np.ones(len(cases), dtype=bool)
        elif group.column == "site":
            members = sites == group.value
        else:
            continue
        y, d, p = labels[members], flagged[members], scores[members]
        assert group.n == members.sum()
        assert group.metrics["sensitivity"].value == pytest.approx(recall_score(y, d), abs=1e-12)
        assert group.metrics["specificity"].value == pytest.approx(
            recall_score(1 - y, 1 - d), abs=1e-12
        )
        low, high = proportion_confint(
            int(((d == 1) & (y == 1)).sum()), int(y.sum()), method="wilson"
        )
        assert group.metrics["sensitivity"].ci_low == pytest.approx(low, abs=1e-9)
        assert group.metrics["sensitivity"].ci_high == pytest.approx(high, abs=1e-9)
        assert group.metrics["auroc"].value == pytest.approx(roc_auc_score(y, p), abs=1e-12)
        assert "ppv_at_intended_prevalence" in group.metrics


def test_the_weak_device_fails_and_its_difference_from_the_rest_excludes_zero() -> None:
    groups = evaluate(_cases(), parse_protocol(PROTOCOL))
    by_key = {(g.column, g.value): g for g in groups}
    weak, good = by_key[("manufacturer_model", "weak")], by_key[("manufacturer_model", "good")]
    assert weak.acceptance["sensitivity_lower_ci_min"] == Verdict.FAIL
    assert good.acceptance["sensitivity_lower_ci_min"] == Verdict.PASS
    assert weak.differences["sensitivity"].ci_high < 0.0  # clearly worse than the rest
    assert "sensitivity_lower_ci_min" in weak.failed
    assert ("site x manufacturer_model", "A x weak") in by_key


def test_small_groups_are_not_judged_and_missing_attributes_are_a_group() -> None:
    groups = evaluate(_cases(), parse_protocol(PROTOCOL))
    unknown = next(g for g in groups if g.column == "age_band" and g.value == UNKNOWN)
    assert unknown.n == 30  # every 50th case has no age
    assert sum(g.n for g in groups if g.column == "age_band") == 1500
    tiny = evaluate(_cases(size=20), parse_protocol(PROTOCOL))
    assert all(g.underpowered for g in tiny)
    assert all(v == Verdict.NOT_JUDGED for g in tiny for v in g.acceptance.values())


def test_age_bands_name_their_limits() -> None:
    assert [age_band(a, (40, 65)) for a in (12, 40, 64, 65, 99, None)] == [
        "<40",
        "40-64",
        "40-64",
        "65+",
        "65+",
        UNKNOWN,
    ]


def test_a_group_with_one_class_has_no_auroc_and_no_verdict_on_it() -> None:
    cases = [Case(str(i), 1, 0.9, 1, {"site": "A"}) for i in range(40)]
    cases += [
        Case(str(i + 40), i % 2, 0.2 + 0.5 * (i % 2), i % 2, {"site": "B"}) for i in range(40)
    ]
    groups = evaluate(
        cases,
        parse_protocol(PROTOCOL.replace("age_band]", "]").replace("age_bands: [40, 65]\n", "")),
    )
    site_a = next(g for g in groups if g.value == "A")
    assert math.isnan(site_a.metrics["auroc"].value)
    assert site_a.acceptance["auroc_lower_ci_min"] == Verdict.NOT_JUDGED
    assert site_a.acceptance["specificity_lower_ci_min"] == Verdict.NOT_JUDGED
    with pytest.raises(ValueError, match="no case"):
        evaluate([], parse_protocol(PROTOCOL))


def test_per_group_sensitivity_specificity_and_auroc_equal_fairlearn_s_metric_frame() -> None:
    cases = _cases(seed=5)
    groups = evaluate(cases, parse_protocol(PROTOCOL))
    labels = np.array([c.label for c in cases])
    flagged = np.array([c.flagged for c in cases])
    devices = np.array([c.attributes["manufacturer_model"] for c in cases])
    frame = MetricFrame(
        metrics={
            "sensitivity": true_positive_rate,
            "specificity": true_negative_rate,
            "selection": selection_rate,
        },
        y_true=labels,
        y_pred=flagged,
        sensitive_features=devices,
    )
    ours = {g.value: g for g in groups if g.column == "manufacturer_model"}
    for device, row in frame.by_group.iterrows():
        group = ours[str(device)]
        assert group.metrics["sensitivity"].value == pytest.approx(row["sensitivity"], abs=1e-12)
        assert group.metrics["specificity"].value == pytest.approx(row["specificity"], abs=1e-12)
        flagged_share = (group.counts.tp + group.counts.fp) / group.n
        assert flagged_share == pytest.approx(row["selection"], abs=1e-12)


def _each_patient_twice(seed: int, size: int) -> tuple[list[Case], list[Case]]:
    """Return cases with one per patient, and the same cases with each patient's twice."""
    once = [
        replace(c, attributes={**c.attributes, "patient_id": f"P{i}"})
        for i, c in enumerate(_cases(seed=seed, size=size))
    ]
    return once, once + [replace(c, study_instance_uid=c.study_instance_uid + "b") for c in once]


def test_repeated_patients_widen_the_intervals_when_the_protocol_clusters() -> None:
    once, twice = _each_patient_twice(seed=6, size=600)
    protocol = parse_protocol(PROTOCOL + "cluster: patient_id\n")
    single = evaluate(once, protocol)[0].metrics["sensitivity"]
    plain = evaluate(twice, parse_protocol(PROTOCOL))[0].metrics["sensitivity"]
    clustered = evaluate(twice, protocol)[0].metrics["sensitivity"]
    # One case per patient: the protocol's Wilson interval, untouched.
    positives = sum(c.label for c in once)
    detected = sum(c.label * c.flagged for c in once)
    low, high = proportion_confint(detected, positives, method="wilson")
    assert single.ci_low == pytest.approx(low)
    assert single.ci_high == pytest.approx(high)
    # Each patient twice: Wilson on 2x the cases is too narrow; the cluster bootstrap is not.
    assert clustered.value == plain.value
    width = clustered.ci_high - clustered.ci_low
    assert width > 1.25 * (plain.ci_high - plain.ci_low)
    assert width == pytest.approx(single.ci_high - single.ci_low, rel=0.2)


def test_repeated_patients_give_the_auroc_obuchowskis_interval() -> None:
    once, twice = _each_patient_twice(seed=7, size=400)
    protocol = parse_protocol(PROTOCOL + "cluster: patient_id\n")
    clustered = evaluate(twice, protocol)[0].metrics["auroc"]
    expected = obuchowski_auroc(
        [c.probability for c in twice],
        [c.label for c in twice],
        [str(c.attributes["patient_id"]) for c in twice],
    )
    assert (clustered.value, clustered.ci_low, clustered.ci_high) == (
        expected.value,
        expected.ci_low,
        expected.ci_high,
    )
    # The copies add no information: the interval is that of the patients counted once.
    single = delong_auroc([c.probability for c in once], [c.label for c in once])
    width = clustered.ci_high - clustered.ci_low
    assert width == pytest.approx(single.ci_high - single.ci_low, rel=0.05)
    plain = evaluate(twice, parse_protocol(PROTOCOL))[0].metrics["auroc"]
    assert plain.ci_high - plain.ci_low < 0.8 * width


def test_repeated_patients_widen_ppv_npv_and_the_differences_from_the_rest() -> None:
    once, twice = _each_patient_twice(seed=8, size=600)
    text = PROTOCOL + "cluster: patient_id\n"  # PROTOCOL's intended-use prevalence: 0.1
    clustered = evaluate(twice, parse_protocol(text))
    plain = evaluate(twice, parse_protocol(PROTOCOL))
    single = evaluate(once, parse_protocol(text))  # one case per patient: not clustered

    def width(estimate: Estimate) -> float:
        return estimate.ci_high - estimate.ci_low

    for name in ("ppv", "npv"):
        assert clustered[0].metrics[name].value == plain[0].metrics[name].value
        assert width(clustered[0].metrics[name]) > 1.25 * width(plain[0].metrics[name])
    # PPV at the intended prevalence follows the clustered sensitivity and specificity.
    expected = at_intended_prevalence(
        clustered[0].metrics["sensitivity"], clustered[0].metrics["specificity"], 0.1
    )
    for name, estimate in expected.items():
        assert clustered[0].metrics[name] == estimate
    for index in range(1, len(clustered)):
        counts = single[index].counts
        if min(counts.tp + counts.fn, counts.tn + counts.fp) < 30:
            continue  # a percentile bootstrap of a handful of cases is too narrow to compare
        for name in ("sensitivity", "specificity"):
            ours, theirs = clustered[index].differences[name], single[index].differences[name]
            assert ours.value == pytest.approx(theirs.value)
            # Twice the cases of the same patients: about the interval of once, not narrower.
            assert width(ours) == pytest.approx(width(theirs), rel=0.3)
            assert width(ours) > 1.15 * width(plain[index].differences[name])
