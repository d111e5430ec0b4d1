"""`psma-node synth OUT_DIR`: write a synthetic PSMA PET/CT study (and optionally C-STORE it somewhere)."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from dicom_node.cli.context import CliContext, pass_cli
from dicom_node.synth import SynthOptions, generate_study
from dicom_node.synth.dicom_writer import TRANSFER_SYNTAXES, VENDORS
from dicom_node.synth.transmit import SendError, send_files, study_files


def _peer(value: str | None) -> tuple[str, int] | None:
    if value is None:
        return None
    host, _, port = value.rpartition(":")
    if not host or not port.isdigit():
        raise click.BadParameter(f"expected HOST:PORT, got {value!r}", param_hint="--send")
    return host, int(port)


@click.command("synth")
@click.argument("out_dir", type=click.Path(file_okay=False, path_type=Path))
@click.option("--seed", type=int, default=0, show_default=True, help="Random seed (same seed, same study).")
@click.option("--recurrence/--no-recurrence", default=True, show_default=True,
              help="Focal PSMA-avid recurrence in the prostate or prostate bed.")
@click.option("--prostatectomy/--no-prostatectomy", default=False, show_default=True,
              help="Empty prostate bed instead of a prostate.")
@click.option("--psa", type=float, default=3.2, show_default=True,
              help="PSA (ng/ml) in the clinical history.")
@click.option("--no-psa", is_flag=True, help="Leave the PSA out of the clinical history.")
@click.option("--ct-matrix", type=int, default=512, show_default=True)
@click.option("--pet-matrix", type=int, default=200, show_default=True)
@click.option("--extent-mm", type=float, default=600.0, show_default=True,
              help="Cranio-caudal extent (always covers the pelvis; >= 150).")
@click.option("--ct-slice-mm", type=float, default=3.0, show_default=True)
@click.option("--pet-slice-mm", type=float, default=4.0, show_default=True)
@click.option("--vendor", type=click.Choice(sorted(VENDORS)), default="siemens", show_default=True)
@click.option("--transfer-syntax", type=click.Choice(sorted(TRANSFER_SYNTAXES)), default="explicit",
              show_default=True)
@click.option("--tracer", default="PSMA-1007", show_default=True, help="Radiopharmaceutical name written.")
@click.option("--nodal-lesions", type=int, default=0, show_default=True, help="Iliac nodal lesions.")
@click.option("--extra-foci", type=int, default=0, show_default=True,
              help="Extra prostate / prostate-bed foci of random size and intensity (0-5).")
@click.option("--near-bladder-focus", is_flag=True, help="Add a focus 8 mm from the bladder wall.")
@click.option("--send", "send_to", metavar="HOST:PORT", default=None, help="C-STORE every file there.")
@click.option("--aet", "called_aet", default=None,
              help="Called AE title for --send (default: the configured node AE title).")
@click.option("--calling-aet", default="PSMA_SYNTH", show_default=True, help="Our AE title for --send.")
@pass_cli
def synth_command(ctx: CliContext, out_dir: Path, seed: int, recurrence: bool, prostatectomy: bool,
                  psa: float, no_psa: bool, ct_matrix: int, pet_matrix: int, extent_mm: float,
                  ct_slice_mm: float, pet_slice_mm: float, vendor: str, transfer_syntax: str, tracer: str,
                  nodal_lesions: int, extra_foci: int, near_bladder_focus: bool, send_to: str | None,
                  called_aet: str | None, calling_aet: str) -> None:
    """Write a synthetic [18F]PSMA PET/CT study with ground truth to OUT_DIR (research use only)."""
    peer = _peer(send_to)
    options = SynthOptions(
        seed=seed, recurrence=recurrence, prostatectomy=prostatectomy, psa=None if no_psa else psa,
        ct_matrix=ct_matrix, pet_matrix=pet_matrix, extent_mm=extent_mm, ct_slice_mm=ct_slice_mm,
        pet_slice_mm=pet_slice_mm, vendor=vendor, transfer_syntax=transfer_syntax, tracer=tracer,
        nodal_lesions=nodal_lesions, extra_foci=extra_foci, near_bladder_focus=near_bladder_focus,
    )
    try:
        truth = generate_study(out_dir, options)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from exc
    click.echo(f"wrote {truth.n_ct_files} CT + {truth.n_pet_files} PET files to {out_dir}")
    click.echo(f"ground truth: {out_dir / 'ground_truth.json'}")
    click.echo(f"study {truth.study_uid}  accession {truth.accession_number}  "
               f"recurrence {'yes' if truth.recurrence else 'no'}")
    if peer is None:
        return
    aet = called_aet or ctx.settings().node.ae_title
    files = study_files(out_dir)
    try:
        with click.progressbar(length=len(files), label=f"sending to {aet}", file=sys.stderr) as bar:
            report = send_files(files, peer[0], peer[1], aet, calling_aet, on_sent=lambda: bar.update(1))
    except SendError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(1)
    click.echo(f"sent {report.sent}/{len(files)} instances to {aet}@{peer[0]}:{peer[1]}")
    if not report.ok:
        for path, reason in report.failures[:20]:
            click.echo(f"error: {path}: {reason}", err=True)
        click.echo(f"error: {len(report.failures)} instance(s) not stored", err=True)
        sys.exit(1)
