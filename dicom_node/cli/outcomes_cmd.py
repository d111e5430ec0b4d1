"""`psma-node outcomes import|list`: reference standards in bulk from a CSV file, and what is recorded.

The CSV format is an interface (docs/assessments.md): a header row with exactly the columns
accession_number,study_instance_uid,recurrence,method,date,source (either identifier may be empty). Every
row is checked before anything is written; a file with a bad row changes nothing unless --partial is given
(then the good rows are applied). Every refused row is reported with its line number and reason, and the
command then exits 1. A row equal to the study's current reference standard is reported as unchanged, so
importing the same file twice adds nothing.
"""

from __future__ import annotations

import csv
import datetime as dt
import json
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import click

from dicom_node.cli.context import CliContext, pass_cli

COLUMNS = ("accession_number", "study_instance_uid", "recurrence", "method", "date", "source")
INPUT_ERROR_EXIT = 1


@dataclass(frozen=True)
class Row:
    """One checked line of the file."""

    line: int
    accession_number: str | None
    study_instance_uid: str | None
    recurrence: bool
    method: str
    date: dt.date
    source: str | None


@dataclass
class ImportReport:
    """Line numbers applied (committed), unchanged (equal to what is recorded) and refused (with the reason)."""

    applied: list[int]
    unchanged: list[int]
    refused: list[tuple[int, str]]


@click.group("outcomes")
def outcomes_group() -> None:
    """Reference standards (what turned out to be true) and reader assessments of the AI results."""


