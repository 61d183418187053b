"""Write docs/model_cards/<name>.md for every model of a registry folder.

Data first, then rendered: the card is made from the registry entry, the
training run's metrics log and calibration report (written by ``medvision
train``), and the held-out figures of ``benchmarks/model_acceptance.py --json``.

Usage::

    python scripts/write_model_cards.py --models medvision/models/weights \
        --acceptance docs/model_cards/acceptance.json --out docs/model_cards
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from medvision.calibration.recalibration import report_path_for
from medvision.grading import GradeScale
from medvision.models.registry import ModelEntry, load_registry

#: The line of scripts/train_bundled_models.sh that trains each modality.
TRAINING_SCRIPT = Path("scripts/train_bundled_models.sh")

INTENDED_USE = (
    "Demonstration and engineering of the medvision pipeline (DICOM in, calibrated "
    "findings out) on synthetic phantom studies. **Not for clinical use**: not "
    "validated on patient data, not cleared by any regulator, and never to be used "
    "for diagnosis, triage or any decision about a patient."
)


def _training_line(modality: str) -> str:
    """Return the commands of the script's ``case`` branch for ``modality``, one per line."""
    lines = [line.strip() for line in TRAINING_SCRIPT.read_text(encoding="utf-8").splitlines()]
    for index, line in enumerate(lines):
        if not line.startswith(f"{modality})"):
            continue
        branch = [line.removeprefix(f"{modality})").strip()]
        while not branch[-1].endswith(";;") and index + 1 < len(lines):
            index += 1
            branch.append(lines[index])
        branch[-1] = branch[-1].removesuffix(";;").strip()
        return "\n".join(part for part in branch if part)
    return "(not found in scripts/train_bundled_models.sh)"


def _studies_behind(findings: dict[str, Any]) -> str:
    """Return how many studies the thresholds were chosen on (from the calibration report)."""
    for figures in findings.values():
        point = figures["operating_point"]
        counts = ("true_positives", "false_negatives", "true_negatives", "false_positives")
        return f"{sum(int(point[name]) for name in counts):,}"
    return "an unknown number of"


def _metrics(models: Path, name: str) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    path = models / f"{name}.metrics.jsonl"
    if not path.exists():
        return [], {}
    lines = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]
    epochs = [line for line in lines if "epoch" in line]
    kept: dict[str, Any] = next((line for line in reversed(lines) if "kept_epoch" in line), {})
    return epochs, kept


def _initialised_from(models: Path, name: str) -> dict[str, Any]:
    """Return the metrics log's first line when it names the entry the run started from."""
    path = models / f"{name}.metrics.jsonl"
    lines = path.read_text(encoding="utf-8").splitlines() if path.exists() else []
    first: dict[str, Any] = json.loads(lines[0]) if lines else {}
    return first if "initialised_from" in first else {}


def _acceptance_rows(
    acceptance: list[dict[str, Any]], modality: str, grading: str = ""
) -> list[str]:
    rows = [
        "| set | finding | cases (positive) | AUROC | ECE | sensitivity (95 % CI) "
        "| specificity (95 % CI) |",
        "|---|---|---|---|---|---|---|",
    ]
    extras: list[str] = []
    for figures in acceptance:
        if figures["modality"] != modality:
            continue
        for f in figures["findings"]:
            rows.append(
                f"| {figures['kind']} | {f['finding']} | {f['cases']} ({f['positives']}) "
                f"| {f['auroc']:.3f} | {f['ece']:.3f} "
                f"| {f['sensitivity']:.3f} ({f['sensitivity_ci'][0]:.3f}–"
                f"{f['sensitivity_ci'][1]:.3f}) "
                f"| {f['specificity']:.3f} ({f['specificity_ci'][0]:.3f}–"
                f"{f['specificity_ci'][1]:.3f}) |"
            )
        for key, value in figures.get("extra", {}).items():
            if grading and key.startswith(f"{grading}_"):
                continue  # in the grading section
            shown = f"{value:.3f}" if isinstance(value, float) else str(value)
            extras.append(f"- {figures['kind']}: {key.replace('_', ' ')} {shown}")
    return [*rows, "", *extras] if len(rows) > 2 else ["Not measured yet."]


