"""The ``medvision`` command line: each subcommand parses its arguments and calls a typed API.

Errors in what the user typed or in the data end the command with a one-line
message on standard error and a non-zero exit status, never a traceback.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import NoReturn

from medvision import __version__

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
    from medvision.baseline.naive import evaluate_naive_baseline, format_baseline
    from medvision.data.manifest import read_manifest

    if not args.manifest.exists():
        raise UsageError(f"--manifest: {args.manifest} does not exist")
    rows = read_manifest(args.manifest)
    results = evaluate_naive_baseline(rows, args.manifest, progress=not args.no_progress)
    print(format_baseline(results))
    return EXIT_OK


def _train(args: argparse.Namespace) -> int:
    from medvision.modality import Modality
    from medvision.training.classifier import TrainOptions, train_image_classifier

    if not args.manifest.exists():
        raise UsageError(f"--manifest: {args.manifest} does not exist")
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
        )
    except ValueError as error:
        raise UsageError(str(error)) from None
    result = train_image_classifier(options, progress=not args.no_progress)
    entry = result.entry
    print(
        f"wrote {args.out / entry.weights_file} (sha256 {entry.weights_sha256}) "
        f"and {args.out / (entry.name + '.json')}"
    )
    for finding in entry.findings:
        auroc = result.test_auroc.get(finding, float("nan"))
        print(
            f"  {finding:<18} threshold {entry.thresholds[finding]:.4f}  "
            f"calibration {entry.calibration[finding]['method']:<11} test AUROC {auroc:.3f}"
        )
    return EXIT_OK


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
    baseline.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    baseline.set_defaults(handler=_baseline)

    train = commands.add_parser(
        "train",
        help="train, calibrate and register a classifier from a manifest",
        description="Train on the train split, calibrate on calibration, pick thresholds on "
        "tune, report AUROC on test; write fp16 weights and a registry entry.",
    )
    train.add_argument("--modality", required=True, help="cxr or fundus")
    train.add_argument("--manifest", type=Path, required=True)
    train.add_argument("--out", type=Path, required=True, help="folder for weights and entry")
    train.add_argument("--epochs", type=_non_negative_int, default=12)
    train.add_argument("--batch-size", type=_non_negative_int, default=16)
    train.add_argument("--learning-rate", type=_positive_float, default=2e-3)
    train.add_argument("--seed", type=_non_negative_int, default=0)
    train.add_argument(
        "--loss",
        default="class_balanced_focal",
        help="bce, focal or class_balanced_focal (default)",
    )
    train.add_argument(
        "--balanced-sampler",
        action="store_true",
        help="draw studies with a finding as often as studies without",
    )
    train.add_argument("--target-sensitivity", type=_positive_float, default=0.90)
    train.add_argument("--device", default="auto", help="auto (default), cpu or cuda")
    train.add_argument(
        "--max-studies",
        type=_non_negative_int,
        default=None,
        help="at most this many studies per split (quick runs)",
    )
    train.add_argument("--name", help="model name (default: <modality>-densenet)")
    train.add_argument("--no-progress", action="store_true", help="hide progress bars")
    train.set_defaults(handler=_train)
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
