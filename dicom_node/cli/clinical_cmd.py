"""`psma-node clinical set|show`: register PSA and prostatectomy status for an accession."""

from __future__ import annotations

import logging
import sys

import click

from db.clinical import ClinicalInputError, clinical_history, lookup_clinical, register_clinical_info
from db.session import transaction
from dicom_node.cli.context import CliContext, pass_cli

log = logging.getLogger(__name__)
INPUT_ERROR_EXIT = 1


@click.group("clinical")
def clinical_group() -> None:
    """PSA and prostatectomy status used by the model (registered values win over DICOM tags)."""


@clinical_group.command("set")
@click.argument("accession")
@click.option("--psa", type=float, default=None, help="PSA in ng/ml.")
@click.option("--prostatectomy", type=click.Choice(["yes", "no"]), default=None, help="Prostatectomy status.")
@click.option("--patient-id", default=None, help="Patient ID (also matches studies of this patient).")
@pass_cli
def set_command(
    ctx: CliContext, accession: str, psa: float | None, prostatectomy: str | None, patient_id: str | None
) -> None:
    """Register PSA and/or prostatectomy status for ACCESSION (audited; newest value wins)."""
    sessions = ctx.sessions(may_upgrade=True)
    try:
        with transaction(sessions) as session:
            row = register_clinical_info(
                session,
                accession,
                psa_ng_ml=psa,
                prostatectomy=None if prostatectomy is None else prostatectomy == "yes",
                patient_id=patient_id,
                source="cli",
                actor="cli",
            )
            row_id = row.id
    except ClinicalInputError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(INPUT_ERROR_EXIT)
    log.info("clinical metadata registered", extra={"source": "cli", "clinical_info_id": row_id})
    click.echo(
        f"registered for accession {accession}: PSA {psa if psa is not None else '-'} ng/ml, "
        f"prostatectomy {prostatectomy or '-'} (entry {row_id})"
    )


@clinical_group.command("show")
@click.argument("accession")
@click.option("--patient-id", default=None, help="Also show values registered for this patient.")
@pass_cli
def show_command(ctx: CliContext, accession: str, patient_id: str | None) -> None:
    """What the model will be told for ACCESSION, and the registration history."""
    sessions = ctx.sessions(may_upgrade=True)
    with transaction(sessions) as session:
        current = lookup_clinical(session, accession, patient_id)
        history = clinical_history(session, accession, patient_id)
        if current is None:
            click.echo(
                f"nothing registered for accession {accession}: DICOM tags, then imputation/inference apply"
            )
            return
        status = {True: "yes", False: "no", None: "-"}[current.prostatectomy]
        psa = "-" if current.psa_ng_ml is None else f"{current.psa_ng_ml:g} ng/ml"
        click.echo(f"accession {accession}: PSA {psa}, prostatectomy {status}")
        for row in history:
            row_status = {True: "yes", False: "no", None: "-"}[row.prostatectomy]
            row_psa = "-" if row.psa_ng_ml is None else f"{row.psa_ng_ml:g}"
            click.echo(
                f"  {row.created_at:%Y-%m-%d %H:%M:%S} psa={row_psa} prostatectomy={row_status} "
                f"source={row.source} accession={row.accession_number or '-'} "
                f"patient={row.patient_id or '-'}"
            )