def _weak_grades(confusion: list[list[int]], scale: GradeScale) -> list[str]:
    """Return a line for each grade reported right for fewer than half its eyes."""
    lines = []
    for k, row in enumerate(confusion):
        total = sum(row)
        if not total or 2 * row[k] >= total:
            continue
        others = ", ".join(f"{count} as {j}" for j, count in enumerate(row) if j != k and count)
        lines.append(
            f"- {scale.title} {k} ({scale.levels[k]}): {row[k]} of {total} reported as {k}; "
            f"{others}."
        )
    return lines


def _grading_section(entry: ModelEntry, acceptance: list[dict[str, Any]]) -> list[str]:
    """Return the card's section on the grade the model reports (none if it does not grade)."""
    scale = entry.grade_scale
    if scale is None:
        return []
    name = scale.name
    levels = "; ".join(f"{k} {level}" for k, level in enumerate(scale.levels))
    lines = [
        f"## Grading: {name}",
        "",
        f"Beside {scale.finding} (grade {scale.finding_from} or more) the model reports the "
        f"grade ({levels}) from one output per further cut point "
        f"({', '.join(scale.output_names())}). "
        f"The grade agrees with the finding's decision: a flagged study is graded "
        f"{scale.finding_from} or more, an unflagged one below; within each side it is the "
        "highest cut point whose probability reaches its threshold (`medvision.grading`), "
        "chosen on the tune and calibration splits for the best quadratic weighted kappa: "
        + ", ".join(f"{name} {value:.2f}" for name, value in entry.grade_thresholds.items())
        + f". Only {scale.finding}'s probability is calibrated.",
        "",
    ]
    sets = [f for f in acceptance if f["modality"] == entry.modality.value]
    sets = [f for f in sets if f"{name}_quadratic_kappa" in f.get("extra", {})]
    if not sets:
        return [*lines, "Not measured yet.", ""]
    lines += [
        "| set | cases | quadratic weighted kappa (95 % CI) | exact | within one grade | "
        + " | ".join(f"AUROC grade ≥ {k}" for k in range(1, len(scale.levels)))
        + " |",
        "|---|---|---|---|---|" + "---|" * (len(scale.levels) - 1),
    ]
    for f in sets:
        extra = f["extra"]
        confusion = extra[f"{name}_confusion_rows_true"]
        lines.append(
            f"| {f['kind']} | {sum(sum(row) for row in confusion)} "
            f"| {extra[f'{name}_quadratic_kappa']:.3f} ({extra[f'{name}_quadratic_kappa_ci']}) "
            f"| {extra[f'{name}_exact']:.3f} | {extra[f'{name}_within_one']:.3f} | "
            + " | ".join(
                f"{extra[f'{name}_ge_{k}_auroc']:.3f}" for k in range(1, len(scale.levels))
            )
            + " |"
        )
    held_out = next((f for f in sets if f["kind"] == "held-out"), sets[0])
    weak = _weak_grades(held_out["extra"][f"{name}_confusion_rows_true"], scale)
    if weak:
        lines += ["", f"Grades mostly missed on the {held_out['kind']} phantoms:", "", *weak]
    for f in sets:
        confusion = f["extra"][f"{name}_confusion_rows_true"]
        lines += [
            "",
            f"{f['kind'].capitalize()}: true grade (rows) against reported grade (columns).",
            "",
            "| true grade | " + " | ".join(str(k) for k in range(len(confusion))) + " |",
            "|---|" + "---|" * len(confusion),
            *(
                f"| {k} | " + " | ".join(str(v) for v in row) + " |"
                for k, row in enumerate(confusion)
            ),
        ]
    return [*lines, ""]


