from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from medvision.calibration.refit import (
    PER_SITE_KEY,
    SplitScores,
    calibrate_model,
    calibrated_probabilities,
    calibrator_for_site,
    fit_calibrator,
)
from medvision.calibration.report import calibration_report, format_calibration_table
from medvision.data.manifest import ManifestRow, write_manifest
from medvision.inference.scoring import PreparedStudy, StudyScore
from medvision.modality import Modality
from medvision.models.registry import ModelEntry, Task

ENTRY = ModelEntry(
    name="stub",
    version="1",
    modality=Modality.CXR,
    findings=("nodule",),
    task=Task.CLASSIFICATION,
    network={},
    transforms={},
    input_size=(1,),
)
CPU = torch.device("cpu")


class StubScorer:
    """Returns a fixed logit per study; counts the studies it scored."""

    def __init__(self, logits: dict[str, float]) -> None:
        self.logits = logits
        self.scored: list[str] = []

    def prepare(self, entry: ModelEntry, item: dict[str, Any]) -> PreparedStudy:
        return PreparedStudy(study_instance_uid=str(item["study_instance_uid"]), inputs=[])

    def score(
        self,
        network: nn.Module,
        entry: ModelEntry,
        studies: Sequence[PreparedStudy],
        device: torch.device,
    ) -> list[StudyScore]:
        self.scored += [s.study_instance_uid for s in studies]
        return [
            StudyScore(s.study_instance_uid, {"nodule": self.logits[s.study_instance_uid]})
            for s in studies
        ]


class Cases:
    """Manifest rows with known logits, written to a manifest when asked."""

    def __init__(self) -> None:
        self.rows: list[ManifestRow] = []
        self.logits: dict[str, float] = {}

    def add(self, split: str, logits: Sequence[float], label: int, site: str = "Site A") -> None:
        for value in logits:
            uid = f"1.2.826.0.1.{len(self.rows) + 1}"
            self.rows.append(
                ManifestRow(
                    study_instance_uid=uid,
                    modality=Modality.CXR,
                    path=Path(uid),
                    site=site,
                    split=split,
                    labels={"nodule": label},
                )
            )
            self.logits[uid] = float(value)

    def arrays(self, split: str, site: str | None = None) -> tuple[np.ndarray, np.ndarray]:
        rows = [r for r in self.rows if r.split == split and site in (None, r.site)]
        return (
            np.array([self.logits[r.study_instance_uid] for r in rows]),
            np.array([r.labels["nodule"] for r in rows], dtype=float),
        )

    def manifest(self, folder: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, StubScorer]:
        path = folder / "manifest.csv"
        write_manifest(self.rows, path)
        scorer = StubScorer(self.logits)
        monkeypatch.setattr("medvision.calibration.refit.scorer_for", lambda entry: scorer)
        return path, scorer


def _spread(low: float, high: float, count: int) -> list[float]:
    return np.linspace(low, high, count).tolist()


@pytest.mark.parametrize(("target", "needed"), [(0.9, 18), (0.75, 15), (0.5, 10)])
def test_threshold_reaches_the_target_sensitivity_on_tune_and_calibration_together_exactly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, target: float, needed: int
) -> None:
    cases = Cases()
    # Four positives: too few to compare methods, so temperature scaling (strictly increasing).
    calibration_positives = _spread(4.5, 5.1, 4)  # above every tune positive
    cases.add("calibration", calibration_positives, 1)
    cases.add("calibration", _spread(-3.0, 1.0, 12), 0)
    tune_positives = _spread(-1.0, 4.0, 16)
    cases.add("tune", tune_positives, 1)
    cases.add("tune", _spread(-4.0, 1.5, 20), 0)
    manifest, _ = cases.manifest(tmp_path, monkeypatch)

    outcome = calibrate_model(
        nn.Identity(), ENTRY, manifest, device=CPU, target_sensitivity=target, progress=False
    )

    report = outcome.findings["nodule"]
    assert report.method == "temperature"
    point = report.operating_point
    # 20 positives in all: 16 from tune and 4 from calibration.
    assert point.sensitivity == needed / 20 == target
    assert (point.true_positives, point.false_negatives) == (needed, 20 - needed)
    calibrator = calibrator_for_site(outcome.entry, "nodule")
    pooled_positives = sorted(tune_positives + calibration_positives, reverse=True)
    lowest_flagged_positive = pooled_positives[needed - 1]
    assert point.threshold == pytest.approx(calibrator.transform([lowest_flagged_positive])[0])
    # Not the threshold tune alone would give.
    tune_only = sorted(tune_positives, reverse=True)[int(np.ceil(target * 16)) - 1]
    assert tune_only != lowest_flagged_positive
    assert outcome.entry.thresholds == {"nodule": point.threshold}
    negatives = [cases.arrays(split) for split in ("tune", "calibration")]
    flagged_negatives = sum(
        int(np.sum((calibrator.transform(logits) >= point.threshold) & (labels == 0)))
        for logits, labels in negatives
    )
    assert flagged_negatives == point.false_positives
    assert report.test_operating_point is None
    assert report.test_ece is None


