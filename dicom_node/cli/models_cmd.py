"""`psma-node models list|import|verify`: the published checkpoints this node can run."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import click

from dicom_node.cli.context import CliContext, pass_cli
from inference.model_specs import SPECS, ZENODO_DOI, get_spec

log = logging.getLogger(__name__)
FAILED_EXIT = 1


@click.group("models")
def models_group() -> None:
    """Published model checkpoints (Korb et al., Cancers 2025; weights: doi:10.5281/zenodo.15174580)."""


@models_group.command("list")
@pass_cli
def list_command(ctx: CliContext) -> None:
    """Every published model, its input, and whether weights are installed."""
    from inference.checkpoints import CheckpointError, installed_model

    settings = ctx.settings()
    models_dir = settings.models.models_dir
    default = settings.models.default_model
    for model_id in SPECS:
        spec = get_spec(model_id, settings.models.expected_sha256)
        try:
            found = installed_model(models_dir, model_id)
        except CheckpointError as exc:
            state = f"registry entry broken: {exc}"
        else:
            state = (
                f"installed {found.path.name} sha256 {found.sha256} ({found.imported_at})"
                if found
                else "not installed"
            )
        marker = " (default)" if model_id == default else ""
        click.echo(f"{model_id}{marker}: {state}")
        click.echo(f"    input {spec.input_shape}, {spec.description}")
        click.echo(
            f"    {spec.published_accuracy}; expected sha256: {spec.expected_sha256 or 'not configured'}"
        )
    click.echo(f"models_dir: {models_dir}; weights: Zenodo doi:{ZENODO_DOI}")


@models_group.command("import")
@click.argument("checkpoint", type=click.Path(path_type=Path, dir_okay=False))
@click.option(
    "--as",
    "model_id",
    required=True,
    type=click.Choice(list(SPECS), case_sensitive=False),
    help="Which published model these weights are.",
)
@pass_cli
def import_command(ctx: CliContext, checkpoint: Path, model_id: str) -> None:
    """Check CHECKPOINT (safe load, shapes, sha256) and install it as MODEL."""
    from inference.checkpoints import CheckpointError, import_checkpoint

    settings = ctx.settings()
    spec = get_spec(model_id, settings.models.expected_sha256)
    try:
        installed = import_checkpoint(checkpoint, spec, settings.models.models_dir)
    except CheckpointError as exc:
        log.error(
            "checkpoint refused", extra={"model_id": spec.id, "file": str(checkpoint), "reason": str(exc)}
        )
        click.echo(f"error: {exc}", err=True)
        sys.exit(FAILED_EXIT)
    log.info("checkpoint imported", extra={"model_id": spec.id, "sha256": installed.sha256})
    click.echo(
        f"imported {checkpoint} as model {spec.id}: {installed.path} sha256 {installed.sha256} "
        f"({installed.checkpoint_format})"
    )


@models_group.command("verify")
@click.option(
    "--model",
    "model_ids",
    multiple=True,
    type=click.Choice(list(SPECS), case_sensitive=False),
    help="Only these models (default: every installed one, and the default model).",
)
@pass_cli
def verify_command(ctx: CliContext, model_ids: tuple[str, ...]) -> None:
    """Re-hash and re-load installed checkpoints; exit 1 if one is broken or the default model is missing."""
    from inference.checkpoints import (
        CheckpointError,
        WeightsMissing,
        missing_weights_message,
        verify_installed,
    )

    settings = ctx.settings()
    models_dir = settings.models.models_dir
    wanted = [get_spec(m).id for m in model_ids] or [
        m for m in SPECS if m == settings.models.default_model or _has_entry(models_dir, m)
    ]
    failed = False
    for model_id in wanted:
        spec = get_spec(model_id, settings.models.expected_sha256)
        try:
            installed = verify_installed(models_dir, spec)
        except WeightsMissing:
            log.warning("model weights missing", extra={"model_id": model_id})
            click.echo(f"{model_id}: MISSING - {missing_weights_message(model_id, models_dir)}", err=True)
            failed = True
        except CheckpointError as exc:
            click.echo(f"{model_id}: FAILED - {exc}", err=True)
            failed = True
        else:
            expected = (
                "matches configured sha256" if spec.expected_sha256 else "no expected sha256 configured"
            )
            click.echo(f"{model_id}: OK sha256 {installed.sha256} ({expected})")
    if failed:
        sys.exit(FAILED_EXIT)


def _has_entry(models_dir: Path, model_id: str) -> bool:
    return (models_dir / model_id).is_dir()