def render_card(entry: ModelEntry, models: Path, acceptance: list[dict[str, Any]]) -> str:
    """Return the model card of ``entry`` as Markdown."""
    epochs, kept = _metrics(models, entry.name)
    report_path = report_path_for(models, entry.name)
    report = json.loads(report_path.read_text(encoding="utf-8")) if report_path.exists() else {}
    lines = [
        f"# Model card: {entry.name} {entry.version}",
        "",
        "> **Not for clinical use.** Trained and tested on synthetic phantoms only.",
        "",
        "## Identification",
        "",
        f"- modality: {entry.modality.value}; task: {entry.task.value}",
        f"- findings: {', '.join(entry.findings)}",
        f"- weights: `medvision/models/weights/{entry.weights_file}` (fp16), SHA-256 "
        f"`{entry.weights_sha256}`",
        f"- network: {entry.network.get('architecture')} "
        f"`{json.dumps({k: v for k, v in entry.network.items() if k != 'architecture'})}`",
        f"- input: transform chain `{entry.transforms.get('name')}` version "
        f"{entry.transforms.get('version')}, input size {list(entry.input_size)}",
        "",
        "## Intended use",
        "",
        INTENDED_USE,
        "",
        "## Training data and procedure",
        "",
        "Phantom studies from `medvision synth` (no patient data): three of the four "
        "phantom sites (Harbourview Medical Centre held out), prevalence 0.3 per finding "
        "before each site's odds, split by patient into train / tune / calibration / test. "
        "Made by `bash scripts/train_bundled_models.sh`, whose commands for this model are:",
        "",
        "```",
        _training_line(entry.modality.value),
        "```",
        "",
    ]
    if epochs:
        start = _initialised_from(models, entry.name)
        origin = (
            f"Started from `{start['initialised_from']}` (weights SHA-256 "
            f"`{start['weights_sha256']}`); "
            if start
            else ""
        )
        lines.append(
            f"{origin}{len(epochs)} epochs; kept epoch {kept.get('kept_epoch', '?')} (best on "
            "the tuning split); per-epoch figures in "
            f"`medvision/models/weights/{entry.name}.metrics.jsonl`."
        )
        lines.append("")
    lines += ["## Calibration and operating points", ""]
    findings = report.get("findings", {})
    if findings:
        lines += [
            "| finding | method | ECE before → after (calibration split) | threshold "
            "| sensitivity where chosen (95 % CI) |",
            "|---|---|---|---|---|",
        ]
        for name, f in findings.items():
            tune = f["operating_point"]
            lines.append(
                f"| {name} | {f['method']} | {f['ece_before']:.3f} → {f['ece_after']:.3f} "
                f"| {f['threshold']:.4f} | {tune['sensitivity']:.3f} "
                f"({tune['sensitivity_ci'][0]:.3f}–{tune['sensitivity_ci'][1]:.3f}) |"
            )
        lines.append("")
        lines.append(
            "Thresholds target sensitivity 0.90 on the tune and calibration splits "
            f"of `{report.get('manifest', '?')}` together; "
            "calibration is fitted on its calibration split. "
            "Probabilities are calibrated for the enriched phantom population "
            "(prevalence about 0.3); a "
            "site with another prevalence must recalibrate (`medvision calibrate`)."
        )
    else:
        lines.append("No calibration report found.")
    lines += [
        "",
        "## Held-out performance",
        "",
        "Fresh phantom sets (seeds no training run used): `held-out` from the training "
        "sites, `shifted` from the held-out site. Measured with "
        "`python benchmarks/model_acceptance.py --models medvision/models/weights "
        "--out build/acceptance --json docs/model_cards/acceptance.json`.",
        "",
        *_acceptance_rows(acceptance, entry.modality.value, entry.grading),
        "",
        *_grading_section(entry, acceptance),
        "## Limitations",
        "",
        "- Phantoms are simple: real anatomy, pathology and artefacts are far richer. "
        "Nothing here says how the model would do on patients.",
        "- The shifted-site figures show the domain-shift gap on phantoms only.",
        f"- The operating threshold was chosen on {_studies_behind(findings)} phantom "
        "studies (tune and calibration splits); its sensitivity on new data has the "
        "confidence interval shown, not a guarantee.",
        "- Locations: see the explanation and segmentation outputs; classifiers give no "
        "location of their own.",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    """Write one card per registry entry."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--models", type=Path, required=True)
    parser.add_argument("--acceptance", type=Path, default=None)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    acceptance: list[dict[str, Any]] = []
    if args.acceptance and args.acceptance.exists():
        acceptance = json.loads(args.acceptance.read_text(encoding="utf-8"))
    args.out.mkdir(parents=True, exist_ok=True)
    for entry in load_registry(args.models).values():
        path = args.out / f"{entry.name}.md"
        path.write_text(render_card(entry, args.models, acceptance), encoding="utf-8")
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
