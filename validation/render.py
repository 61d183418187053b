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

from medvision.calibration.metrics import reliability_curve
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


def reliability_figure(cases: Sequence[Case], report: dict[str, Any]) -> Figure:
    """Draw the reliability diagram of the whole set (10 equal-width bins)."""
    figure, axes = plt.subplots(figsize=(5.5, 5.0))
    curve = reliability_curve([c.probability for c in cases], [c.label for c in cases], 10)
    predicted = [p.mean_predicted for p in curve.points]
    observed = [p.observed_frequency for p in curve.points]
    sizes = [20 + 200 * p.count / curve.total for p in curve.points]
    axes.plot([0, 1], [0, 1], color="grey", linestyle=":", linewidth=1, label="perfect calibration")
    axes.plot(predicted, observed, color="#2c3e50", linewidth=1)
    axes.scatter(predicted, observed, s=sizes, color="#2c3e50", label="bins (area: cases)")
    calibration = report["overall"]["calibration"]
    axes.set_title(
        f"Reliability (ECE {_fmt(calibration['ece'])}, Brier {_fmt(calibration['brier'])})",
        fontsize=10,
    )
    axes.set_xlabel("mean calibrated probability in bin")
    axes.set_ylabel("observed frequency of the finding")
    axes.legend(fontsize=7, loc="upper left")
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


def _summary_lines(report: dict[str, Any]) -> list[str]:
    failures = report["acceptance"]["failures"]
    protocol = report["protocol"]
    lines = [
        f"Protocol: {protocol['name']} ({protocol['modality']}, finding {protocol['finding']}).",
        f"Result: {'ALL CRITERIA MET' if not failures else f'{len(failures)} CRITERIA FAILED'}"
        f" on {report['data']['cases']} cases ({report['data']['not_analysed']} not analysed).",
    ]
    for failure in failures:
        lines.append(
            f"FAIL {failure['column']} = {failure['value']}: {failure['criterion']} "
            f"(lower bound {failure['ci_low']:.3f} < {failure['bound']:.3f})"
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
        "<h2>Intended use and model</h2><p>Standalone performance of the medvision model for "
        f"the finding <b>{html.escape(protocol['finding'])}</b> on "
        f"{html.escape(protocol['modality'])} "
        "studies, as a second reader that flags studies for a radiologist's attention. Not for "
        "primary diagnosis; phantom-trained models are not for clinical use.</p>",
        "<h2>Protocol (pre-specified)</h2><ul>"
        f"<li>threshold: {html.escape(str(protocol['threshold']))}</li>"
        f"<li>confidence: {protocol['confidence']}, intervals: "
        f"{html.escape(protocol['interval_method'])}</li>"
        f"<li>subgroups: {html.escape(', '.join(protocol['subgroups']))}; minimum size "
        f"{protocol['minimum_subgroup_size']}</li>{criteria}"
        f"<li>protocol SHA-256: {protocol['sha256']}</li></ul>",
        "<h2>Test data</h2><p>"
        f"{report['data']['cases']} cases with a prediction and a reference label; "
        f"{report['data']['not_analysed']} studies of the manifest not analysed. Predictions "
        f"SHA-256 {report['data']['predictions_sha256']}, manifest SHA-256 "
        f"{report['data']['manifest_sha256']}.</p>"
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
        "resting on fewer cases than the minimum subgroup size is not judged."
        + (
            " Patients contribute several studies here, so the sensitivity and specificity "
            "intervals are cluster-bootstrap percentile intervals resampling patients (1,000 "
            "resamples)."
            if report["data"].get("clustered_intervals")
            else ""
        )
        + "</p>",
        "<h2>Results</h2>" + _table(RESULT_HEADER, results, classes),
        f'<img alt="sensitivity by subgroup" src="data:image/png;base64,{images["sensitivity"]}">',
        f'<img alt="specificity by subgroup" src="data:image/png;base64,{images["specificity"]}">',
        f'<img alt="ROC curves" src="data:image/png;base64,{images["roc"]}">',
        f'<img alt="reliability diagram" src="data:image/png;base64,{images["reliability"]}">',
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


def _text_page(pdf: PdfPages, title: str, lines: Sequence[str], fail_prefix: str = "FAIL") -> None:
    figure = plt.figure(figsize=(8.27, 11.69))
    y = 0.95
    for part in textwrap.wrap(title, 60):
        figure.text(0.06, y, part, fontsize=13, weight="bold")
        y -= 0.025
    y -= 0.01
    for line in lines:
        colour = FAIL_COLOUR if line.startswith(fail_prefix) else "black"
        for part in textwrap.wrap(line, 105, subsequent_indent="    ") or [""]:
            figure.text(0.06, y, part, fontsize=8.5, color=colour)
            y -= 0.018
        if y < 0.04:
            break
    pdf.savefig(figure)  # type: ignore[no-untyped-call]
    plt.close(figure)


def _table_page(pdf: PdfPages, report: dict[str, Any]) -> None:
    rows, classes = _results_rows(report)
    figure = plt.figure(figsize=(11.69, 8.27))
    axes = figure.add_axes((0.02, 0.02, 0.96, 0.9))
    axes.axis("off")
    title = "Results by subgroup (red rows fail a criterion)"
    figure.text(0.02, 0.95, title, fontsize=12, weight="bold")
    cells = [[_short(r[0]), *r[1:8]] for r in rows]
    widths = [0.12, 0.28, 0.05, 0.07, 0.13, 0.13, 0.13, 0.07]
    table = axes.table(
        cellText=cells,
        colLabels=list(RESULT_HEADER[:8]),
        colWidths=widths,
        cellLoc="left",
        colLoc="left",
        loc="upper left",
    )
    table.auto_set_font_size(False)
    table.set_fontsize(7)
    table.scale(1.0, 1.2)
    for index, css in enumerate(classes, start=1):
        if css == "fail":
            for column in range(8):
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
        for figure in (
            forest_plot(report, "sensitivity"),
            forest_plot(report, "specificity"),
            roc_figure(cases, report),
            reliability_figure(cases, report),
        ):
            pdf.savefig(figure)
            plt.close(figure)
