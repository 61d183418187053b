"""The ``medvision`` command line: each subcommand parses its arguments and calls a typed API.

Errors in what the user typed or in the data end the command with a one-line
message on standard error and a non-zero exit status, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

from medvision import __version__

if TYPE_CHECKING:
    from medvision.pipeline.results import AnalysisRun
    from validation.ct_inputs import CtScan
    from validation.inference import ModelRun
    from validation.inputs import ValidationInputs
    from validation.protocol import Protocol
    from validation.segmentation import ScanFigures

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2


class UsageError(Exception):
    """A bad command-line argument; reported as one line with exit status 2."""


class _Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line, without the usage block."""

    def error(self, message: str) -> NoReturn:
        """Report a usage error in one line and exit with status 2."""
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


def _non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got '{text}'") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {value}")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got '{text}'") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {value}")
    return value


def _assignments(items: Sequence[str], what: str, default_key: str | None) -> dict[str, float]:
    """Parse ``NAME=VALUE`` items (or a lone number, keyed ``default_key``)."""
    parsed: dict[str, float] = {}
    for item in items:
        name, sep, value = item.rpartition("=")
        if not sep:
            if default_key is None:
                raise UsageError(f"{what}: expected NAME=VALUE, got '{item}'")
            name, value = default_key, item
        try:
            parsed[name.strip()] = float(value)
        except ValueError:
            raise UsageError(f"{what}: '{value}' is not a number (in '{item}')") from None
    return parsed


def _synth(args: argparse.Namespace) -> int:
    from medvision.data.summary import format_summary, summarise
    from medvision.modality import Modality
    from medvision.synth.catalogue import SITES, device_named, site_named
    from medvision.synth.generator import SynthConfig, generate, modality_generator

    if args.modality == "all":
        modalities = tuple(Modality)
    else:
        try:
            modalities = (Modality.parse(args.modality),)
        except ValueError as error:
            raise UsageError(str(error)) from None
    try:
        sites = tuple(site_named(name) for name in args.sites) if args.sites else SITES
    except ValueError as error:
        raise UsageError(str(error)) from None
    prevalence = _assignments(args.prevalence or [], "--prevalence", "*")
    known = {f for m in modalities for f in modality_generator(m).DEFAULT_PREVALENCE}
    unknown = sorted(set(prevalence) - known - {"*"})
    if unknown:
        raise UsageError(
            f"--prevalence: unknown finding(s) {', '.join(unknown)} for "
            f"{'/'.join(m.value for m in modalities)} (known: {', '.join(sorted(known))})"
        )
    conspicuity = _assignments(args.device_conspicuity or [], "--device-conspicuity", None)
    for model in conspicuity:
        try:
            device_named(model)
        except ValueError as error:
            raise UsageError(str(error)) from None
    nodule_types = _assignments(args.nodule_types or [], "--nodule-types", None)
    if nodule_types and Modality.CT not in modalities:
        raise UsageError("--nodule-types applies to CT phantoms only")
    try:
        config = SynthConfig(
            modalities=modalities,
            studies=args.studies,
            seed=args.seed,
            out=args.out,
            sites=sites,
            prevalence=prevalence,
            difficulty=args.difficulty,
            device_conspicuity=conspicuity,
            nodule_types=nodule_types,
            split=args.split,
            workers=args.workers,
        )
    except ValueError as error:
        raise UsageError(str(error)) from None
    rows = generate(config, progress=not args.no_progress)
    print(f"wrote {len(rows)} studies and {args.out / 'manifest.csv'}")
    print(format_summary(summarise(rows)))
    return EXIT_OK


def _manifest(args: argparse.Namespace) -> int:
    from medvision.data.importer import build_manifest
    from medvision.data.manifest import write_manifest
    from medvision.data.summary import format_summary, summarise

    for path, what in ((args.dicom, "--dicom"), (args.labels, "--labels")):
        if not path.exists():
            raise UsageError(f"{what}: {path} does not exist")
    report = build_manifest(args.dicom, args.labels, args.out)
    for _path, reason in report.rejected_files:
        print(f"skipped file: {reason}", file=sys.stderr)
    for uid, dicom_modality in report.unserved_studies:
        print(
            f"skipped study {uid}: no medvision model serves DICOM modality '{dicom_modality}'",
            file=sys.stderr,
        )
    for uid in report.unlabelled_studies:
        print(
            f"study {uid} has no row in {args.labels}: written with empty labels", file=sys.stderr
        )
    for uid in report.labels_without_images:
        print(f"labels row {uid} has no images in {args.dicom}: not written", file=sys.stderr)
    if not report.rows:
        print(f"medvision manifest: error: no usable study found in {args.dicom}", file=sys.stderr)
        return EXIT_FAILURE
    write_manifest(report.rows, args.out)
    print(f"wrote {len(report.rows)} studies to {args.out}")
    print(format_summary(summarise(report.rows)))
    return EXIT_OK


