"""`psma-node analyze DICOM_DIR`: the whole analysis offline, on a folder, without the node running."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click
import numpy as np

from dicom_node.cli.context import CONFIG_ERROR_EXIT, CliContext, pass_cli
from inference.clinical import RegisteredClinical
from inference.runtime import prefer_passive_openmp
from inference.discover import DiscoveryError, find_pet_ct
from inference.model_specs import SPECS

if TYPE_CHECKING:
    from inference.result import AnalysisResult

ANALYSIS_ERROR_EXIT = 1
BANNER = "AI RESULT - RESEARCH SOFTWARE - NOT FOR DIAGNOSTIC USE"


def _center(value: str | None) -> tuple[float, float, float] | None:
    if value is None:
        return None
    try:
        parts = tuple(float(v) for v in value.replace(" ", "").split(","))
    except ValueError:
        parts = ()
    if len(parts) != 3 or not all(np.isfinite(parts)):
        raise click.BadParameter(
            f"expected X,Y,Z in LPS millimetres, got {value!r}", param_hint="--center-lps"
        )
    return parts  # type: ignore[return-value]


def _registered(psa: float | None, prostatectomy: str | None) -> RegisteredClinical | None:
    if psa is None and prostatectomy is None:
        return None
    return RegisteredClinical(
        psa_ng_ml=psa,
        prostatectomy=None if prostatectomy is None else prostatectomy == "yes",
        detail="given on the command line",
    )


@click.command("analyze")
@click.argument("dicom_dir", type=click.Path(path_type=Path, exists=True, file_okay=False))
@click.option(
    "--model",
    "model_id",
    type=click.Choice(list(SPECS), case_sensitive=False),
    default=None,
    help="Model to run (default: models.routing).",
)
@click.option(
    "--center-lps",
    "center",
    default=None,
    metavar="X,Y,Z",
    help="Centre of the 200 mm cube in LPS mm; bypasses the localiser.",
)
@click.option(
    "--psa", type=click.FloatRange(min=0), default=None, help="PSA in ng/ml (else tags, else imputed)."
)
@click.option(
    "--prostatectomy",
    type=click.Choice(["yes", "no"]),
    default=None,
    help="Prostatectomy status (else tags, else imputed as yes, as published).",
)
@click.option(
    "--dump-input",
    "dump_input",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help="Write the exact float32 network input (channels, *ROI) as .npy.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@pass_cli
def analyze_command(
    ctx: CliContext,
    dicom_dir: Path,
    model_id: str | None,
    center: str | None,
    psa: float | None,
    prostatectomy: str | None,
    dump_input: Path | None,
    as_json: bool,
) -> None:
    """Analyse the PET/CT examination in DICOM_DIR (any layout) and print the result."""
    prefer_passive_openmp()  # before torch loads (bench/RESULTS.md, "Inference pipeline")
    from dicom_node.inference_options import analysis_options
    from inference.analysis import AnalysisError, analyse  # torch: only when analysing
    from inference.network import DeviceError, resolve_device

    settings = ctx.settings()
    center_lps = _center(center)
    try:
        device = resolve_device(settings.models.device).type
    except DeviceError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(CONFIG_ERROR_EXIT)
    try:
        pair = find_pet_ct(dicom_dir)
        result = analyse(
            pair.pet.paths,
            pair.ct.paths,
            analysis_options(settings, device),
            registered=_registered(psa, prostatectomy),
            center_lps=center_lps,
            model_id=model_id,
        )
    except (DiscoveryError, AnalysisError) as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(ANALYSIS_ERROR_EXIT)
    result.warnings[:0] = pair.notes
    if dump_input is not None and result.model_input is not None:
        dump_input.parent.mkdir(parents=True, exist_ok=True)
        np.save(dump_input, result.model_input.astype(np.float32, copy=False))
    if as_json:
        click.echo(json.dumps(result.to_summary(), indent=2))
    else:
        click.echo(_text(result))


def _text(result: AnalysisResult) -> str:
    """A short human report; the banner first, because this output gets copied around."""
    lines = [BANNER, ""]
    probability = "n/a" if result.probability is None else f"{result.probability:.3f}"
    lines.append(
        f"Local recurrence: {result.finding.value.upper()}  (p = {probability}, threshold "
        f"{result.threshold:g}, model {result.model_id})"
    )
    lines.append(f"Classifier: {result.classifier_note}")
    lines.append(f"PSA: {result.psa.value} ng/ml ({result.psa.source}: {result.psa.detail})")
    status = "yes" if result.prostatectomy.value else "no"
    lines.append(f"Prostatectomy: {status} ({result.prostatectomy.source}: {result.prostatectomy.detail})")
    loc = result.localisation
    lines.append(
        f"Centre: {', '.join(f'{v:.1f}' for v in loc.center_lps)} LPS mm ({loc.organ}, {loc.method})"
    )
    quant = result.quantification
    if quant is not None:
        lines.append(
            f"SUVmax {quant.suv_max:.2f}, SUVmean {quant.suv_mean:.2f}, focal volume "
            f"{quant.focal_volume_ml:.1f} ml ({quant.suv_peak_region_note})"
        )
    lines.append(
        f"SUV factor: {result.suv_factor:.6g} g/Bq*ml; device {result.device}; software "
        f"{result.software_version}"
    )
    lines.append("Timings (s): " + ", ".join(f"{k} {v:.2f}" for k, v in result.timings.items()))
    for warning in result.warnings:
        lines.append(f"Warning: {warning}")
    lines.append(f"Published performance: {result.published_performance}")
    return "\n".join(lines)
