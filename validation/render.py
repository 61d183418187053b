"""Render a validation report as HTML and PDF: tables, forest plots, ROC and reliability.

Both renderings show, in this order (the order of FDA standalone-performance
summaries and of the CLAIM, TRIPOD+AI and STARD-AI checklists):

1. the **acceptance summary**, failing criteria first and in red;
2. intended use and model identification, the pre-specified protocol, and the
   test data (provenance, counts and prevalence per subgroup, studies not analysed);
3. methods (intervals, AUROC, calibration, subgroups, acceptance rule);
4. results: the overall table, forest plots of sensitivity and specificity by
   subgroup (the acceptance bound drawn, failing groups red, groups not judged
   grey), the ROC curve overall and per site, the reliability diagram, and the
   operating point's stability across sites;
5. limitations, and the reproducibility block.

The HTML file embeds its figures (PNG, base64), so it can be mailed or archived
alone. The PDF is drawn with matplotlib (``PdfPages``), one section per page.
"""

from __future__ import annotations

import base64
import html
import io
import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.backends.backend_pdf import PdfPages
from matplotlib.figure import Figure
from sklearn.metrics import roc_curve

from medvision.calibration.metrics import expected_calibration_error, reliability_curve
from validation.report import failure_line
from validation.subgroups import Case

FAIL_COLOUR = "#c0392b"
PASS_COLOUR = "#1f6f43"
NOT_JUDGED_COLOUR = "#8a8a8a"
LIMITATIONS = (
    "Phantom data stand in for patients here: figures measured on phantoms say how the "
    "software behaves, not how it performs on patients.",
    "Subgroups below the protocol's minimum size are not judged; their intervals are "
    "shown but cannot show equivalence.",
    "Intervals are per figure and per subgroup, without correction for the number of "
    "subgroups examined.",
    "The reference standard is the manifest's labels; their own errors are not modelled.",
)


def _fmt(value: float | None, digits: int = 3) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def _figure_ci(figure: dict[str, float | None]) -> str:
    return f"{_fmt(figure['value'])} ({_fmt(figure['ci_low'])}-{_fmt(figure['ci_high'])})"