def _baseline(args: argparse.Namespace) -> int:
    from medvision.baseline.naive import (
        evaluate_naive_baseline,
        format_baseline,
        write_baseline_predictions,
    )
    from medvision.data.manifest import read_manifest

    if not args.manifest.exists():
        raise UsageError(f"--manifest: {args.manifest} does not exist")
    rows = read_manifest(args.manifest)
    results = evaluate_naive_baseline(rows, args.manifest, progress=not args.no_progress)
    print(format_baseline(results))
    if args.predictions_out is not None:
        written = write_baseline_predictions(results, rows, args.predictions_out)
        print(f"wrote {written} test-split predictions to {args.predictions_out}")
    return EXIT_OK


def _train(args: argparse.Namespace) -> int:
    from medvision.calibration.recalibration import report_path_for
    from medvision.calibration.refit import CalibrationOutcome
    from medvision.calibration.report import calibration_report, format_calibration_table
    from medvision.modality import Modality
    from medvision.training import TrainOptions, train_model

    if not args.manifest.exists():
        raise UsageError(f"--manifest: {args.manifest} does not exist")
    _check_device(args.device)
    try:
        options = TrainOptions(
            modality=Modality.parse(args.modality),
            manifest=args.manifest,
            out=args.out,
            epochs=args.epochs,
            batch_size=args.batch_size,
            learning_rate=args.learning_rate,
            seed=args.seed,
            loss=args.loss,
            balanced_sampler=args.balanced_sampler,
            target_sensitivity=args.target_sensitivity,
            device=args.device,
            max_studies=args.max_studies,
            name=args.name or "",
            lesion_masks=args.lesion_masks,
            input_size=tuple(args.input_size) if args.input_size else None,
            patch_size=tuple(args.patch_size) if args.patch_size else None,
            patches_per_view=args.patches_per_view,
            patch_symmetries=args.patch_symmetries,
            workers=args.workers,
            time_limit_seconds=args.time_limit,
            init_from=args.init_from,
            spacing_mm=tuple(args.spacing) if args.spacing else None,
            positive_fraction=args.positive_fraction,
            dice_per_patch=args.dice_per_patch,
            dot_enhancement=args.dot_enhancement,
            lesion_contrast=tuple(args.lesion_contrast) if args.lesion_contrast else None,
            hard_negatives=args.hard_negatives,
            grade=args.grade,
            grade_only=args.grade_only,
            network=_read_network(args.network) if args.network else {},
        )
    except ValueError as error:
        raise UsageError(str(error)) from None
    try:
        result = train_model(options, progress=not args.no_progress)
    except ValueError as error:
        raise UsageError(str(error)) from None
    entry = result.entry
    outcome = CalibrationOutcome(entry=entry, findings=result.calibration, grading=result.grading)
    report = calibration_report(
        outcome,
        manifest=args.manifest,
        target_sensitivity=args.target_sensitivity,
        per_site=False,
    )
    report_path = report_path_for(args.out, entry.name)
    report_path.parent.mkdir(parents=True, exist_ok=True)
    report_path.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(
        f"wrote {args.out / entry.weights_file} (sha256 {entry.weights_sha256}), "
        f"{args.out / (entry.name + '.json')} and {report_path}; kept epoch {result.kept_epoch} "
        f"of {result.epochs_run}"
        + (f" (time limit; {args.epochs} asked for)" if result.epochs_run < args.epochs else "")
    )
    print(format_calibration_table(outcome, args.target_sensitivity))
    for name, value in result.test_figures.items():
        print(f"test {name}: {value:.3f}")
    return EXIT_OK


def _positive_int(text: str) -> int:
    value = _non_negative_int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more, got {value}")
    return value


def _count(number: int, singular: str, plural: str) -> str:
    return f"{number} {singular if number == 1 else plural}"


