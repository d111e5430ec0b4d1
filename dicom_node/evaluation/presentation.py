"""The evaluation for people: a text report for the terminal, a self-contained HTML report, and the view the
dashboard's performance page renders with the same template partial (`_performance.html`).

Numbers are formatted here once (three decimals, the interval after the value), so the terminal, the report
file and the dashboard read alike; the JSON (`Evaluation.to_json`) keeps full precision.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from dicom_node import __version__
from dicom_node.evaluation.performance import METRICS, Evaluation
from dicom_node.evaluation.plots import calibration_plot, data_uri, roc_plot
from dicom_node.evaluation.statistics import PUBLISHED_FIGURES, PUBLISHED_SOURCE, Estimate

TEMPLATES = Path(__file__).resolve().parent.parent / "web" / "templates"
STYLE = TEMPLATES.parent / "static" / "style.css"
DISCLAIMER = (
    "Research software: NOT FOR DIAGNOSTIC USE. The model's authors state that it is not reliable enough "
    "for clinical use."
)
LABELS = {
    "sensitivity": "Sensitivity",
    "specificity": "Specificity",
    "ppv": "Positive predictive value",
    "npv": "Negative predictive value",
    "accuracy": "Accuracy",
    "balanced_accuracy": "Balanced accuracy",
    "auc": "ROC AUC",
}
METHODS = {
    "sensitivity": "Wilson score",
    "specificity": "Wilson score",
    "ppv": "Wilson score",
    "npv": "Wilson score",
    "accuracy": "Wilson score",
    "balanced_accuracy": "MOVER over the Wilson intervals",
    "auc": "DeLong",
}
SUBGROUP_TITLES = {
    "scanner": "Scanner model",
    "prostatectomy": "Prostatectomy status (provenance)",
    "psa": "PSA band",
    "weights": "Model and weights",
    "envelope": "Validated envelope",
}


def estimate(value: Estimate | None, digits: int = 3) -> str:
    """`0.712 (0.645 to 0.771)`; `-` where undefined; the value alone without an interval."""
    if value is None or value.value is None:
        return "-"
    text = f"{value.value:.{digits}f}"
    if value.ci95 is not None:
        text += f" ({value.ci95[0]:.{digits}f} to {value.ci95[1]:.{digits}f})"
    return text


def _yes_no(flag: bool | None) -> str:
    return "-" if flag is None else ("yes" if flag else "no")


def _tally(counts: dict[str, int]) -> str:
    return ", ".join(f"{key or 'no reason given'} {n}" for key, n in counts.items())


@dataclass
class Row:
    cells: list[str]
    flag: bool = False


@dataclass
class PerformanceView:
    """Everything the performance partial shows, as text."""

    threshold: str
    flow: list[Row]
    warnings: list[str]
    confusion: dict[str, int]
    metrics: list[Row]
    brier: str
    readers: list[Row]
    readers_vs_reference: list[Row]
    subgroups: list[tuple[str, list[Row]]]
    filters: list[tuple[str, str]]
    plots: dict[str, str]


def view(evaluation: Evaluation, *, with_plots: bool = True) -> PerformanceView:
    counts = evaluation.counts()
    flow = [
        Row(["Received", str(counts["received"]), "studies first received in the date range"]),
        Row(["Rejected before analysis", str(counts["rejected"]), _tally(counts["rejected_by_reason"])]),
        Row(["Analysis failed", str(counts["failed"]), _tally(counts["failed_by_reason"])]),
        Row(["Not finished yet", str(counts["not_finished"]), "receiving, queued or running"]),
        Row(["Analysed", str(counts["analysed"]), "with a current result"]),
        Row(
            ["Excluded by the filters", str(counts["excluded_by_filter"]), "model, scanner or prostatectomy"]
        ),
        Row(
            [
                "With a classifier output",
                str(counts["with_classifier_output"]),
                f"{counts['in_cohort'] - counts['with_classifier_output']} without (no classifier installed)",
            ]
        ),
        Row(
            [
                "With a reference standard",
                str(counts["with_reference"]),
                _tally(counts["with_reference_by_method"]),
            ]
        ),
        Row(
            [
                "Included in the accuracy figures",
                str(counts["included"]),
                "classifier output and reference standard",
            ]
        ),
        Row(["Outside the validated envelope", str(counts["outside_envelope"]), "of the analysed studies"]),
    ]
    timing = evaluation.reference_timing()
    if timing["studies"]:
        flow.append(
            Row(
                [
                    "Days from result to reference standard",
                    f"{timing['median_days']:g}",
                    (f"median; quartiles {timing['quartiles_days'][0]:g} to {timing['quartiles_days'][1]:g}, "
                     f"range {timing['min_days']} to {timing['max_days']} ({timing['studies']} dated)"),
                ]
            )
        )
    bias = evaluation.verification()
    warnings = list(bias["messages"])
    if counts["made_at_other_thresholds"]:
        warnings.append(
            f"{counts['made_at_other_thresholds']} results were made at another threshold than "
            f"{evaluation.threshold:g}: their calls are recomputed here at {evaluation.threshold:g}."
        )
    if counts["included"] == 0:
        warnings.append(
            "No study has both a classifier output and a reference standard: no accuracy figure "
            "can be computed yet."
        )
    metrics = evaluation.accuracy.metrics
    comparisons = {c.metric: c for c in evaluation.comparisons}
    metric_rows = []
    for name in METRICS:
        comparison = comparisons.get(name)
        excluded = comparison.excludes_published if comparison else None
        metric_rows.append(
            Row(
                [
                    LABELS[name],
                    estimate(metrics[name]),
                    f"{PUBLISHED_FIGURES[name]:.3f}" if name in PUBLISHED_FIGURES else "not published",
                    _yes_no(excluded),
                    METHODS[name],
                ],
                flag=bool(excluded),
            )
        )
    readers = evaluation.readers
    reader_rows = [
        Row(
            [
                "Assessments (latest per reader)",
                str(readers.assessments),
                f"{readers.readers} readers; {_tally(readers.verdicts)}" if readers.assessments else "",
            ]
        ),
        Row(["Agreement rate (verdict agree)", estimate(readers.agreement_rate), ""]),
        Row(
            [
                "Override rate (finding contradicts the AI)",
                estimate(readers.override_rate),
                f"{readers.kappa_pairs} assessments with a present/absent finding",
            ]
        ),
        Row(
            [
                "Cohen's kappa, AI vs readers' findings",
                estimate(readers.kappa),
                f"{readers.kappa_pairs} pairs",
            ]
        ),
        Row(["Reasons given", _tally(readers.reasons) or "-", ""]),
        Row(["Saw the AI result before reporting", _tally(readers.seen_ai_before_report) or "-", ""]),
    ]
    versus = (
        [
            Row(
                [
                    LABELS[k],
                    estimate(readers.reader_vs_reference.get(k)),
                    estimate(readers.ai_vs_reference.get(k)),
                ]
            )
            for k in ("sensitivity", "specificity", "accuracy")
        ]
        if readers.with_reference
        else []
    )
    groups = [
        (
            SUBGROUP_TITLES[name],
            [
                Row(
                    [
                        g.label,
                        f"{g.included} / {g.analysed}",
                        estimate(g.accuracy.metrics["sensitivity"], 2),
                        estimate(g.accuracy.metrics["specificity"], 2),
                        estimate(g.accuracy.metrics["accuracy"], 2),
                        estimate(g.accuracy.metrics["auc"], 2),
                    ]
                )
                for g in found
            ],
        )
        for name, found in evaluation.subgroups.items()
    ]
    filters = [(k, v) for k, v in evaluation.cohort.filters.describe().items() if v]
    plots = {}
    if with_plots:
        acc = evaluation.accuracy
        plots = {
            "roc": data_uri(roc_plot(acc.roc, acc.confusion, evaluation.threshold)),
            "calibration": data_uri(calibration_plot(acc.calibration)),
        }
    return PerformanceView(
        threshold=f"{evaluation.threshold:g}",
        flow=flow,
        warnings=warnings,
        confusion=evaluation.accuracy.confusion.to_json(),
        metrics=metric_rows,
        brier=estimate(evaluation.accuracy.brier),
        readers=reader_rows,
        readers_vs_reference=versus,
        subgroups=groups,
        filters=filters,
        plots=plots,
    )


def text_report(evaluation: Evaluation) -> str:
    """The evaluation for a terminal."""
    v = view(evaluation, with_plots=False)
    lines = ["Local performance of the AI  (" + DISCLAIMER + ")"]
    lines.append("filters: " + (", ".join(f"{k} {val}" for k, val in v.filters) or "none"))
    lines.append("")
    lines.append("Flow of studies")
    lines += [f"  {r.cells[0]:<40}{r.cells[1]:>7}  {r.cells[2]}".rstrip() for r in v.flow]
    lines += [f"warning: {w}" for w in v.warnings]
    c = v.confusion
    lines.append("")
    lines.append(f"At threshold {v.threshold}: TP {c['tp']}  FP {c['fp']}  FN {c['fn']}  TN {c['tn']}")
    lines.append(f"  {'figure':<28}{'local (95 % CI)':<26}{'published':<15}{'excluded':<10}interval")
    for r in v.metrics:
        lines.append(f"  {r.cells[0]:<28}{r.cells[1]:<26}{r.cells[2]:<15}{r.cells[3]:<10}{r.cells[4]}")
    lines.append(f"  {'Brier score':<28}{v.brier}")
    lines.append(f"  published: {PUBLISHED_SOURCE}")
    lines.append("")
    lines.append("Readers")
    lines += [f"  {r.cells[0]:<46}{r.cells[1]:<26}{r.cells[2]}".rstrip() for r in v.readers]
    if v.readers_vs_reference:
        lines.append(
            f"  against the reference standard ({evaluation.readers.with_reference} assessments):"
            f"{'readers':>16}{'AI, same studies':>32}"
        )
        lines += [f"    {r.cells[0]:<30}{r.cells[1]:<26}{r.cells[2]}" for r in v.readers_vs_reference]
    lines.append("")
    lines.append("Subgroups (included / analysed; sensitivity, specificity, accuracy, AUC with 95 % CI)")
    for title, rows in v.subgroups:
        lines.append(f"  {title}")
        lines += [f"    {r.cells[0]:<30}{r.cells[1]:>10}  " + "  ".join(r.cells[2:]) for r in rows]
    return "\n".join(lines) + "\n"


def html_report(evaluation: Evaluation, *, node: str) -> str:
    """A self-contained HTML file (styles and plots inline) for archiving or sending to a committee."""
    from jinja2 import Environment, FileSystemLoader, select_autoescape

    environment = Environment(loader=FileSystemLoader(str(TEMPLATES)), autoescape=select_autoescape(["html"]))
    template = environment.get_template("evaluation_report.html")
    return template.render(
        v=view(evaluation),
        ev=evaluation,
        node=node,
        version=__version__,
        style=STYLE.read_text(encoding="utf-8"),
        disclaimer=DISCLAIMER,
        published_source=PUBLISHED_SOURCE,
        generated=evaluation.generated_at.strftime("%Y-%m-%d %H:%M:%S UTC"),
    )