def _groups(report: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    rows = [("overall", "all", report["overall"])]
    for column, values in report["subgroups"].items():
        rows += [(column, value, data) for value, data in values.items()]
    return rows


def _short(column: str) -> str:
    """Return a column name short enough for a plot label (``site x manufacturer_model``)."""
    return column.replace("manufacturer_model", "device").replace(" x ", "×")


def _verdict_colour(verdict: str) -> str:
    return {"fail": FAIL_COLOUR, "pass": PASS_COLOUR}.get(verdict, NOT_JUDGED_COLOUR)


def forest_plot(report: dict[str, Any], figure_name: str) -> Figure:
    """Draw ``figure_name`` (sensitivity or specificity) with its interval for every group."""
    rows = _groups(report)
    criterion = f"{figure_name}_lower_ci_min"
    bound = report["protocol"]["acceptance"].get(criterion)
    figure, axes = plt.subplots(figsize=(11.0, 0.32 * len(rows) + 1.4))
    for index, (column, value, data) in enumerate(rows):
        estimate = data["metrics"][figure_name]
        verdict = data["acceptance"].get(criterion, "not judged")
        colour = _verdict_colour(verdict)
        y = len(rows) - index
        if estimate["value"] is not None:
            axes.errorbar(
                estimate["value"],
                y,
                xerr=[  # clamped: a Wilson bound can differ from 0 or 1 by rounding
                    [max(0.0, estimate["value"] - estimate["ci_low"])],
                    [max(0.0, estimate["ci_high"] - estimate["value"])],
                ],
                fmt="o",
                color=colour,
                capsize=3,
            )
        label = "overall" if column == "overall" else f"{_short(column)}: {value} (n={data['n']})"
        axes.text(
            -0.02,
            y,
            label,
            ha="right",
            va="center",
            fontsize=8,
            transform=axes.get_yaxis_transform(),
        )
    if bound is not None:
        axes.axvline(bound, color="black", linestyle="--", linewidth=1)
        axes.text(bound, len(rows) + 0.8, f"acceptance bound {bound:.2f}", fontsize=8, ha="center")
    axes.set_xlim(0.0, 1.0)
    axes.set_ylim(0.3, len(rows) + 1.2)
    axes.set_yticks([])
    axes.set_xlabel(f"{figure_name} with {report['protocol']['confidence']:.0%} interval")
    axes.set_title(
        f"{figure_name.capitalize()} by subgroup (red: fails, green: passes, grey: not judged)",
        fontsize=10,
    )
    figure.subplots_adjust(left=0.42, right=0.97, top=0.9, bottom=0.12)
    return figure


def roc_figure(cases: Sequence[Case], report: dict[str, Any]) -> Figure:
    """Draw the ROC curve of the whole set and of each site, with AUROCs in the legend."""
    figure, axes = plt.subplots(figsize=(5.5, 5.0))
    labels = np.array([c.label for c in cases])
    scores = np.array([c.probability for c in cases])
    sites = np.array([str(c.attributes.get("site") or "unknown") for c in cases])
    subsets = [("overall", np.ones(len(cases), dtype=bool))]
    subsets += [(f"site {s}", sites == s) for s in sorted(set(sites))]
    for name, members in subsets:
        if 0 < labels[members].sum() < members.sum():
            fpr, tpr, _ = roc_curve(labels[members], scores[members])
            axes.plot(fpr, tpr, linewidth=2 if name == "overall" else 1, label=name)
    axes.plot([0, 1], [0, 1], color="grey", linestyle=":", linewidth=1)
    auroc = report["overall"]["metrics"]["auroc"]
    axes.set_title(f"ROC (overall AUROC {_figure_ci(auroc)})", fontsize=10)
    axes.set_xlabel("1 - specificity (false-positive rate)")
    axes.set_ylabel("sensitivity (true-positive rate)")
    axes.legend(fontsize=7, loc="lower right")
    figure.tight_layout()
    return figure


def _reliability_panel(axes: Any, cases: Sequence[Case], title: str) -> None:
    curve = reliability_curve([c.probability for c in cases], [c.label for c in cases], 10)
    predicted = [p.mean_predicted for p in curve.points]
    observed = [p.observed_frequency for p in curve.points]
    sizes = [12 + 160 * p.count / curve.total for p in curve.points]
    axes.plot([0, 1], [0, 1], color="grey", linestyle=":", linewidth=1, label="perfect calibration")
    axes.plot(predicted, observed, color="#2c3e50", linewidth=1)
    axes.scatter(predicted, observed, s=sizes, color="#2c3e50", label="bins (area: cases)")
    axes.set_xlim(-0.03, 1.03)
    axes.set_ylim(-0.03, 1.03)
    axes.set_title(title, fontsize=8)
    axes.tick_params(labelsize=7)


#: Most panels of the reliability figure (the whole set, then sites by name).
RELIABILITY_PANELS = 12


def reliability_figure(cases: Sequence[Case], report: dict[str, Any]) -> Figure:
    """Draw reliability diagrams (10 equal-width bins): the whole set, then each site."""
    sites = sorted({str(c.attributes.get("site") or "unknown") for c in cases})
    panels: list[tuple[str, list[Case]]] = [("overall", list(cases))]
    for site in sites[: RELIABILITY_PANELS - 1]:
        members = [c for c in cases if str(c.attributes.get("site") or "unknown") == site]
        panels.append((f"site {site}", members))
    columns = min(3, len(panels))
    rows = -(-len(panels) // columns)
    figure, grid = plt.subplots(
        rows, columns, figsize=(3.4 * columns, 3.2 * rows + 0.6), squeeze=False
    )
    for index, (name, members) in enumerate(panels):
        axes = grid[index // columns][index % columns]
        ece = expected_calibration_error(
            [c.probability for c in members], [c.label for c in members], 10
        )
        _reliability_panel(axes, members, f"{name} (n={len(members)}, ECE {ece:.3f})")
        if index == 0:
            axes.legend(fontsize=6, loc="upper left")
        if index % columns == 0:
            axes.set_ylabel("observed frequency", fontsize=8)
        if index // columns == rows - 1:
            axes.set_xlabel("mean calibrated probability", fontsize=8)
    for index in range(len(panels), rows * columns):
        grid[index // columns][index % columns].axis("off")
    calibration = report["overall"]["calibration"]
    shown = "" if len(sites) < RELIABILITY_PANELS else f" (first {RELIABILITY_PANELS - 1} sites)"
    figure.suptitle(
        f"Reliability overall (ECE {_fmt(calibration['ece'])}, Brier "
        f"{_fmt(calibration['brier'])}) and by site{shown}",
        fontsize=10,
    )
    figure.tight_layout()
    return figure


def _png(figure: Figure) -> str:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110)
    plt.close(figure)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def _table(
    header: Sequence[str], rows: Sequence[Sequence[str]], classes: Sequence[str] = ()
) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = []
    for index, row in enumerate(rows):
        css = f' class="{classes[index]}"' if index < len(classes) and classes[index] else ""
        body.append(f"<tr{css}>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _results_rows(report: dict[str, Any]) -> tuple[list[list[str]], list[str]]:
    rows, classes = [], []
    for column, value, data in _groups(report):
        verdicts = list(data["acceptance"].values())
        rows.append(
            [
                column,
                value,
                str(data["n"]),
                _fmt(data["prevalence"], 2),
                _figure_ci(data["metrics"]["sensitivity"]),
                _figure_ci(data["metrics"]["specificity"]),
                _figure_ci(data["metrics"]["auroc"]),
                str(data["not_analysed"]),
                ", ".join(
                    f"{k.removesuffix('_lower_ci_min')}: {v}" for k, v in data["acceptance"].items()
                ),
            ]
        )
        classes.append("fail" if "fail" in verdicts else "")
    return rows, classes


RESULT_HEADER = (
    "column",
    "group",
    "n",
    "prevalence",
    "sensitivity (CI)",
    "specificity (CI)",
    "AUROC (CI)",
    "not analysed",
    "acceptance",
)


SEGMENTATION_HEADER = (
    "column",
    "group",
    "scans",
    "with nodule",
    "missed",
    "mean Dice (CI)",
    "median HD95 mm (CI)",
    "nodules",
    "detection sens. (CI)",
    "FP per scan (CI)",
)


def _cell(metrics: dict[str, Any], name: str, digits: int = 3) -> str:
    figure = metrics.get(name)
    if figure is None:
        return "not given"
    return (
        f"{_fmt(figure['value'], digits)} "
        f"({_fmt(figure['ci_low'], digits)}-{_fmt(figure['ci_high'], digits)})"
    )


def _segmentation_rows(report: dict[str, Any]) -> tuple[list[list[str]], list[str]]:
    """Return the segmentation table's rows (a group's failing rows marked ``fail``)."""
    rows, classes = [], []
    for column, value, data in _groups(report):
        counts, metrics = data["segmentation"], data["metrics"]
        if counts is None:
            continue

        rows.append(
            [
                column,
                value,
                str(counts["scans"]),
                str(counts["scans_with_nodule"]),
                str(counts["missed_scans"]),
                _cell(metrics, "dice"),
                _cell(metrics, "hd95_mm", 1),
                str(counts["nodules"]),
                _cell(metrics, "detection_sensitivity"),
                _cell(metrics, "false_positives_per_scan", 2),
            ]
        )
        failed = [
            k
            for k, v in data["acceptance"].items()
            if v == "fail" and k.split("_")[0] in ("dice", "hd95", "detection")
        ]
        classes.append("fail" if failed else "")
    return rows, classes


NODULE_TYPE_HEADER = (
    "nodule type",
    "nodules",
    "hit by any candidate",
    "detection sens. (CI)",
    "candidate sens. (CI)",
)
#: How the nodule types of the annotations read in the report.
NODULE_TYPE_NAMES = {"solid": "solid", "part_solid": "part-solid", "ground_glass": "ground-glass"}
NODULE_TYPE_NOTE = (
    "Whole set, nodules of at least {min_nodule_diameter_mm:g} mm by attenuation type, as "
    "the ground-truth annotations give it. Each type's detection sensitivity is read at the "
    "threshold where all the scans' false positives reach {max_false_positives_per_scan:g} "
    "per scan (the whole set's operating point); the candidate sensitivity keeps every "
    "candidate. Intervals as in the segmentation table."
)


def _nodule_type_rows(block: dict[str, Any]) -> list[list[str]]:
    """Return the rows of the detection-by-nodule-type table (empty without candidates)."""
    return [
        [
            NODULE_TYPE_NAMES.get(kind, kind),
            str(data["nodules"]),
            str(data["detected"]),
            _cell(data, "detection_sensitivity"),
            _cell(data, "candidate_sensitivity"),
        ]
        for kind, data in block.get("by_nodule_type", {}).items()
    ]


def froc_figure(report: dict[str, Any]) -> Figure:
    """Draw the whole set's FROC curve with the protocol's false-positive rate marked."""
    block = report["segmentation"]
    points = block["froc"]
    figure, axes = plt.subplots(figsize=(7.0, 4.6))
    rates = [p["false_positives_per_scan"] for p in points]
    sensitivities = [p["sensitivity"] or 0.0 for p in points]
    # Start at no candidate kept (0 false positives, sensitivity 0), then each threshold.
    axes.step([0.0, *rates], [0.0, *sensitivities], where="post", color="#1f4e79")
    axes.plot(rates, sensitivities, "o", color="#1f4e79", markersize=3)
    limit = block["max_false_positives_per_scan"]
    reading = report["overall"]["metrics"].get("detection_sensitivity", {}).get("value")
    axes.axvline(limit, color="black", linestyle="--", linewidth=1)
    axes.text(
        limit,
        1.02,
        f"{limit:g} FP/scan: sensitivity {_fmt(reading)}",
        fontsize=8,
        ha="center",
    )
    axes.set_xlim(0.0, max([limit * 2.0, *rates]) * 1.05)
    axes.set_ylim(0.0, 1.08)
    axes.set_xlabel("false positives per scan")
    axes.set_ylabel(f"sensitivity, nodules >= {block['min_nodule_diameter_mm']:g} mm")
    axes.set_title(
        f"FROC, all {block['scans']} scans (candidates kept at or above each score)",
        fontsize=10,
    )
    axes.grid(alpha=0.3)
    figure.tight_layout()
    return figure


def _model_rows(report: dict[str, Any]) -> list[list[str]]:
    return [
        [
            m["name"] or "not stated",
            m["version"] or "not stated",
            m["weights_sha256"] or "not stated",
            str(m["rows"]),
        ]
        for m in report["models"]
    ]


def _provenance(report: dict[str, Any]) -> str:
    """Return where the cases come from, whether they are independent, and the reference."""
    splits = ", ".join(f"{count} from '{name}'" for name, count in report["data"]["splits"].items())
    development = [w for w in report["warnings"] if "splits used to develop" in w]
    independence = (
        "Some cases are NOT independent of the model's development (see limitations)."
        if development
        else "No case comes from a split used to develop the model (train, tune, calibration)."
    )
    return (
        f"Manifest splits of the cases: {splits or 'none'}. {independence} Reference "
        f"standard: {report['data']['reference_standard']}."
    )


def _summary_lines(report: dict[str, Any]) -> list[str]:
    failures = report["acceptance"]["failures"]
    protocol = report["protocol"]
    lines = [
        f"Protocol: {protocol['name']} ({protocol['modality']}, finding {protocol['finding']}).",
        f"Result: {'ALL CRITERIA MET' if not failures else f'{len(failures)} CRITERIA FAILED'}"
        f" on {report['data']['cases']} cases ({report['data']['not_analysed']} not analysed).",
    ]
    for failure in failures:
        lines.append(failure_line(failure))
    unjudged = [k for k, v in report["overall"]["acceptance"].items() if v == "not judged"]
    if unjudged:
        lines.append(
            "NOT JUDGED for the whole set (fewer cases behind the figure than the protocol's "
            f"minimum of {protocol['minimum_subgroup_size']}): {', '.join(unjudged)}."
        )
    return lines


def write_html(report: dict[str, Any], cases: Sequence[Case], path: Path) -> None:
    """Write the self-contained HTML report (see the module docstring)."""
    protocol = report["protocol"]
    failures = report["acceptance"]["failures"]
    summary_class = "fail" if failures else "pass"
    results, classes = _results_rows(report)
    stability = report["operating_point_stability"]
    stability_rows = [
        [
            site,
            str(v["n"]),
            _fmt(v.get("threshold")),
            _fmt(v.get("sensitivity")),
            _fmt(v.get("specificity")),
        ]
        for site, v in stability["sites"].items()
    ]
    problems = [
        [p["kind"], str(p["count"]), p["action"], ", ".join(p["where"][:5])]
        for p in report["input_problems"]
    ]
    images = {
        "sensitivity": _png(forest_plot(report, "sensitivity")),
        "specificity": _png(forest_plot(report, "specificity")),
        "roc": _png(roc_figure(cases, report)),
        "reliability": _png(reliability_figure(cases, report)),
    }
    criteria = "".join(
        f"<li>{html.escape(name)}: {bound}</li>" for name, bound in protocol["acceptance"].items()
    )
    packages = ", ".join(f"{k} {v}" for k, v in report["reproducibility"]["packages"].items())
    sections = [
        f"<h1>Validation report: {html.escape(protocol['name'])}</h1>",
        f'<div class="summary {summary_class}">'
        + "".join(f"<p>{html.escape(line)}</p>" for line in _summary_lines(report))
        + "</div>",
        "<h2>Intended use and model identification</h2><p>Standalone performance of the "
        f"model for the finding <b>{html.escape(protocol['finding'])}</b> on "
        f"{html.escape(protocol['modality'])} "
        "studies, as a second reader that flags studies for a radiologist's attention. Not for "
        "primary diagnosis; phantom-trained models are not for clinical use.</p>"
        + _table(("model", "version", "weights SHA-256", "prediction rows"), _model_rows(report)),
        "<h2>Protocol and pre-specified endpoints</h2><ul>"
        f"<li>threshold: {html.escape(str(protocol['threshold']))}</li>"
        f"<li>confidence: {protocol['confidence']}, intervals: "
        f"{html.escape(protocol['interval_method'])}</li>"
        f"<li>subgroups: {html.escape(', '.join(protocol['subgroups']))}; minimum size "
        f"{protocol['minimum_subgroup_size']}</li>{criteria}"
        f"<li>protocol SHA-256: {protocol['sha256']}</li></ul>",
        "<h2>Test data: provenance, independence, reference standard</h2><p>"
        f"{report['data']['cases']} cases with a prediction and a reference label; "
        f"{report['data']['not_analysed']} studies of the manifest not analysed. "
        + html.escape(_provenance(report))
        + f" Predictions SHA-256 {report['data']['predictions_sha256']}, manifest SHA-256 "
        f"{report['data']['manifest_sha256']}. Counts and prevalence per subgroup are in the "
        "results table.</p>"
        + (
            _table(("problem", "count", "what was done", "first places"), problems)
            if problems
            else ""
        ),
        "<h2>Methods</h2><p>Sensitivity, specificity, PPV and NPV with "
        f"{html.escape(protocol['interval_method'])} intervals; AUROC with DeLong's interval; "
        "calibration by ECE (10 equal-width bins), Brier score, and logistic calibration slope "
        "and intercepts; each subgroup's difference from the rest with Newcombe's interval. A "
        "criterion passes when the figure's lower interval bound reaches its bound; a criterion "
        "resting on fewer cases than the minimum subgroup size is not judged (an upper "
        "bound, such as HD95's, passes when the upper interval limit stays within it)."
        + (
            " Patients contribute several studies here, so the sensitivity and specificity "
            "intervals are cluster-bootstrap percentile intervals resampling patients (1,000 "
            "resamples), and the AUROC intervals Obuchowski's (1997) for clustered data."
            if report["data"].get("clustered_intervals")
            else ""
        )
        + "</p>",
        "<h2>Results</h2>" + _table(RESULT_HEADER, results, classes),
        f'<img alt="sensitivity by subgroup" src="data:image/png;base64,{images["sensitivity"]}">',
        f'<img alt="specificity by subgroup" src="data:image/png;base64,{images["specificity"]}">',
        f'<img alt="ROC curves" src="data:image/png;base64,{images["roc"]}">',
        f'<img alt="reliability diagram" src="data:image/png;base64,{images["reliability"]}">',
        _segmentation_html(report),
        "<h2>Operating point across sites</h2><p>Per site, the threshold that would reach "
        f"sensitivity {stability['target_sensitivity']:.2f} there.</p>"
        + _table(("site", "n", "threshold", "sensitivity", "specificity"), stability_rows),
        "<h2>Limitations</h2><ul>"
        + "".join(f"<li>{html.escape(t)}</li>" for t in LIMITATIONS)
        + "".join(f"<li>{html.escape(w)}</li>" for w in report["warnings"])
        + "</ul>",
        f"<h2>Reproducibility</h2><p>{html.escape(packages)}; Python "
        f"{report['reproducibility']['python']}; seed {report['reproducibility']['seed']}.</p>",
    ]
    style = (
        "body{font-family:sans-serif;max-width:1100px;margin:2em auto;color:#222}"
        "table{border-collapse:collapse;font-size:12px;margin:1em 0}"
        "td,th{border:1px solid #ccc;padding:3px 6px;text-align:left}"
        "tr.fail td{background:#fbe3e1;color:#7b241c;font-weight:bold}"
        ".summary{padding:0.5em 1em;border:2px solid}.summary.fail{border-color:#c0392b;"
        "background:#fbe3e1}.summary.pass{border-color:#1f6f43;background:#e3f4ea}"
        "img{max-width:100%;display:block;margin:1em 0}"
    )
    document = (
        f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(protocol['name'])}"
        f"</title><style>{style}</style></head><body>{''.join(sections)}</body></html>"
    )
    path.write_text(document, encoding="utf-8")


def _segmentation_html(report: dict[str, Any]) -> str:
    """Return the segmentation section, or nothing when no mask or candidate was given."""
    block = report.get("segmentation")
    if not block:
        return ""
    rows, classes = _segmentation_rows(report)
    parts = [
        "<h2>Segmentation and detection</h2><p>"
        f"{block['scans']} CT scans with ground truth. Masks (DICOM SEG) "
        f"{'given' if block['masks'] else 'not given'}; nodule candidates "
        f"{'given' if block['candidates'] else 'not given'}. "
        + html.escape(SEGMENTATION_METHODS.format(**block))
        + "</p>",
        _table(SEGMENTATION_HEADER, rows, classes),
    ]
    type_rows = _nodule_type_rows(block)
    if type_rows:
        parts += [
            "<h3>Detection by nodule type</h3><p>"
            + html.escape(NODULE_TYPE_NOTE.format(**block))
            + "</p>",
            _table(NODULE_TYPE_HEADER, type_rows),
        ]
    if block["masks"]:
        parts.append(
            f'<img alt="Dice by subgroup" src="data:image/png;base64,'
            f'{_png(forest_plot(report, "dice"))}">'
        )
    if block["candidates"]:
        parts.append(f'<img alt="FROC" src="data:image/png;base64,{_png(froc_figure(report))}">')
    return "".join(parts)


SEGMENTATION_METHODS = (
    "Dice is the mean over the scans whose ground truth holds a nodule; HD95 the median "
    "95th-percentile Hausdorff distance over the scans where both masks hold a voxel (a "
    "scan with a nodule and no predicted voxel counts as missed instead). A candidate "
    "detects a ground-truth nodule of at least {min_nodule_diameter_mm:g} mm when its centre "
    "lies within the nodule's radius (LUNA16); candidates hitting no nodule are false "
    "positives. Detection sensitivity is read off the FROC at no more than "
    "{max_false_positives_per_scan:g} false positives per scan. Intervals: percentile "
    "bootstrap resampling scans (patients when clustered), 1,000 resamples."
)


#: Colour of the summary line naming criteria the whole set is too small to judge.
NOT_JUDGED_TEXT_COLOUR = "#9a5b00"


def _line_colour(line: str) -> str:
    if line.startswith("FAIL"):
        return FAIL_COLOUR
    if line.startswith("NOT JUDGED"):
        return NOT_JUDGED_TEXT_COLOUR
    return "black"


#: Lowest text position on a page (figure fraction) before the text goes on overleaf.
PAGE_BOTTOM = 0.05


def _text_page(pdf: PdfPages, title: str, lines: Sequence[str]) -> None:
    """Write ``lines`` under ``title`` on as many A4 pages as they need."""
    wrapped = [
        (part, _line_colour(line))
        for line in lines
        for part in textwrap.wrap(line, 105, subsequent_indent="    ") or [""]
    ]
    page = 0
    while wrapped or page == 0:
        figure = plt.figure(figsize=(8.27, 11.69))
        y = 0.95
        heading = title if page == 0 else f"{title} (continued)"
        for part in textwrap.wrap(heading, 60):
            figure.text(0.06, y, part, fontsize=13, weight="bold")
            y -= 0.025
        y -= 0.01
        while wrapped and y >= PAGE_BOTTOM:
            part, colour = wrapped.pop(0)
            figure.text(0.06, y, part, fontsize=8.5, color=colour)
            y -= 0.018
        pdf.savefig(figure)  # type: ignore[no-untyped-call]
        plt.close(figure)
        page += 1


def _table_page(
    pdf: PdfPages,
    report: dict[str, Any],
    *,
    rows: Sequence[Sequence[str]] | None = None,
    classes: Sequence[str] = (),
    header: Sequence[str] = RESULT_HEADER[:8],
    title: str = "Results by subgroup (red rows fail a criterion)",
    footnote: str = "",
    widths: Sequence[float] = (0.12, 0.28, 0.05, 0.07, 0.13, 0.13, 0.13, 0.07),
) -> None:
    if rows is None:
        rows, classes = _results_rows(report)
    for start in range(0, max(len(rows), 1), TABLE_ROWS_PER_PAGE):
        _table_sheet(
            pdf,
            rows[start : start + TABLE_ROWS_PER_PAGE],
            list(classes[start : start + TABLE_ROWS_PER_PAGE]),
            header,
            title if start == 0 else f"{title} (continued)",
            footnote,
            widths,
        )


#: Table rows on one landscape A4 page.
TABLE_ROWS_PER_PAGE = 34


def _table_sheet(
    pdf: PdfPages,
    rows: Sequence[Sequence[str]],
    classes: Sequence[str],
    header: Sequence[str],
    title: str,
    footnote: str,
    widths: Sequence[float],
) -> None:
    figure = plt.figure(figsize=(11.69, 8.27))
    axes = figure.add_axes((0.02, 0.06, 0.96, 0.86))
    axes.axis("off")
    figure.text(0.02, 0.95, title, fontsize=12, weight="bold")
    for index, part in enumerate(textwrap.wrap(footnote, 190)):
        figure.text(0.02, 0.05 - 0.013 * index, part, fontsize=7)
    columns = len(header)
    cells = [[_short(r[0]), *r[1:columns]] for r in rows]
    table = axes.table(
        cellText=cells,
        colLabels=list(header),
        colWidths=list(widths),
        cellLoc="left",
        colLoc="left",
        loc="upper left",
    )
    table.auto_set_font_size(False)
    table.set_fontsize(7)
    table.scale(1.0, 1.2)
    for index, css in enumerate(classes, start=1):
        if css == "fail":
            for column in range(columns):
                table[index, column].set_facecolor("#fbe3e1")
                table[index, column].get_text().set_color(FAIL_COLOUR)
    pdf.savefig(figure)  # type: ignore[no-untyped-call]
    plt.close(figure)


def write_pdf(report: dict[str, Any], cases: Sequence[Case], path: Path) -> None:
    """Write the PDF report: summary, protocol and data, results table, plots, limitations."""
    protocol = report["protocol"]
    with PdfPages(path) as pdf:
        lines = [
            *_summary_lines(report),
            "",
            f"Threshold: {protocol['threshold']}; confidence {protocol['confidence']}; "
            f"intervals {protocol['interval_method']}; minimum subgroup size "
            f"{protocol['minimum_subgroup_size']}.",
            "Criteria: " + ", ".join(f"{k} {v}" for k, v in protocol["acceptance"].items()),
            *[
                f"Model: {name} {version}, weights SHA-256 {weights} ({rows} prediction rows)"
                for name, version, weights, rows in _model_rows(report)
            ],
            _provenance(report),
            f"Protocol SHA-256 {protocol['sha256']}",
            f"Predictions SHA-256 {report['data']['predictions_sha256']}",
            f"Manifest SHA-256 {report['data']['manifest_sha256']}",
            "",
            "Input problems:" + ("" if report["input_problems"] else " none"),
            *[f"  {p['kind']} ({p['count']}): {p['action']}" for p in report["input_problems"]],
            "",
            "Limitations:",
            *[f"  - {t}" for t in LIMITATIONS],
            *[f"  - {w}" for w in report["warnings"]],
        ]
        _text_page(pdf, f"Validation report: {protocol['name']}", lines)
        _table_page(pdf, report)
        figures = [
            forest_plot(report, "sensitivity"),
            forest_plot(report, "specificity"),
            roc_figure(cases, report),
            reliability_figure(cases, report),
        ]
        block = report.get("segmentation")
        if block:
            rows, classes = _segmentation_rows(report)
            _table_page(
                pdf,
                report,
                rows=rows,
                classes=classes,
                header=SEGMENTATION_HEADER,
                title="Segmentation and detection by subgroup (red rows fail a criterion)",
                footnote=SEGMENTATION_METHODS.format(**block),
                widths=(0.10, 0.20, 0.045, 0.06, 0.05, 0.135, 0.135, 0.055, 0.135, 0.09),
            )
            type_rows = _nodule_type_rows(block)
            if type_rows:
                _table_page(
                    pdf,
                    report,
                    rows=type_rows,
                    header=NODULE_TYPE_HEADER,
                    title="Detection by nodule type",
                    footnote=NODULE_TYPE_NOTE.format(**block),
                    widths=(0.20, 0.12, 0.16, 0.24, 0.24),
                )
            if block["masks"]:
                figures.append(forest_plot(report, "dice"))
            if block["candidates"]:
                figures.append(froc_figure(report))
        for figure in figures:
            pdf.savefig(figure)
            plt.close(figure)
