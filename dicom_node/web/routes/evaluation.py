"""Local performance and drift monitoring on the dashboard: the performance page (the same `Evaluation` as
`psma-node evaluate`, with the same filters), the monitoring page with its time series and alarms, and their
JSON twins under /api for scripts. Plots are PNGs inline (`data:` URIs, which the CSP allows for images)."""

from __future__ import annotations

import datetime as dt
from dataclasses import asdict, dataclass
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Form, HTTPException, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response

from db.clock import utcnow
from db.cohort import CohortFilter, filter_choices, load_cohort
from db.monitoring import acknowledge, recent_alarms
from db.session import transaction
from dicom_node.evaluation.drift import MonitoringState
from dicom_node.evaluation.monitoring import current_state
from dicom_node.evaluation.performance import Evaluation, evaluate
from dicom_node.evaluation.plots import data_uri, timeseries_plot
from dicom_node.evaluation.presentation import view
from dicom_node.evaluation.statistics import PUBLISHED_SOURCE
from dicom_node.web.context import WebContext
from dicom_node.web.dependencies import ApiUser, Context, Db, PageUser, client_address, refuse_write

router = APIRouter()
PROSTATECTOMY = ("yes", "no", "unknown")


class BadFilter(ValueError):
    """A filter value the page or the API cannot use; the message names the parameter."""


def _day(name: str, text: str) -> dt.date | None:
    if not text.strip():
        return None
    try:
        return dt.date.fromisoformat(text.strip())
    except ValueError:
        raise BadFilter(f"{name}: {text[:40]!r} is not a date (YYYY-MM-DD)") from None


@dataclass(frozen=True)
class EvaluationQuery:
    """The performance page's and /api/evaluation's query parameters, as typed in (checked by `parse`)."""

    since: str = ""
    until: str = ""
    model: str = ""
    scanner: str = ""
    prostatectomy: str = ""
    threshold: str = ""

    def parse(self, default_threshold: float) -> tuple[CohortFilter, float]:
        """A cohort filter and a threshold; `until` is a day included in the range."""
        first, last = _day("since", self.since), _day("until", self.until)
        if first and last and first > last:
            raise BadFilter("since: must not be after until")
        if self.prostatectomy and self.prostatectomy not in PROSTATECTOMY:
            raise BadFilter(f"prostatectomy: must be one of {', '.join(PROSTATECTOMY)}")
        value = default_threshold
        if self.threshold.strip():
            try:
                value = float(self.threshold.replace(",", "."))
            except ValueError:
                raise BadFilter("threshold: not a number") from None
            if not 0 <= value <= 1:
                raise BadFilter("threshold: must lie between 0 and 1")
        midnight = dt.time(tzinfo=dt.timezone.utc)
        filters = CohortFilter(
            since=dt.datetime.combine(first, midnight) if first else None,
            until=dt.datetime.combine(last + dt.timedelta(days=1), midnight) if last else None,
            model=self.model.strip() or None,
            scanner=self.scanner.strip() or None,
            prostatectomy=self.prostatectomy or None,  # type: ignore[arg-type]
        )
        return filters, value


Query = Annotated[EvaluationQuery, Depends()]


def _evaluation(request: Request, context: WebContext, session: Db, query: EvaluationQuery) -> Evaluation:
    """The evaluation the query asks for; a bad filter is recorded as a refusal and raised as BadFilter."""
    try:
        filters, value = query.parse(context.settings.models.threshold)
    except BadFilter as exc:
        context.refusals.refused(
            "api-refused", client_address(request), f"invalid input: {exc}", path=request.url.path
        )
        raise
    return evaluate(load_cohort(session, filters), value)


@router.get("/performance", response_class=HTMLResponse, include_in_schema=False)
def performance_page(
    request: Request, context: Context, user: PageUser, session: Db, query: Query
) -> HTMLResponse:
    error, shown = None, None
    try:
        shown = view(_evaluation(request, context, session, query))
    except BadFilter as exc:
        error = str(exc)
    return context.render(request, "performance.html", user, error=error, form=asdict(query),
                          choices=filter_choices(session), v=shown, published_source=PUBLISHED_SOURCE)


@router.get("/api/evaluation")
def api_evaluation(request: Request, context: Context, _user: ApiUser, session: Db, query: Query) -> Response:
    """The object `psma-node evaluate --json` prints (docs/monitoring.md), for the same filters."""
    try:
        evaluation = _evaluation(request, context, session, query)
    except BadFilter as exc:
        raise HTTPException(422, f"invalid input: {exc}") from None
    return JSONResponse(evaluation.to_json())


def _series_plots(
    state: MonitoringState, alarm_days: dict[tuple[str, str], list[dt.date]]
) -> list[dict[str, Any]]:
    scanners = []
    for scanner in state.scanners:
        plots = []
        for name, series in scanner.series.items():
            if series.points:
                title = series.statistic.title
                plots.append(
                    {
                        "name": name,
                        "title": title,
                        "uri": data_uri(
                            timeseries_plot(
                                title,
                                series.points,
                                scanner.baseline_end,
                                alarm_days.get((scanner.scanner, name), []),
                            )
                        ),
                    }
                )
        scanners.append({"state": scanner, "plots": plots})
    return scanners


@router.get("/monitoring", response_class=HTMLResponse, include_in_schema=False)
def monitoring_page(request: Request, context: Context, user: PageUser, session: Db) -> HTMLResponse:
    state = current_state(session, context.settings, utcnow())
    alarms = recent_alarms(session)
    days: dict[tuple[str, str], list[dt.date]] = {}
    for alarm in alarms:
        if alarm.kind == "statistic":
            days.setdefault((alarm.scanner, alarm.subject), []).append(alarm.raised_on)
    return context.render(
        request,
        "monitoring.html",
        user,
        state=state,
        history=alarms,
        scanners=_series_plots(state, days),
        settings=context.settings.monitoring,
    )


@router.post("/monitoring/alarms/{alarm_id}/acknowledge", include_in_schema=False)
def acknowledge_alarm(
    request: Request,
    alarm_id: int,
    context: Context,
    user: PageUser,
    csrf: Annotated[str, Form()],
    note: Annotated[str, Form()] = "",
) -> Response:
    refuse_write(request, context, user, csrf)
    with transaction(context.sessions) as session:
        try:
            acknowledge(session, alarm_id, actor=user.actor, note=note.strip() or None, now=utcnow())
        except LookupError as exc:
            raise HTTPException(404, str(exc)) from None
        except ValueError as exc:
            raise HTTPException(409, str(exc)) from None
    return RedirectResponse("/monitoring", status_code=303)


@router.get("/api/monitoring/alarms")
def api_alarms(_user: ApiUser, session: Db) -> list[dict[str, Any]]:
    """Every alarm, newest first, open ones with `cleared_at` null."""
    return [
        {
            "id": a.id,
            "kind": a.kind,
            "scanner": a.scanner,
            "subject": a.subject,
            "raised_on": a.raised_on.isoformat(),
            "message": a.message,
            "detail": a.detail,
            "cleared_at": a.cleared_at.isoformat() if a.cleared_at else None,
        }
        for a in recent_alarms(session)
    ]
