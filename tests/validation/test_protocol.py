"""Protocol files: the examples load, and every mistake is named, all at once."""

from __future__ import annotations

from pathlib import Path

import pytest

from medvision.modality import Modality
from validation.protocol import FROM_REGISTRY, ProtocolError, load_protocol, parse_protocol

EXAMPLES = Path(__file__).resolve().parents[2] / "validation" / "protocols"
GOOD = """
name: test
modality: cxr
finding: nodule
subgroups: [site, age_band]
age_bands: [18, 65]
acceptance:
  sensitivity_lower_ci_min: 0.85
"""


def test_the_example_protocols_of_all_four_modalities_load() -> None:
    protocols = [load_protocol(path) for path in sorted(EXAMPLES.glob("*.yaml"))]
    assert {p.modality for p in protocols} == set(Modality)
    assert all(p.acceptance and len(p.sha256) == 64 for p in protocols)


def test_defaults_are_filled_in_and_the_text_is_hashed() -> None:
    protocol = parse_protocol(GOOD)
    assert protocol.threshold == FROM_REGISTRY
    assert (protocol.confidence, protocol.interval_method) == (0.95, "wilson")
    assert protocol.subgroups == ("site", "age_band")
    assert protocol.age_bands == (18, 65)
    assert protocol.minimum_subgroup_size == 30
    assert protocol.acceptance == {"sensitivity_lower_ci_min": 0.85}
    assert protocol.sha256 != parse_protocol(GOOD + "\n# changed\n").sha256


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ("sensitivity_lower_ci_minimum: 0.8", "unknown key 'sensitivity_lower_ci_minimum'"),
        ("confidence: 1.5", "confidence: must be strictly between 0 and 1, got 1.5"),
        ("threshold: 2", "threshold: must be between 0 and 1, got 2"),
        ("threshold: high", "threshold: expected a number, got 'high'"),
        ("interval_method: exact", "interval_method: 'exact' is not one of wilson"),
        ("minimum_subgroup_size: 0", "minimum_subgroup_size: expected a whole number of 1"),
        ("cluster: site", "cluster: only patient_id can cluster cases, got 'site'"),
        ("intended_use_prevalence: 0", "intended_use_prevalence: must be strictly between"),
    ],
)
def test_each_impossible_value_is_named(change: str, message: str) -> None:
    with pytest.raises(ProtocolError, match=message.replace("(", r"\(")):
        parse_protocol(GOOD + change + "\n", "p.yaml")


def test_every_problem_of_a_file_is_listed_at_once(tmp_path: Path) -> None:
    text = """
name: bad
modality: cxr
finding: malignancy
subgroups: [site, hospital, age_band]
age_bands: [65, 18]
intersections: [[site, sex]]
acceptance:
  sensitivity_lower_ci_min: 1.2
  accuracy_min: 0.9
"""
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ProtocolError) as error:
        load_protocol(path)
    lines = str(error.value).splitlines()
    assert all(line.startswith(f"{path}: ") for line in lines)
    expected = [
        "finding: 'malignancy' is not a cxr finding (nodule, pleural_effusion",
        "subgroups: unknown column 'hospital'",
        "age_bands: expected increasing whole years, got [65, 18]",
        "intersections: ['site', 'sex'] uses a column not among the subgroups",
        "acceptance.sensitivity_lower_ci_min: must be between 0 and 1, got 1.2",
        "acceptance: unknown criterion 'accuracy_min'",
    ]
    assert len(lines) == len(expected)
    for line, start in zip(lines, expected, strict=True):
        assert line.removeprefix(f"{path}: ").startswith(start)


def test_unreadable_or_malformed_files_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ProtocolError, match="cannot be read"):
        load_protocol(tmp_path / "missing.yaml")
    with pytest.raises(ProtocolError, match="expected a mapping"):
        parse_protocol("- a\n- b\n")
    with pytest.raises(ProtocolError, match="not valid YAML"):
        parse_protocol("name: [unclosed\n")
    with pytest.raises(ProtocolError, match="missing key 'acceptance'"):
        parse_protocol("name: x\nmodality: ct\nfinding: nodule\n")
    with pytest.raises(ProtocolError, match="age_bands: needed when subgroups include age_band"):
        parse_protocol(GOOD.replace("age_bands: [18, 65]\n", ""))


def test_a_finding_without_a_modality_is_one_problem_not_a_crash() -> None:
    with pytest.raises(ProtocolError) as error:
        parse_protocol("name: x\nfinding: nodule\nacceptance: {npv_lower_ci_min: 0.9}\n")
    assert str(error.value) == "protocol: missing key 'modality'"
    with pytest.raises(ProtocolError, match="modality: unknown modality 'xray'"):
        parse_protocol(
            "name: x\nmodality: xray\nfinding: nodule\nacceptance: {npv_lower_ci_min: 0.9}\n"
        )


CT = """
name: ct
modality: ct
finding: nodule
max_false_positives_per_scan: 0.5
min_nodule_diameter_mm: 4
acceptance:
  dice_lower_ci_min: 0.7
  hd95_mm_upper_ci_max: 5
  detection_sensitivity_lower_ci_min: 0.9
"""


def test_a_ct_protocol_bounds_the_segmenter_and_sets_the_froc_reading() -> None:
    protocol = parse_protocol(CT)
    assert (protocol.max_false_positives_per_scan, protocol.min_nodule_diameter_mm) == (0.5, 4.0)
    assert protocol.acceptance["hd95_mm_upper_ci_max"] == 5.0
    defaults = parse_protocol(GOOD)
    assert (defaults.max_false_positives_per_scan, defaults.min_nodule_diameter_mm) == (1.0, 6.0)


def test_segmenter_criteria_and_keys_belong_to_ct_and_their_values_are_checked() -> None:
    with pytest.raises(ProtocolError) as raised:
        parse_protocol(
            GOOD.replace("acceptance:", "max_false_positives_per_scan: 1\nacceptance:")
            + "  dice_lower_ci_min: 0.5\n"
        )
    message = str(raised.value)
    assert "max_false_positives_per_scan: applies to CT protocols only" in message
    assert "acceptance: dice_lower_ci_min applies to CT protocols only" in message
    with pytest.raises(ProtocolError) as raised:
        parse_protocol(
            CT.replace("hd95_mm_upper_ci_max: 5", "hd95_mm_upper_ci_max: -1")
            .replace("max_false_positives_per_scan: 0.5", "max_false_positives_per_scan: 0")
            .replace("min_nodule_diameter_mm: 4", "min_nodule_diameter_mm: many")
        )
    message = str(raised.value)
    assert "acceptance.hd95_mm_upper_ci_max: expected mm above 0, got -1" in message
    assert "max_false_positives_per_scan: expected a positive number, got 0" in message
    assert "min_nodule_diameter_mm: expected mm of 0 or more, got 'many'" in message