def _read_network(path: Path) -> dict[str, object]:
    """Return the network description in ``path`` (a JSON object)."""
    try:
        description = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UsageError(f"--network: {path} does not exist") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise UsageError(f"--network: {path} is not readable JSON ({error})") from None
    if not isinstance(description, dict):
        raise UsageError(f"--network: {path} must hold a JSON object")
    return description


def _check_device(preference: str) -> None:
    """Refuse ``--device cuda`` on a machine without a GPU, before any work is done."""
    from medvision.training.loop import select_device

    try:
        select_device(preference)
    except ValueError as error:
        raise UsageError(str(error)) from None


def _analyze_paths(
    args: argparse.Namespace, command: str, explain: str = "none"
) -> AnalysisRun | None:
    """Run the analysis of ``medvision predict`` and ``explain``; ``None`` if nothing was analysed.

    Problems are printed one per line; when no study could be analysed the error
    is printed too and ``None`` returned (the caller exits non-zero).
    """
    from medvision.models.registry import BUNDLED_WEIGHTS
    from medvision.pipeline import NoModelError, analyze

    for path in args.paths:
        if not path.exists():
            raise UsageError(f"{path} does not exist")
    registry: Path = args.models or BUNDLED_WEIGHTS
    if args.models is not None and not args.models.is_dir():
        raise UsageError(f"--models: {args.models} is not a folder")
    _check_device(args.device)
    try:
        run = analyze(
            args.paths,
            registry=registry,
            device=args.device,
            batch_size=args.batch_size,
            progress=not args.no_progress,
            explain=explain,
        )
    except NoModelError:
        if args.models is None:
            raise UsageError(
                f"the bundled weights are not installed ({BUNDLED_WEIGHTS} has no model); "
                "train one with 'medvision train --modality cxr --manifest MANIFEST --out DIR' "
                "and pass --models DIR"
            ) from None
        raise UsageError(
            f"--models: no model entry (<name>.json) in {registry}; train one there with "
            f"'medvision train --modality cxr --manifest MANIFEST --out {registry}'"
        ) from None
    for problem in run.problems:
        print(f"skipped {problem}", file=sys.stderr)
    if not run.results:
        print(
            f"medvision {command}: error: no study could be analysed ({len(run.problems)} "
            "problem(s) above)",
            file=sys.stderr,
        )
        return None
    return run


def _predict(args: argparse.Namespace) -> int:
    from medvision.pipeline import write_predictions

    run = _analyze_paths(args, "predict", "flagged" if args.dicom_out else "none")
    if run is None:
        return EXIT_FAILURE
    studies = len(run.results)
    flagged = sum(f.flagged for result in run.results for f in result.findings)
    rows = write_predictions(run, args.out)
    print(
        f"analysed {_count(studies, 'study', 'studies')} ({rows} findings, {flagged} flagged); "
        f"{_count(len(run.problems), 'problem', 'problems')}; wrote {args.out}"
    )
    if args.dicom_out:
        from medvision.pipeline.overlays import write_secondary_captures
        from medvision.pipeline.reports import write_segmentations, write_structured_reports

        _print_explanation_notes(run)
        reports = write_structured_reports(run, args.paths, args.dicom_out)
        segmentations = write_segmentations(run, args.paths, args.dicom_out)
        captures = write_secondary_captures(run, args.paths, args.dicom_out)
        print(
            f"wrote {_count(len(reports), 'SR document', 'SR documents')}, "
            f"{_count(len(segmentations), 'segmentation', 'segmentations')} and "
            f"{_count(len(captures), 'heatmap Secondary Capture', 'heatmap Secondary Captures')}"
            f" to {args.dicom_out}"
        )
    return EXIT_OK


def _print_explanation_notes(run: AnalysisRun) -> None:
    """Print, for each finding whose explanation is missing, why (standard error)."""
    for result in run.results:
        for finding in result.findings:
            if finding.explanation_note:
                print(
                    f"study {result.study_instance_uid}, {finding.name}: "
                    f"{finding.explanation_note}",
                    file=sys.stderr,
                )


