"""`psma-node doctor`: check this machine against the configuration and print what to fix."""

from __future__ import annotations

import json
import logging
import sys

import click

from dicom_node.cli.context import CliContext, pass_cli


@click.command("doctor")
@click.option("--timeout", default=3.0, show_default=True, type=click.FloatRange(min=0.1),
              help="Seconds to wait for each peer (C-ECHO, database, DICOMweb).")
@click.option("--json", "as_json", is_flag=True, help="Print the checks as JSON instead of lines.")
@pass_cli
def doctor_command(ctx: CliContext, timeout: float, as_json: bool) -> None:
    """Check ports, folders, database, destinations, weights and tools; exit 1 if any check FAILs."""
    from dicom_node.doctor import Status, run_checks

    settings = ctx.settings()
    # pynetdicom logs refused associations at ERROR; the doctor reports them in its own words.
    logging.getLogger("pynetdicom").setLevel(logging.CRITICAL)
    results = run_checks(settings, timeout=timeout)
    if as_json:
        click.echo(json.dumps(
            [{"check": r.name, "status": r.status.value, "message": r.message, "fix": r.fix}
             for r in results],
            indent=2,
        ))
    else:
        for result in results:
            click.echo(result.line())
        counts = {status: sum(r.status is status for r in results) for status in Status}
        click.echo(f"{counts[Status.FAIL]} FAIL, {counts[Status.WARN]} WARN, {counts[Status.OK]} OK")
    sys.exit(1 if any(r.status is Status.FAIL for r in results) else 0)
