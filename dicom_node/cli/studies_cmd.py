"""`psma-node studies list|show|reprocess`: where each study is, its full story, and a new analysis.

`show` answers "what happened to this study": every audit event in order (with the rule that fired and the
reason), instances per series, jobs with worker, device and timings, and results with what superseded what.
`reprocess` reopens a study as an audited admin action; assembly then judges and queues it again and the new
result supersedes the old one.
"""

from __future__ import annotations

import datetime as dt
import json
import sys

import click

from db.listings import list_studies
from db.states import StudyState
from dicom_node.cli.context import CliContext, pass_cli
from dicom_node.cli.times import parse_time

NOT_FOUND_EXIT = 3


def _when(value: dt.datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S") if value is not None else "-"


@click.group("studies")
def studies_group() -> None:
    """Studies the node received: state, timeline, reprocessing."""


@studies_group.command("list")
@click.option(
    "--state", type=click.Choice([s.value for s in StudyState]), default=None, help="Only this state."
)
@click.option("--since", default=None, help="Received since: ISO date/time or an age (30m, 12h, 7d).")
@click.option("--limit", type=click.IntRange(min=1), default=200, show_default=True, help="Most recent N.")
@click.option("--json", "as_json", is_flag=True, help="JSON lines instead of a table.")
@pass_cli
def list_command(ctx: CliContext, state: str | None, since: str | None, limit: int, as_json: bool) -> None:
    """Studies, most recently received first."""
    start = parse_time(since) if since else None
    with ctx.engine().connect() as connection:
        rows = list_studies(connection, state=state, limit=limit)
    if start is not None:
        rows = [row for row in rows if (row.last_received_at or start) >= start]
    if as_json:
        for row in rows:
            click.echo(
                json.dumps(
                    {
                        "study_uid": row.study_uid,
                        "accession_number": row.accession_number,
                        "state": row.state,
                        "reason": row.state_reason,
                        "instances": row.instance_count,
                        "last_received_at": _when(row.last_received_at),
                        "finding": row.finding,
                        "probability": row.probability,
                    }
                )
            )
        return
    click.echo(f"{'ACCESSION':<16} {'STATE':<10} {'INST':>5} {'LAST RECEIVED':<19} {'RESULT':<22} REASON")
    for row in rows:
        result = (
            f"{row.finding} {row.probability:.3f}" if row.probability is not None else (row.finding or "-")
        )
        click.echo(
            f"{(row.accession_number or '-')[:16]:<16} {row.state:<10} {row.instance_count:>5} "
            f"{_when(row.last_received_at):<19} {result[:22]:<22} {row.state_reason or ''}"
        )
    if not rows:
        click.echo("(no studies)")


@studies_group.command("show")
@click.argument("key")
@pass_cli
def show_command(ctx: CliContext, key: str) -> None:
    """The story of one study (by accession number or Study Instance UID)."""
    from db.outcomes import list_assessments, list_reference_standards
    from db.queries import study_timeline  # the ORM: only for `show` and `reprocess`, `list` stays quick

    with ctx.sessions()() as session:
        story = study_timeline(session, key)
        uid = story.study.study_uid if story is not None else None
        assessments = list_assessments(session, study_instance_uid=uid) if uid else []
        references = list_reference_standards(session, study_instance_uid=uid) if uid else []
    if story is None:
        click.echo(f"error: no study with accession number or UID {key!r}", err=True)
        sys.exit(NOT_FOUND_EXIT)
    study = story.study
    click.echo(f"study {study.study_uid}  accession {study.accession_number or '-'}")
    click.echo(
        f"state {study.state} (generation {story.generation})"
        + (f": {study.state_reason}" if study.state_reason else "")
    )
    click.echo(f"analysed PET {story.pet_series_uid or '-'}  CT {story.ct_series_uid or '-'}")
    click.echo("\nseries:")
    for series in story.series:
        chosen = (
            " [PET analysed]"
            if series.series_uid == story.pet_series_uid
            else (" [CT analysed]" if series.series_uid == story.ct_series_uid else "")
        )
        click.echo(
            f"  {series.modality or '?':<3} {series.instances:>5} instances  {series.series_uid}{chosen}"
            + ("" if series.analysable else "  (not analysable)")
        )
    click.echo("\njobs:")
    for job in story.jobs:
        timings = " ".join(
            f"{k}={v:.2f}s" for k, v in (job.timings or {}).items() if isinstance(v, (int, float))
        )
        click.echo(
            f"  job {job.id} gen {job.generation} {job.state:<9} attempts {job.attempts} "
            f"worker {job.worker_id or '-'} started {_when(job.started_at)} finished {_when(job.finished_at)}"
            + (f"  {timings}" if timings else "")
            + (f"  error: {job.error}" if job.error else "")
        )
    click.echo("\nresults:")
    for result in story.results:
        probability = f"{result.probability:.3f}" if result.probability is not None else "n/a"
        superseded = f"  superseded by result {result.superseded_by_id}" if result.superseded_by_id else ""
        click.echo(
            f"  result {result.id} (job {result.job_id}) {result.finding} p={probability} "
            f"model {result.model_id or '-'}  SR {result.sr_sop_instance_uid or '-'}{superseded}"
        )
        summary = result.summary or {}
        if summary.get("results_mode") == "shadow":
            click.echo("    shadow mode: sent to evaluation destinations only, never to the clinical PACS or sender")
        for violation in summary.get("envelope_violations") or []:
            click.echo(f"    outside the conditions the model was validated for: {violation}")
    click.echo("\nreader assessments:")
    for row in reversed(assessments):
        click.echo(
            f"  {_when(row.assessed_at)} result {row.result_id} {row.reader} ({row.source}): {row.verdict}, "
            f"reader finding {row.reader_finding}" + (f", reason {row.reason}" if row.reason else "")
            + ("" if row.latest else "  [replaced by a newer one of this reader]")
        )
    click.echo("\nreference standard:")
    for ref in reversed(references):
        click.echo(
            f"  {_when(ref.created_at)} recurrence {'yes' if ref.recurrence else 'no'} by {ref.method} "
            f"({ref.reference_date or 'no date'}; {ref.source or 'no source'}; via {ref.channel})"
            + ("" if ref.latest else "  [superseded]")
        )
    click.echo("\ntimeline:")
    for event in story.events:
        rule = event.detail.get("rule") if isinstance(event.detail, dict) else None
        click.echo(
            f"  {_when(event.created_at)} {event.category:<11} {event.action:<16} {event.outcome:<8} "
            + (f"[{rule}] " if rule else "")
            + (event.reason or "")
            + (f"  actor={event.actor}" if event.actor else "")
        )


@studies_group.command("reprocess")
@click.argument("key")
@click.option(
    "--reason",
    default="reprocess requested by an administrator",
    show_default=True,
    help="Recorded in the audit trail.",
)
@pass_cli
def reprocess_command(ctx: CliContext, key: str, reason: str) -> None:
    """Analyse a study again (by accession number or UID); the new result supersedes the current one."""
    from db.audit import os_user, record
    from db.queries import find_study
    from db.session import transaction
    from dicom_node.assemble import reopen  # the ORM and assembly's rules: only here, `list` stays quick

    actor = os_user()
    with transaction(ctx.sessions()) as session:
        study = find_study(session, key)
        if study is None:
            click.echo(f"error: no study with accession number or UID {key!r}", err=True)
            sys.exit(NOT_FOUND_EXIT)
        if study.state == StudyState.RECEIVING.value:
            click.echo(f"study {study.study_uid} is being assembled already; nothing to do")
            return
        previous = study.state
        record(
            session,
            "admin",
            "reprocess",
            study_uid=study.study_uid,
            actor=actor,
            reason=reason,
            previous_state=previous,
            generation=study.generation,
        )
        if not reopen(session, study, reason=f"{reason} (by {actor})", rule="admin-reprocess", actor=actor):
            click.echo("error: the study changed while reopening it; try again", err=True)
            sys.exit(1)
        click.echo(
            f"study {study.study_uid} reopened (was {previous}, now generation {study.generation}); "
            "it is analysed again once assembly confirms it is complete"
        )