def _explain(args: argparse.Namespace) -> int:
    from medvision.pipeline.overlays import write_overlays

    run = _analyze_paths(args, "explain", "all" if args.all_findings else "flagged")
    if run is None:
        return EXIT_FAILURE
    _print_explanation_notes(run)
    written = write_overlays(run, args.paths, args.out)
    print(
        f"analysed {_count(len(run.results), 'study', 'studies')}; "
        f"{_count(len(run.problems), 'problem', 'problems')}; "
        f"wrote {_count(len(written), 'overlay', 'overlays')} to {args.out}"
    )
    return EXIT_OK


def _model_predictions(args: argparse.Namespace) -> ModelRun:
    """Run ``--model`` over ``--data`` (or find its cached run); return where it left outputs."""
    from medvision.models.registry import BUNDLED_WEIGHTS
    from validation.inference import model_predictions

    if args.data is None or not args.data.is_dir():
        raise UsageError(f"--model needs --data DIR, a folder of DICOM studies (got {args.data})")
    _check_device(args.device)
    registry = args.models or BUNDLED_WEIGHTS
    try:
        run = model_predictions(
            args.model,
            registry,
            args.data,
            args.out,
            device=args.device,
            progress=not args.no_progress,
        )
    except ValueError as error:
        raise UsageError(str(error)) from None
    print(
        f"{'reused cached' if run.cached else 'wrote'} predictions of {args.model}: "
        f"{run.predictions}"
    )
    return run


def _ct_scan_figures(
    args: argparse.Namespace, inputs: ValidationInputs, protocol: Protocol
) -> tuple[list[CtScan], ScanFigures] | None:
    """Read a CT protocol's masks and candidates; ``None`` when neither was given."""
    from medvision.data.manifest import read_manifest
    from medvision.modality import Modality
    from validation.ct_inputs import CtInputsError, ct_scans
    from validation.protocol import SEGMENTATION_CRITERIA
    from validation.segmentation import scan_figures

    needs = {
        "--segmentations": [
            c for c in protocol.acceptance if c in SEGMENTATION_CRITERIA and "detection" not in c
        ],
        "--detections": [c for c in protocol.acceptance if c.startswith("detection")],
    }
    given = {"--segmentations": args.segmentations, "--detections": args.detections}
    if protocol.modality != Modality.CT:
        if any(given.values()):
            raise UsageError("--segmentations and --detections apply to CT protocols only")
        return None
    for option, criteria in needs.items():
        if criteria and given[option] is None:
            raise UsageError(
                f"the protocol's {', '.join(criteria)} needs {option} (or --model with a CT "
                "segmenter, which writes its own)"
            )
    if not any(given.values()):
        return None
    analysed = {case.study_instance_uid for case in inputs.cases}
    rows = [r for r in read_manifest(args.manifest) if r.study_instance_uid in analysed]
    try:
        scans, problems = ct_scans(
            rows, args.manifest, segmentations=args.segmentations, detections=args.detections
        )
    except CtInputsError as error:
        raise UsageError(str(error)) from None
    inputs.problems.extend(problems)
    for problem in problems:
        print(f"input: {problem}", file=sys.stderr)
    if not scans:
        raise UsageError("no analysed CT study has ground truth for the segmentation figures")
    return scans, scan_figures(scans, protocol.min_nodule_diameter_mm)


