"""The evaluation's and the monitoring's plots as PNG bytes (matplotlib, no display, no global state).

PNG rather than SVG: the dashboard's Content-Security-Policy forbids inline styles, which matplotlib's SVG
uses, while `img-src data:` lets a page and the self-contained HTML report carry a PNG inline. Figures are
built with `matplotlib.figure.Figure`, not pyplot, so concurrent dashboard requests share nothing.
"""

from __future__ import annotations

import base64
import datetime as dt
import io
from collections.abc import Sequence

from matplotlib.axes import Axes
from matplotlib.dates import date2num
from matplotlib.figure import Figure

from dicom_node.evaluation.drift import SeriesPoint
from dicom_node.evaluation.statistics import PUBLISHED_FIGURES, CalibrationBin, Confusion, RocPoint

DPI = 100
LOCAL_COLOUR, PUBLISHED_COLOUR, BAND_COLOUR, ALARM_COLOUR = "#1f5f99", "#b35900", "#9ecae1", "#c0392b"


def png(figure: Figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=DPI, bbox_inches="tight", metadata={"Software": None})
    return buffer.getvalue()


def data_uri(image: bytes) -> str:
    """A PNG as a `data:` URI, for an <img> in a page or a self-contained file."""
    return "data:image/png;base64," + base64.b64encode(image).decode("ascii")


def _note_empty(axes: Axes, text: str) -> None:
    axes.text(0.5, 0.5, text, ha="center", va="center", fontsize=9, color="#666", transform=axes.transAxes,
              wrap=True)


def roc_plot(points: Sequence[RocPoint], confusion: Confusion, threshold: float) -> bytes:
    """The local ROC curve, the local operating point at the threshold and the published one."""
    figure = Figure(figsize=(4.2, 4.0))
    axes = figure.add_subplot()
    axes.plot([0, 1], [0, 1], linestyle=":", color="#999", linewidth=1)
    if points:
        axes.step(
            [p.false_positive_rate for p in points],
            [p.true_positive_rate for p in points],
            where="post",
            color=LOCAL_COLOUR,
            label="local ROC",
        )
        positives, negatives = confusion.tp + confusion.fn, confusion.tn + confusion.fp
        if positives and negatives:
            axes.plot(
                [confusion.fp / negatives],
                [confusion.tp / positives],
                "o",
                color=LOCAL_COLOUR,
                label=f"local, threshold {threshold:g}",
            )
    else:
        _note_empty(axes, "no ROC curve: both outcomes must occur\namong the included studies")
    axes.plot(
        [1 - PUBLISHED_FIGURES["specificity"]],
        [PUBLISHED_FIGURES["sensitivity"]],
        "s",
        color=PUBLISHED_COLOUR,
        label="published test set",
    )
    axes.set(
        xlim=(-0.02, 1.02),
        ylim=(-0.02, 1.02),
        xlabel="1 - specificity",
        ylabel="sensitivity",
        title="ROC curve",
    )
    axes.legend(loc="lower right", fontsize=8)
    return png(figure)


def calibration_plot(bins: Sequence[CalibrationBin]) -> bytes:
    """Observed share of recurrences against the mean predicted probability, per bin (marker area ~ count)."""
    figure = Figure(figsize=(4.2, 4.0))
    axes = figure.add_subplot()
    axes.plot([0, 1], [0, 1], linestyle=":", color="#999", linewidth=1, label="perfect calibration")
    filled = [(b.mean_probability, b.observed_rate, b.count) for b in bins
              if b.count and b.mean_probability is not None and b.observed_rate is not None]
    if filled:
        largest = max(count for _, _, count in filled)
        predicted, observed = [p for p, _, _ in filled], [o for _, o, _ in filled]
        axes.plot(predicted, observed, color=LOCAL_COLOUR)
        axes.scatter(
            predicted,
            observed,
            s=[20 + 180 * count / largest for _, _, count in filled],
            color=LOCAL_COLOUR,
            zorder=3,
            label="local (area ~ studies)",
        )
    else:
        _note_empty(axes, "no included studies")
    axes.set(
        xlim=(-0.02, 1.02),
        ylim=(-0.02, 1.02),
        xlabel="mean predicted probability",
        ylabel="observed share with recurrence",
        title="Calibration",
    )
    axes.legend(loc="upper left", fontsize=8)
    return png(figure)


def timeseries_plot(
    title: str, points: Sequence[SeriesPoint], baseline_end: dt.date | None, alarm_days: Sequence[dt.date]
) -> bytes:
    """A daily statistic, its baseline's 95 % band (per day: it narrows with more results) and alarms."""
    figure = Figure(figsize=(7.0, 2.2))
    axes = figure.add_subplot()
    if points:
        axes.xaxis_date()  # days go in as matplotlib's date numbers, shown as dates
        days = date2num([p.day for p in points])
        banded = [(p.day, p.low, p.high) for p in points if p.low is not None and p.high is not None]
        if banded:
            axes.fill_between(
                date2num([day for day, _, _ in banded]),
                [low for _, low, _ in banded],
                [high for _, _, high in banded],
                step="mid",
                color=BAND_COLOUR,
                alpha=0.6,
                label="baseline 95 % interval",
            )
        axes.plot(days, [p.value for p in points], marker=".", color=LOCAL_COLOUR, linewidth=1, label="daily")
        outside = [p for p in points if p.outside]
        if outside:
            axes.plot(
                date2num([p.day for p in outside]),
                [p.value for p in outside],
                "o",
                color=ALARM_COLOUR,
                markersize=4,
                label="outside",
            )
        if baseline_end is not None:
            axes.axvline(float(date2num(baseline_end)), color="#555", linestyle="--", linewidth=1, label="baseline ends")
        for day in alarm_days:
            axes.axvline(float(date2num(day)), color=ALARM_COLOUR, linewidth=1.5)
        axes.legend(loc="upper left", fontsize=7, ncol=4)
        figure.autofmt_xdate()
    else:
        _note_empty(axes, "no data")
    axes.set_title(title, fontsize=10)
    return png(figure)