def test_the_weights_hash_and_identity_are_kept(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cases = Cases()
    cases.add("calibration", _spread(0.0, 3.0, 6), 1)
    cases.add("calibration", _spread(-3.0, 1.0, 6), 0)
    cases.add("tune", _spread(0.0, 3.0, 5), 1)
    cases.add("tune", _spread(-3.0, 1.0, 5), 0)
    cases.add("test", [2.0, 0.5], 1)
    cases.add("test", [-2.0, 0.7], 0)
    manifest, _ = cases.manifest(tmp_path, monkeypatch)
    entry = replace(ENTRY, weights_file="w.pt", weights_sha256="ab" * 32)

    outcome = calibrate_model(nn.Identity(), entry, manifest, device=CPU, progress=False)

    kept = ("name", "version", "weights_file", "weights_sha256", "network", "transforms")
    assert all(getattr(outcome.entry, key) == getattr(entry, key) for key in kept)
    report = outcome.findings["nodule"]
    assert report.test_operating_point is not None
    assert report.test_operating_point.threshold == report.operating_point.threshold
    assert report.test_ece is not None and report.test_brier is not None


def test_per_site_calibrators_only_for_sites_with_enough_cases(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cases = Cases()
    # Site A: 60 cases, 12 positive, logits three times too confident.
    cases.add("calibration", _spread(3.0, 9.0, 12), 1, "Site A")
    cases.add("calibration", _spread(-9.0, 4.5, 48), 0, "Site A")
    # Site B: too few cases; Site C: enough cases but only 3 positives.
    cases.add("calibration", _spread(0.0, 2.0, 6), 1, "Site B")
    cases.add("calibration", _spread(-2.0, 0.5, 6), 0, "Site B")
    cases.add("calibration", _spread(0.5, 2.0, 3), 1, "Site C")
    cases.add("calibration", _spread(-2.0, 1.0, 52), 0, "Site C")
    cases.add("tune", _spread(0.0, 3.0, 10), 1, "Site B")
    cases.add("tune", _spread(-3.0, 1.0, 10), 0, "Site B")
    manifest, _ = cases.manifest(tmp_path, monkeypatch)

    outcome = calibrate_model(
        nn.Identity(), ENTRY, manifest, device=CPU, per_site=True, progress=False
    )

    entry = outcome.entry
    assert outcome.findings["nodule"].sites == ["Site A"]
    parameters = dict(entry.calibration["nodule"])
    per_site = parameters.pop(PER_SITE_KEY)
    assert set(per_site) == {"Site A"}
    all_logits, all_labels = cases.arrays("calibration")
    assert parameters == fit_calibrator(all_logits, all_labels).to_dict()
    site_logits, site_labels = cases.arrays("calibration", "Site A")
    assert per_site["Site A"] == fit_calibrator(site_logits, site_labels).to_dict()

    assert calibrator_for_site(entry, "nodule", "Site A").to_dict() == per_site["Site A"]
    for site in ("Site B", "Site C", "Never Seen", ""):
        assert calibrator_for_site(entry, "nodule", site).to_dict() == parameters

    logits = np.array([[2.0], [2.0], [2.0]])
    probabilities = calibrated_probabilities(entry, logits, ["Site A", "Site B", "Never Seen"])
    site_a = calibrator_for_site(entry, "nodule", "Site A").transform([2.0])[0]
    pooled = calibrator_for_site(entry, "nodule").transform([2.0])[0]
    assert site_a != pytest.approx(pooled)
    np.testing.assert_allclose(probabilities[:, 0], [site_a, pooled, pooled])
    np.testing.assert_allclose(calibrated_probabilities(entry, logits)[:, 0], [pooled] * 3)


def test_a_tune_split_without_positives_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cases = Cases()
    cases.add("calibration", [1.0, 2.0], 1)
    cases.add("calibration", [-1.0, -2.0], 0)
    cases.add("tune", [-1.0, 0.0], 0)
    manifest, _ = cases.manifest(tmp_path, monkeypatch)
    with pytest.raises(
        ValueError, match="finding nodule: the tune split needs positive and negative studies"
    ):
        calibrate_model(nn.Identity(), ENTRY, manifest, device=CPU, progress=False)


def test_a_missing_calibration_split_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cases = Cases()
    cases.add("tune", [1.0], 1)
    cases.add("tune", [-1.0], 0)
    manifest, _ = cases.manifest(tmp_path, monkeypatch)
    with pytest.raises(ValueError, match="no cxr study in the calibration split of"):
        calibrate_model(nn.Identity(), ENTRY, manifest, device=CPU, progress=False)


def test_given_split_scores_are_not_scored_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cases = Cases()
    cases.add("calibration", [1.0, 2.0], 1)
    cases.add("calibration", [-1.0, -2.0], 0)
    cases.add("tune", [1.5, 0.5], 1)
    cases.add("tune", [-1.5, 0.0], 0)
    manifest, scorer = cases.manifest(tmp_path, monkeypatch)
    logits, labels = cases.arrays("calibration")
    given = SplitScores(
        rows=[r for r in cases.rows if r.split == "calibration"],
        logits=logits.reshape(-1, 1),
        labels=labels.reshape(-1, 1),
    )
    calibrate_model(
        nn.Identity(),
        ENTRY,
        manifest,
        device=CPU,
        progress=False,
        splits={"calibration": given},
    )
    tune_uids = [r.study_instance_uid for r in cases.rows if r.split == "tune"]
    assert scorer.scored == tune_uids


def test_a_finding_whose_scores_do_not_separate_the_classes_is_marked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cases = Cases()
    # Calibration: positives and negatives get the same spread of logits (AUROC 0.5).
    cases.add("calibration", _spread(-1.0, 1.0, 8), 1)
    cases.add("calibration", _spread(-1.0, 1.0, 8), 0)
    cases.add("tune", _spread(-1.0, 1.0, 5), 1)
    cases.add("tune", _spread(-1.0, 1.0, 5), 0)
    manifest, _ = cases.manifest(tmp_path, monkeypatch)

    report = calibrate_model(nn.Identity(), ENTRY, manifest, device=CPU, progress=False)

    finding = report.findings["nodule"]
    assert finding.auroc == pytest.approx(0.5)
    assert not finding.discriminates
    table = format_calibration_table(report, 0.9)
    assert "warning: nodule does not discriminate on the calibration split (AUROC 0.500)" in table


def _graded_split(split: str) -> SplitScores:
    """Two eyes of each DR grade whose cut-point probabilities separate the grades only
    at thresholds other than one half at "grade >= 1" and ">= 4"."""
    grades = [0, 0, 1, 1, 2, 2, 3, 3, 4, 4]
    at_least_1 = {0: 0.1, 1: 0.4, 2: 0.9, 3: 0.9, 4: 0.9}
    at_least_3 = {0: 0.1, 1: 0.1, 2: 0.2, 3: 0.8, 4: 0.8}
    at_least_4 = {0: 0.1, 1: 0.1, 2: 0.1, 3: 0.1, 4: 0.3}
    rows = [
        ManifestRow(
            study_instance_uid=f"1.2.826.0.2.{split}.{index}",
            modality=Modality.FUNDUS,
            path=Path(f"{index}"),
            split=split,
            labels={"referable_dr": int(grade >= 2)},
            extra={"dr_grade": str(grade)},
        )
        for index, grade in enumerate(grades)
    ]

    def logit(p: float) -> float:
        return float(np.log(p / (1.0 - p)))

    return SplitScores(
        rows=rows,
        logits=np.array([[3.0 if g >= 2 else -3.0] for g in grades]),
        labels=np.array([[float(g >= 2)] for g in grades]),
        grade_logits=np.array(
            [[logit(at_least_1[g]), logit(at_least_3[g]), logit(at_least_4[g])] for g in grades]
        ),
    )


def test_a_grading_models_cut_points_get_the_thresholds_of_the_best_kappa() -> None:
    entry = replace(
        ENTRY,
        modality=Modality.FUNDUS,
        findings=("referable_dr",),
        grading="dr_grade",
    )
    empty = SplitScores(rows=[], logits=np.zeros((0, 1)), labels=np.zeros((0, 1)))
    splits = {"calibration": _graded_split("calibration"), "tune": _graded_split("tune")}
    outcome = calibrate_model(
        nn.Identity(),
        entry,
        Path("unused.csv"),
        device=CPU,
        progress=False,
        splits={**splits, "test": empty},
    )
    grading = outcome.grading
    assert grading is not None
    expected = {"dr_grade_ge_1": 0.4, "dr_grade_ge_3": 0.5, "dr_grade_ge_4": 0.3}
    assert grading.thresholds == outcome.entry.grade_thresholds == expected
    assert grading.cases == 20 and grading.kappa == pytest.approx(1.0)
    assert grading.kappa_at_half < 1.0  # grades 1 and 4 are missed at one half
    assert grading.test_kappa is None
    table = format_calibration_table(outcome, 0.9)
    assert "dr_grade: cut-point thresholds dr_grade_ge_1 0.40, dr_grade_ge_3 0.50" in table
    report = calibration_report(
        outcome, manifest=Path("m.csv"), target_sensitivity=0.9, per_site=False
    )
    assert report["grading"]["thresholds"] == expected
