"""`psma-node evaluate`: how the AI performs on this site's own patients, as text, JSON or an HTML report.

`--json` prints one object whose layout is documented in docs/monitoring.md and kept stable for scripts.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

import click

from dicom_node.cli.context import CliContext, pass_cli
from dicom_node.cli.times import parse_time

if TYPE_CHECKING:
    from db.cohort import ProstatectomyFilter  # the command imports db lazily, so that --help stays quick


def _time(_ctx: click.Context, _param: click.Parameter, value: str | None) -> dt.datetime | None:
    return parse_time(value) if value else None


def _write_atomically(path: Path, text: str) -> None:
    """The report appears whole or not at all (a half-written file is never left behind)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as file:
            file.write(text)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


@click.command("evaluate")
@click.option(
    "--since", callback=_time, help="Studies first received at or after (ISO date/time or age: 90d)."
)
@click.option("--until", callback=_time, help="Studies first received before (ISO date/time or age).")
@click.option("--model", default=None, help="Only results of this model id (D) or weights sha256 prefix.")
@click.option(
    "--scanner", default=None, help="Only this scanner (manufacturer and model, as listed in the report)."
)
@click.option(
    "--prostatectomy",
    type=click.Choice(["yes", "no", "unknown"]),
    default=None,
    help="Only a known status (yes / no), or an unknown one (imputed or inferred).",
)
@click.option(
    "--threshold",
    type=click.FloatRange(0, 1),
    default=None,
    help="Probability at or above which a call is positive (default: models.threshold).",
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object (docs/monitoring.md).")
@click.option(
    "--html",
    "html_file",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Also write a self-contained HTML report with its plots to this file.",
)
@pass_cli
def evaluate_command(
    ctx: CliContext,
    since: dt.datetime | None,
    until: dt.datetime | None,
    model: str | None,
    scanner: str | None,
    prostatectomy: ProstatectomyFilter | None,
    threshold: float | None,
    as_json: bool,
    html_file: Path | None,
) -> None:
    """Local performance: flow of studies, accuracy with 95 % intervals beside the published figures,
    readers, subgroups. Research use only: NOT FOR DIAGNOSTIC USE."""
    from db.cohort import CohortFilter, load_cohort
    from dicom_node.evaluation.performance import evaluate
    from dicom_node.evaluation.presentation import html_report, text_report

    if since and until and since >= until:
        raise click.BadParameter("--since must be before --until", param_hint="--since")
    settings = ctx.settings()
    sessions = ctx.sessions(settings)
    filters = CohortFilter(
        since=since, until=until, model=model, scanner=scanner, prostatectomy=prostatectomy
    )
    with sessions() as session:
        cohort = load_cohort(session, filters)
    evaluation = evaluate(cohort, settings.models.threshold if threshold is None else threshold)
    if html_file is not None:
        _write_atomically(html_file, html_report(evaluation, node=settings.node.ae_title))
        click.echo(f"wrote {html_file}", err=True)
    if as_json:
        click.echo(json.dumps(evaluation.to_json(), indent=2, allow_nan=False))
    else:
        sys.stdout.write(text_report(evaluation))
