"""Checkpoints are untrusted input: accepted formats load safely, everything else fails clearly."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest
import torch

from inference.checkpoints import (
    CheckpointError,
    ChecksumMismatch,
    WeightsMissing,
    import_checkpoint,
    installed_models,
    load_model,
    read_state_dict,
    verify_installed,
)
from inference.model_specs import get_spec
from tests.inference.studies import write_random_checkpoint

CPU = torch.device("cpu")


class Payload:
    """An arbitrary object: unpickling it would run code, so weights_only loading must refuse it."""

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.system, ("touch /tmp/psma-node-checkpoint-executed",))


@pytest.mark.parametrize("layout", ["net", "net+opt", "bare"])
def test_monai_and_bare_checkpoints_import_and_load_with_the_same_weights(
    tmp_path: Path, layout: str
) -> None:
    source = write_random_checkpoint(tmp_path / f"{layout}.pt", layout=layout, seed=1)
    installed = import_checkpoint(source, get_spec("D"), tmp_path / "models")
    assert installed.sha256 == hashlib.sha256(source.read_bytes()).hexdigest()
    assert installed.path.read_bytes() == source.read_bytes()
    loaded = load_model(tmp_path / "models", get_spec("D"), CPU)
    expected, _ = read_state_dict(source)
    for key, tensor in loaded.net.state_dict().items():
        assert torch.equal(tensor, expected[key]), key
    assert not loaded.net.training
    assert (
        installed_models(tmp_path / "models")["D"].checkpoint_format
        == {"net": "monai-net", "net+opt": "monai-net+opt", "bare": "state-dict"}[layout]
    )


def test_a_checkpoint_carrying_code_is_refused_without_running_it(tmp_path: Path) -> None:
    marker = Path("/tmp/psma-node-checkpoint-executed")
    marker.unlink(missing_ok=True)
    path = tmp_path / "evil.pt"
    torch.save({"net": {"features.conv0.weight": torch.zeros(1)}, "extra": Payload()}, path)
    with pytest.raises(CheckpointError, match="would execute code"):
        import_checkpoint(path, get_spec("D"), tmp_path / "models")
    assert not marker.exists()
    assert not (tmp_path / "models" / "D").exists()


def test_a_corrupt_file_is_refused(tmp_path: Path) -> None:
    good = write_random_checkpoint(tmp_path / "good.pt")
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(good.read_bytes()[: good.stat().st_size // 3])
    with pytest.raises(CheckpointError, match="corrupt or not a torch checkpoint"):
        import_checkpoint(corrupt, get_spec("D"), tmp_path / "models")
    text = tmp_path / "notes.pt"
    text.write_text("this is not a checkpoint")
    with pytest.raises(CheckpointError, match="corrupt or not a torch checkpoint"):
        import_checkpoint(text, get_spec("D"), tmp_path / "models")


def test_a_state_dict_of_the_wrong_shape_is_refused(tmp_path: Path) -> None:
    two_channels = write_random_checkpoint(tmp_path / "model_b.pt", in_channels=2)
    with pytest.raises(
        CheckpointError, match=r"does not fit model D .*features.conv0.weight: \(64, 2, 7, 7, 7\)"
    ):
        import_checkpoint(two_channels, get_spec("D"), tmp_path / "models")
    other = tmp_path / "other.pt"
    torch.save({"net": {"layer.weight": torch.zeros(3, 3)}}, other)
    with pytest.raises(CheckpointError, match="tensors missing"):
        import_checkpoint(other, get_spec("D"), tmp_path / "models")
    # The same file is right for a 2-channel model.
    assert import_checkpoint(two_channels, get_spec("B"), tmp_path / "models").model_id == "B"


def test_a_sha256_mismatch_is_refused_at_import_and_at_load(tmp_path: Path) -> None:
    source = write_random_checkpoint(tmp_path / "d.pt")
    digest = hashlib.sha256(source.read_bytes()).hexdigest()
    with pytest.raises(ChecksumMismatch, match="expected " + "0" * 64):
        import_checkpoint(source, get_spec("D", {"D": "0" * 64}), tmp_path / "models")
    import_checkpoint(source, get_spec("D", {"D": digest}), tmp_path / "models")
    assert verify_installed(tmp_path / "models", get_spec("D", {"D": digest})).sha256 == digest
    with pytest.raises(ChecksumMismatch):
        load_model(tmp_path / "models", get_spec("D", {"D": "f" * 64}), CPU)


def test_weights_changed_after_import_are_detected(tmp_path: Path) -> None:
    installed = import_checkpoint(
        write_random_checkpoint(tmp_path / "d.pt"), get_spec("D"), tmp_path / "models"
    )
    write_random_checkpoint(installed.path, seed=99)
    with pytest.raises(ChecksumMismatch, match="changed since import"):
        load_model(tmp_path / "models", get_spec("D"), CPU)


def test_missing_weights_name_the_zenodo_record_and_the_import_command(tmp_path: Path) -> None:
    with pytest.raises(WeightsMissing) as raised:
        load_model(tmp_path / "models", get_spec("C"), CPU)
    message = str(raised.value)
    assert "doi:10.5281/zenodo.15174580" in message
    assert "psma-node models import FILE --as C" in message


def test_a_loaded_model_is_kept_until_its_checkpoint_is_replaced_then_the_new_weights_are_used(
    tmp_path: Path,
) -> None:
    models = tmp_path / "models"
    import_checkpoint(write_random_checkpoint(tmp_path / "first.pt", seed=1), get_spec("D"), models)
    first = load_model(models, get_spec("D"), CPU)
    assert load_model(models, get_spec("D"), CPU) is first  # no second hash and build for the next study
    replacement = write_random_checkpoint(tmp_path / "second.pt", seed=2)
    installed = import_checkpoint(replacement, get_spec("D"), models)
    second = load_model(models, get_spec("D"), CPU)
    assert second is not first
    assert second.sha256 == installed.sha256 != first.sha256
    expected, _ = read_state_dict(replacement)
    for key, tensor in second.net.state_dict().items():
        assert torch.equal(tensor, expected[key]), key


def test_a_kept_model_whose_file_is_damaged_afterwards_is_refused_on_the_next_load(tmp_path: Path) -> None:
    models = tmp_path / "models"
    installed = import_checkpoint(write_random_checkpoint(tmp_path / "d.pt"), get_spec("D"), models)
    load_model(models, get_spec("D"), CPU)
    installed.path.write_bytes(b"\x00" * 1024)
    with pytest.raises(ChecksumMismatch, match="changed since import"):
        load_model(models, get_spec("D"), CPU)


def test_a_kept_model_is_checked_again_when_the_expected_sha256_changes(tmp_path: Path) -> None:
    models = tmp_path / "models"
    import_checkpoint(write_random_checkpoint(tmp_path / "d.pt"), get_spec("D"), models)
    load_model(models, get_spec("D"), CPU)
    with pytest.raises(ChecksumMismatch, match="expected f{64}"):
        load_model(models, get_spec("D", {"D": "f" * 64}), CPU)
