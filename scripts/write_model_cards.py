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


def _acceptance_rows(acceptance: list[dict[str, Any]], modality: str) -> list[str]:
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
            shown = f"{value:.3f}" if isinstance(value, float) else str(value)
            extras.append(f"- {figures['kind']}: {key.replace('_', ' ')} {shown}")
    return [*rows, "", *extras] if len(rows) > 2 else ["Not measured yet."]


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
        lines.append(
            f"{len(epochs)} epochs; kept epoch {kept.get('kept_epoch', '?')} (best on the "
            "tuning split); per-epoch figures in "
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
        *_acceptance_rows(acceptance, entry.modality.value),
        "",
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