def _validate(args: argparse.Namespace) -> int:
    from medvision.data.manifest import ManifestError
    from medvision.models.registry import sha256_of
    from validation.inputs import PredictionsError, load_inputs
    from validation.protocol import ProtocolError, load_protocol
    from validation.render import write_html, write_pdf
    from validation.report import build_report, failure_line, write_report_json
    from validation.subgroups import Verdict, detection_by_nodule_type, evaluate

    if not args.manifest.is_file():
        raise UsageError(f"--manifest: {args.manifest} does not exist")
    try:
        protocol = load_protocol(args.protocol)
    except ProtocolError as error:
        raise UsageError(str(error)) from None
    predictions = args.predictions
    if args.model is not None:
        run = _model_predictions(args)
        predictions = run.predictions
        args.segmentations = args.segmentations or run.segmentations
        args.detections = args.detections or run.detections
    elif not predictions.is_file():
        raise UsageError(f"--predictions: {predictions} does not exist")
    try:
        inputs = load_inputs(predictions, args.manifest, protocol)
    except (ProtocolError, PredictionsError, ManifestError) as error:
        raise UsageError(str(error)) from None
    for problem in inputs.problems:
        print(f"input: {problem}", file=sys.stderr)
    if not inputs.cases:
        raise UsageError(
            f"no case of {protocol.modality.value} {protocol.finding} with both a prediction "
            "and a reference label (input problems above)"
        )
    ct = _ct_scan_figures(args, inputs, protocol)
    groups = evaluate(inputs.cases, protocol, None if ct is None else ct[1])
    report = build_report(
        groups,
        inputs,
        protocol,
        predictions_sha256=sha256_of(predictions),
        manifest_sha256=sha256_of(args.manifest),
        scans=None if ct is None else ct[0],
        nodule_types=None
        if ct is None
        else detection_by_nodule_type(inputs.cases, protocol, ct[1]),
    )
    write_report_json(report, args.out / "report.json")
    write_html(report, inputs.cases, args.out / "report.html")
    write_pdf(report, inputs.cases, args.out / "report.pdf")
    failures = report["acceptance"]["failures"]
    for failure in failures:
        print(failure_line(failure))
    verdicts = [v for g in groups for v in g.acceptance.values()]
    not_judged = sum(v == Verdict.NOT_JUDGED for v in verdicts)
    print(
        f"{protocol.name}: {len(inputs.cases)} cases, {len(groups)} groups, "
        f"{len(failures)} of {len(verdicts)} criteria failing, {not_judged} not judged "
        f"(too few cases); wrote report.json, report.html and report.pdf to {args.out}"
    )
    return EXIT_OK if not failures else EXIT_FAILURE


def _calibrate(args: argparse.Namespace) -> int:
    from medvision.calibration.recalibration import recalibrate
    from medvision.calibration.report import format_calibration_table

    if not args.model.is_file():
        raise UsageError(f"--model: {args.model} does not exist")
    if not args.manifest.is_file():
        raise UsageError(f"--manifest: {args.manifest} does not exist")
    if not 0.0 < args.target_sensitivity < 1.0:
        raise UsageError(f"--target-sensitivity must be in (0, 1), got {args.target_sensitivity}")
    _check_device(args.device)
    if args.test_time_looks is not None:
        from medvision.models.registry import read_entry, with_test_time_looks

        try:
            with_test_time_looks(read_entry(args.model), args.test_time_looks)
        except ValueError as error:
            raise UsageError(f"--test-time-looks: {error}") from None
    result = recalibrate(
        args.model,
        args.manifest,
        out=args.out,
        target_sensitivity=args.target_sensitivity,
        per_site=args.per_site,
        min_site_cases=args.min_site_cases,
        device=args.device,
        progress=not args.no_progress,
        test_time_looks=args.test_time_looks,
    )
    entry = result.outcome.entry
    print(format_calibration_table(result.outcome, args.target_sensitivity))
    print(
        f"wrote {result.entry_path} (weights sha256 {entry.weights_sha256}, unchanged) "
        f"and {result.report_path}"
    )
    return EXIT_OK