def _read(path: Path) -> tuple[list[dict[str, str]], list[int]]:
    """The file's rows as dicts with their line numbers; a wrong header stops here with a clear message."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise click.ClickException(f"cannot read {path}: {exc}") from None
    reader = csv.DictReader(text.splitlines())
    header = tuple(name.strip() for name in reader.fieldnames or ())
    if header and set(header) == set(COLUMNS) and len(header) == len(COLUMNS):
        reader.fieldnames = list(header)
    else:
        hint = " (separated by semicolons? use commas)" if header and ";" in header[0] else ""
        raise click.ClickException(
            f"{path}: line 1 must be the header {','.join(COLUMNS)}; got {','.join(header) or 'nothing'}{hint}"
        )
    rows: list[dict[str, str]] = []
    lines: list[int] = []
    for record in reader:
        if None in record or any(value is None for value in record.values()):
            rows.append({"_error": "has more or fewer fields than the header"})
        elif not any((value or "").strip() for value in record.values()):
            continue  # blank line
        else:
            rows.append({key: (value or "").strip() for key, value in record.items()})
        lines.append(reader.line_num)
    return rows, lines


def _check(fields: dict[str, str], line: int) -> Row:
    """A line's values in the vocabulary's terms (VocabularyError or ValueError say what is wrong)."""
    from dicom_node.evaluation.vocabulary import ReferenceMethod, parse, parse_date, parse_yes_no

    if "_error" in fields:
        raise ValueError(fields["_error"])
    if not fields["accession_number"] and not fields["study_instance_uid"]:
        raise ValueError("neither accession_number nor study_instance_uid given")
    return Row(
        line=line, accession_number=fields["accession_number"] or None,
        study_instance_uid=fields["study_instance_uid"] or None,
        recurrence=parse_yes_no(fields["recurrence"], "recurrence"),
        method=parse(ReferenceMethod, fields["method"], "method").value, date=parse_date(fields["date"], "date"),
        source=fields["source"] or None,
    )


def import_rows(ctx: CliContext, path: Path, partial: bool, actor: str) -> ImportReport:
    """Check every row (identifiers resolved, duplicates found), then apply all, the good ones, or none."""
    from db.outcomes import (
        OutcomeError,
        StudyRef,
        find_study,
        latest_reference_standards,
        record_reference_standard,
    )
    from db.session import transaction
    from dicom_node.evaluation.vocabulary import ReferenceChannel

    records, lines = _read(path)
    report = ImportReport(applied=[], unchanged=[], refused=[])
    seen: dict[int, int] = {}  # study id -> first line naming it
    with transaction(ctx.sessions(may_upgrade=True)) as session:
        good: list[tuple[Row, StudyRef]] = []
        for fields, line in zip(records, lines):
            try:
                row = _check(fields, line)
                ref = StudyRef(row.accession_number, row.study_instance_uid)
                study = find_study(session, ref)
            except (ValueError, OutcomeError) as exc:
                report.refused.append((line, str(exc)))
                continue
            if study.id in seen:
                report.refused.append((line, f"names the same study as line {seen[study.id]}: one row per study"))
                continue
            seen[study.id] = line
            current = latest_reference_standards(session, [study.id]).get(study.id)
            if current is not None and (current.recurrence, current.method, current.reference_date,
                                        current.source) == (row.recurrence, row.method, row.date, row.source):
                report.unchanged.append(line)
                continue
            good.append((row, ref))
        if report.refused and not partial:
            session.rollback()
            return report
        for row, ref in good:
            try:
                record_reference_standard(session, ref, recurrence=row.recurrence, method=row.method,
                                          reference_date=row.date, source=row.source,
                                          channel=ReferenceChannel.CSV.value, actor=actor)
            except OutcomeError as exc:
                report.refused.append((row.line, str(exc)))
                continue
            report.applied.append(row.line)
        if report.refused and not partial:
            session.rollback()
            report.applied.clear()
    report.refused.sort()
    return report


@outcomes_group.command("import")
@click.argument("csv_file", type=click.Path(path_type=Path, dir_okay=False))
@click.option("--partial", is_flag=True, help="Apply the good rows even when others are refused (exit 1 still).")
@pass_cli
def import_command(ctx: CliContext, csv_file: Path, partial: bool) -> None:
    """Import reference standards from CSV_FILE (columns: accession_number,study_instance_uid,recurrence,
    method,date,source); audited with the operating-system user as the actor."""
    from db.audit import os_user

    report = import_rows(ctx, csv_file, partial, actor=os_user())
    for line, reason in report.refused:
        click.echo(f"{csv_file}: line {line}: {reason}", err=True)
    summary = (f"{len(report.applied)} applied, {len(report.unchanged)} unchanged (already recorded), "
               f"{len(report.refused)} refused")
    if report.refused and not partial:
        click.echo(f"nothing imported: {summary}; fix the lines above, or give --partial to apply the good rows",
                   err=True)
        sys.exit(INPUT_ERROR_EXIT)
    click.echo(summary)
    if report.refused:
        sys.exit(INPUT_ERROR_EXIT)


@outcomes_group.command("list")
@click.option("--accession", default=None, help="Only this accession number.")
@click.option("--json", "as_json", is_flag=True, help="JSON lines (one object per row, with its kind).")
@pass_cli
def list_command(ctx: CliContext, accession: str | None, as_json: bool) -> None:
    """Reference standards and reader assessments recorded, newest first."""
    from db.outcomes import list_assessments, list_reference_standards

    with ctx.sessions()() as session:
        references = list_reference_standards(session, accession_number=accession)
        assessments = list_assessments(session, accession_number=accession)
    if as_json:
        for kind, rows in (("reference-standard", references), ("assessment", assessments)):
            for item in rows:
                click.echo(json.dumps({"kind": kind, **asdict(item)}, default=str))
        return
    click.echo("reference standards:")
    for ref in references:
        click.echo(f"  {ref.accession_number or ref.study_instance_uid}: recurrence "
                   f"{'yes' if ref.recurrence else 'no'} by {ref.method} on {ref.reference_date or '-'} "
                   f"(via {ref.channel}{'' if ref.latest else ', superseded'})")
    if not references:
        click.echo("  (none)")
    click.echo("reader assessments:")
    for row in assessments:
        click.echo(f"  {row.accession_number or row.study_instance_uid}: {row.reader} ({row.source}) "
                   f"{row.verdict}, finding {row.reader_finding}; AI {row.ai_finding}"
                   f"{'' if row.latest else ' (replaced by a newer one)'}")
    if not assessments:
        click.echo("  (none)")