def _analysis_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the arguments ``predict`` and ``explain`` share."""
    parser.add_argument(
        "paths", nargs="+", type=Path, metavar="DIR_OR_FILE", help="DICOM files or folders"
    )
    parser.add_argument(
        "--models", type=Path, help="registry folder (default: the bundled weights)"
    )
    parser.add_argument(
        "--device", choices=["auto", "cpu", "cuda"], default="auto", help="default: auto"
    )
    parser.add_argument(
        "--batch-size", type=_positive_int, default=16, help="studies scored at once"
    )
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def build_parser() -> argparse.ArgumentParser:
    """Return the parser of the ``medvision`` command."""
    parser = _Parser(prog="medvision", description=__doc__)
    parser.add_argument("--version", action="version", version=f"medvision {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    synth = commands.add_parser(
        "synth",
        help="generate multi-site DICOM phantom studies with ground truth",
        description="Generate phantom DICOM studies, ground truth and DIR/manifest.csv.",
    )
    synth.add_argument(
        "--modality", default="all", help="cxr, fundus, mammo, ct or all (default: all)"
    )
    synth.add_argument(
        "--studies", type=_non_negative_int, default=20, help="studies per modality (default: 20)"
    )
    synth.add_argument("--seed", type=_non_negative_int, default=0, help="random seed")
    synth.add_argument("--out", type=Path, required=True, help="output folder")
    synth.add_argument(
        "--sites",
        nargs="+",
        metavar="INSTITUTION",
        help="draw studies only from these sites (InstitutionName)",
    )
    synth.add_argument(
        "--prevalence",
        nargs="+",
        metavar="FINDING=P",
        help="prevalence per finding before the site multiplier, or one number for every finding",
    )
    synth.add_argument(
        "--difficulty",
        type=_positive_float,
        default=1.0,
        help="divide lesion contrast by this (default 1; 2 is subtler)",
    )
    synth.add_argument(
        "--device-conspicuity",
        nargs="+",
        metavar="MODEL=FACTOR",
        help="multiply lesion contrast on a device (below 1 is harder)",
    )
    synth.add_argument(
        "--nodule-types",
        nargs="+",
        metavar="TYPE=WEIGHT",
        help="CT: weights of solid, part_solid and ground_glass nodules (types not named: "
        "none; default 0.7, 0.15, 0.15)",
    )
    synth.add_argument(
        "--split",
        choices=["train", "tune", "calibration", "test"],
        help="put every study in this split (e.g. test for a held-out set)",
    )
    synth.add_argument(
        "--workers",
        type=_non_negative_int,
        default=0,
        help="worker processes (default: one per CPU core)",
    )
    synth.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    synth.set_defaults(handler=_synth)

    manifest = commands.add_parser(
        "manifest",
        help="build a manifest from a folder of DICOM and a labels CSV",
        description="Build a manifest.csv from your own DICOM studies and labels.",
    )
    manifest.add_argument("--dicom", type=Path, required=True, help="folder of DICOM files")
    manifest.add_argument(
        "--labels",
        type=Path,
        required=True,
        help="CSV with study_instance_uid and 0/1 finding columns",
    )
    manifest.add_argument("--out", type=Path, required=True, help="manifest CSV to write")
    manifest.set_defaults(handler=_manifest)

    baseline = commands.add_parser(
        "baseline",
        help="naive baseline: logistic regression on 32x32 pixels",
        description="Train and test the naive baseline on a manifest's train/test splits.",
    )
    baseline.add_argument("--manifest", type=Path, required=True)
    baseline.add_argument(
        "--predictions-out",
        type=Path,
        help="also write the test-split scores as a predictions CSV (for medvision validate)",
    )
    baseline.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    baseline.set_defaults(handler=_baseline)

    train = commands.add_parser(
        "train",
        help="train, calibrate and register a model from a manifest",
        description="Train on the train split, calibrate on calibration, pick thresholds on "
        "tune, report held-out figures on test; write fp16 weights, a registry entry and "
        "reports/<name>/calibration_report.json.",
    )
    train.add_argument("--modality", required=True, help="cxr, fundus, mammo or ct")
    train.add_argument("--manifest", type=Path, required=True)
    train.add_argument("--out", type=Path, required=True, help="folder for weights and entry")
    train.add_argument("--epochs", type=_non_negative_int, default=12)
    train.add_argument("--batch-size", type=_non_negative_int, default=16)
    train.add_argument("--learning-rate", type=_positive_float, default=2e-3)
    train.add_argument("--seed", type=_non_negative_int, default=0)
    train.add_argument(
        "--loss",
        default="class_balanced_focal",
        help="bce, focal or class_balanced_focal (default); for ct the term beside Dice: "
        "bce gives Dice + cross-entropy, the others Dice + focal",
    )
    train.add_argument(
        "--balanced-sampler",
        action="store_true",
        help="draw studies with a finding as often as studies without",
    )
    train.add_argument(
        "--lesion-masks",
        action="store_true",
        help="also train the classifier's evidence maps on the ground-truth lesion masks",
    )
    train.add_argument("--target-sensitivity", type=_positive_float, default=0.90)
    train.add_argument("--device", default="auto", help="auto (default), cpu or cuda")
    train.add_argument(
        "--max-studies",
        type=_non_negative_int,
        default=None,
        help="at most this many studies per split (quick runs)",
    )
    train.add_argument(
        "--input-size",
        type=_positive_int,
        nargs=2,
        metavar=("ROWS", "COLUMNS"),
        help="network input of a 2-D modality (default: the chain's, e.g. 256 192 for mammo)",
    )
    train.add_argument(
        "--patch-size",
        type=_positive_int,
        nargs=2,
        metavar=("ROWS", "COLUMNS"),
        help="mammo with --lesion-masks: train on patches of this size cut from each view, "
        "some around its lesion (serving still scores whole views)",
    )
    train.add_argument(
        "--patches-per-view",
        type=_positive_int,
        default=4,
        help="with --patch-size: patches cut from each view per epoch (default 4)",
    )
    train.add_argument(
        "--patch-symmetries",
        action="store_true",
        help="with --patch-size, or for ct: flip patches and turn square ones (ct: in the "
        "axial plane) by 90 degrees at random",
    )
    train.add_argument(
        "--workers",
        type=_non_negative_int,
        default=0,
        help="loader processes for training batches and threads for loading studies "
        "(default 0: all in this process)",
    )
    train.add_argument(
        "--time-limit",
        type=_positive_float,
        metavar="SECONDS",
        help="end the training epochs within SECONDS of the first one's start: after the "
        "first epoch the run shrinks to the epochs that fit (shorter cosine schedule) and "
        "keeps its best epoch; loading and calibration come on top",
    )
    train.add_argument(
        "--spacing",
        type=_positive_float,
        nargs=3,
        metavar="MM",
        help="ct: resample volumes to this voxel spacing (R A S, mm) instead of the chain's "
        "2 2 2; recorded in the entry, so serving uses it too",
    )
    train.add_argument(
        "--positive-fraction",
        type=_positive_float,
        metavar="SHARE",
        help="ct: share of training patches cut around a nodule (default 0.67); the others "
        "are centred on dense tissue",
    )
    train.add_argument(
        "--dice-per-patch",
        action="store_true",
        help="ct: the loss's Dice term per patch, averaged (each nodule weighs the same), "
        "instead of over the batch",
    )
    train.add_argument(
        "--dot-enhancement",
        action="store_true",
        help="ct: give the network a second input channel, the Hessian dot filter of the "
        "CT (blobs such as nodules light up, vessels do not); recorded in the entry",
    )
    train.add_argument(
        "--lesion-contrast",
        nargs=2,
        type=float,
        metavar=("LOW", "HIGH"),
        help="ct: fade the nodules of half the training patches that hold one to a random "
        "share of their contrast in [LOW, HIGH], so faint nodules are seen as often as "
        "solid ones",
    )
    train.add_argument(
        "--hard-negatives",
        type=_positive_float,
        metavar="SHARE",
        help="ct: centre this share of the patches without a nodule on the train scans' mined "
        "false positives (manifest from scripts/mine_ct_hard_negatives.py); mammo with "
        "--patch-size: this share of the patches without a malignant lesion on the views' "
        "benign lesions",
    )
    train.add_argument(
        "--grade",
        action="store_true",
        help="fundus: also learn the DR grade 0-4 (manifest column dr_grade), one output per "
        "cut point beside referable_dr; predictions then report the grade",
    )
    train.add_argument(
        "--grade-only",
        action="store_true",
        help="with --grade and --init-from: train only the grade's outputs on the frozen "
        "model, whose findings stay exactly as they were",
    )
    train.add_argument(
        "--init-from",
        type=Path,
        metavar="ENTRY.json",
        help="start from this registry entry's verified weights (and network) instead of "
        "a fresh initialisation, e.g. to fine-tune or to go on from a run made elsewhere",
    )
    train.add_argument(
        "--network",
        type=Path,
        metavar="FILE.json",
        help="train this network description (a JSON object as a registry entry's "
        '"network", e.g. {"architecture": "unet", ...}) instead of the modality\'s default',
    )
    train.add_argument("--name", help="model name (default: <modality>-densenet, ct-unet for ct)")
    train.add_argument("--no-progress", action="store_true", help="hide progress bars")
    train.set_defaults(handler=_train)

    predict = commands.add_parser(
        "predict",
        help="analyse DICOM studies and write calibrated findings to a CSV",
        description="Analyse the DICOM studies in files and folders with the registry's "
        "models; write one row per study and finding (see docs/predictions.md).",
    )
    predict.add_argument("--out", type=Path, required=True, help="predictions CSV to write")
    predict.add_argument(
        "--dicom-out",
        type=Path,
        help="also write DICOM results here: one TID 1500 SR per study, and each flagged "
        "finding's Grad-CAM heatmap as a Secondary Capture image",
    )
    _analysis_arguments(predict)
    predict.set_defaults(handler=_predict)

    explain = commands.add_parser(
        "explain",
        help="analyse DICOM studies and render Grad-CAM overlays of their findings as PNG",
        description="Analyse the DICOM studies as 'predict' does and write, for each flagged "
        "finding (--all-findings: every finding), its Grad-CAM heatmap over the source image "
        "with a legend (see docs/explanations.md).",
    )
    explain.add_argument("--out", type=Path, required=True, help="folder for the PNG files")
    explain.add_argument(
        "--all-findings", action="store_true", help="explain every finding, not only flagged ones"
    )
    _analysis_arguments(explain)
    explain.set_defaults(handler=_explain)

    calibrate = commands.add_parser(
        "calibrate",
        help="refit a model's calibration and thresholds on a manifest",
        description="Refit calibration on the calibration split and thresholds on tune + "
        "calibration (weights unchanged); write the entry and "
        "reports/<name>/calibration_report.json.",
    )
    calibrate.add_argument(
        "--model", type=Path, required=True, metavar="DIR/NAME.json", help="registry entry"
    )
    calibrate.add_argument("--manifest", type=Path, required=True)
    calibrate.add_argument(
        "--out", type=Path, help="folder for the updated model (default: update it in place)"
    )
    calibrate.add_argument("--target-sensitivity", type=_positive_float, default=0.90)
    calibrate.add_argument(
        "--per-site",
        action="store_true",
        help="also fit a calibrator per site with enough calibration cases",
    )
    calibrate.add_argument(
        "--min-site-cases",
        type=_positive_int,
        default=50,
        help="calibration cases a site needs for its own calibrator (default: 50)",
    )
    calibrate.add_argument(
        "--test-time-looks",
        type=_positive_int,
        metavar="N",
        help="mammography models trained with --patch-symmetries: score each view as the "
        "mean evidence of this many mirror images (1, 2 or 4), calibrated as such "
        "(default: keep the model's)",
    )
    calibrate.add_argument(
        "--device", choices=["auto", "cpu", "cuda"], default="auto", help="default: auto"
    )
    calibrate.add_argument("--no-progress", action="store_true", help="hide progress bars")
    calibrate.set_defaults(handler=_calibrate)

    validate = commands.add_parser(
        "validate",
        help="compute a validation protocol's figures from predictions and a manifest",
        description="Join a predictions CSV (medvision predict's, or another system's in the "
        "same columns) to a labelled manifest, compute every figure of the protocol overall "
        "and per subgroup, and write DIR/report.json, report.html and report.pdf (see "
        "docs/validation.md). Exit status 0: "
        "every acceptance criterion passed; 1: the report was written and a criterion failed.",
    )
    source = validate.add_mutually_exclusive_group(required=True)
    source.add_argument("--predictions", type=Path, help="predictions CSV")
    source.add_argument(
        "--model", help="run this registry model over --data first (cached in OUT/cache)"
    )
    validate.add_argument("--data", type=Path, help="folder of DICOM studies (with --model)")
    validate.add_argument(
        "--models", type=Path, help="registry folder for --model (default: the bundled weights)"
    )
    validate.add_argument(
        "--device", choices=["auto", "cpu", "cuda"], default="auto", help="for --model"
    )
    validate.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    validate.add_argument(
        "--segmentations",
        type=Path,
        help="CT: folder of DICOM SEG objects (Dice and HD95); --model CT writes its own",
    )
    validate.add_argument(
        "--detections",
        type=Path,
        help="CT: nodule candidates CSV, LUNA16 format (FROC); --model CT writes its own",
    )
    validate.add_argument("--manifest", type=Path, required=True, help="labelled manifest CSV")
    validate.add_argument("--protocol", type=Path, required=True, help="protocol YAML")
    validate.add_argument("--out", type=Path, required=True, help="folder for the report files")
    validate.set_defaults(handler=_validate)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``medvision`` command; return its exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    handler: Callable[[argparse.Namespace], int] = args.handler
    prog = f"medvision {args.command}"
    try:
        return handler(args)
    except UsageError as error:
        print(f"{prog}: error: {error}", file=sys.stderr)
        return EXIT_USAGE
    except (OSError, ValueError) as error:
        detail = error.strerror if isinstance(error, OSError) and error.strerror else str(error)
        where = getattr(error, "filename", None)
        suffix = f": {where}" if where else ""
        print(f"{prog}: error: {detail}{suffix}", file=sys.stderr)
        return EXIT_FAILURE
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
