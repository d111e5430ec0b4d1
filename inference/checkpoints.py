"""Checkpoints: import, verify and load the published weights, which are untrusted input.

A checkpoint is read only with `torch.load(weights_only=True)`, so a file carrying pickled code is refused
instead of executed. Imported files live in `models_dir/<MODEL>/` with a manifest recording their sha256,
which every load re-checks (and compares with a configured expected sha256), so the result's provenance
names exactly the bytes that produced it.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import pickle
import shutil
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path
from typing import IO, Any

import torch

from inference.model_specs import SPECS, ZENODO_DOI, ModelSpec
from inference.network import build_network

MANIFEST = "manifest.json"


class CheckpointError(Exception):
    """A checkpoint that cannot be used; the message says which file and why."""


class WeightsMissing(CheckpointError):
    """No weights installed for a model; the message says where to get them and how to import them."""


class ChecksumMismatch(CheckpointError):
    """The file's sha256 differs from the one expected."""


@dataclass(frozen=True)
class InstalledModel:
    model_id: str
    path: Path
    sha256: str
    size_bytes: int
    imported_at: str
    source_name: str
    checkpoint_format: str


@dataclass
class LoadedModel:
    spec: ModelSpec
    net: torch.nn.Module
    sha256: str
    path: Path
    device: torch.device


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def missing_weights_message(model_id: str, models_dir: Path) -> str:
    return (
        f"weights for model {model_id} are not installed in {models_dir}: download the authors' checkpoint "
        f"from Zenodo (doi:{ZENODO_DOI}, https://doi.org/{ZENODO_DOI}) and install it with "
        f"`psma-node models import FILE --as {model_id}`"
    )


def read_state_dict(path: Path) -> tuple[dict[str, torch.Tensor], str]:
    """The network state dict in a checkpoint file, and which format held it.

    Accepted: MONAI CheckpointSaver files `{"net": state_dict}` and `{"net": ..., "opt": ...}`, and a bare
    state dict. Loaded with weights_only=True: anything that is not tensors and plain containers is refused.
    """
    try:
        content = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError as exc:
        raise CheckpointError(f"checkpoint {path} does not exist") from exc
    except pickle.UnpicklingError as exc:
        if "weights only" in str(exc).lower() or "weights_only" in str(exc).lower():
            raise CheckpointError(
                f"checkpoint {path} contains Python objects other than tensors; refused because loading "
                "it would execute code (only plain state dicts are accepted)"
            ) from exc
        raise CheckpointError(f"checkpoint {path} is not a readable torch checkpoint: {exc}") from exc
    except Exception as exc:  # a damaged file can make torch's unpickler fail in many ways
        raise CheckpointError(
            f"checkpoint {path} is corrupt or not a torch checkpoint: {str(exc).splitlines()[0]}"
        ) from exc
    return _extract_state_dict(content, path)


def _extract_state_dict(content: Any, path: Path) -> tuple[dict[str, torch.Tensor], str]:
    if not isinstance(content, Mapping):
        raise CheckpointError(f"checkpoint {path} holds a {type(content).__name__}, not a state dict")
    if "net" in content:
        state, kind = content["net"], "monai-net+opt" if "opt" in content else "monai-net"
    elif content and all(isinstance(value, torch.Tensor) for value in content.values()):
        state, kind = content, "state-dict"
    else:
        keys = ", ".join(sorted(str(k) for k in content)[:8])
        raise CheckpointError(
            f"checkpoint {path} has no 'net' entry and is not a bare state dict (top-level keys: {keys})"
        )
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"checkpoint {path}: 'net' is not a state dict of tensors")
    return {_strip_parallel_prefix(str(k)): v for k, v in state.items()}, kind


def _strip_parallel_prefix(key: str) -> str:
    """Checkpoints saved from DataParallel prefix every key with 'module.'."""
    return key[len("module.") :] if key.startswith("module.") else key


@lru_cache(maxsize=4)
def _reference_shapes(in_channels: int) -> dict[str, tuple[int, ...]]:
    return {key: tuple(value.shape) for key, value in build_network(in_channels).state_dict().items()}


def check_state_dict(state: Mapping[str, torch.Tensor], spec: ModelSpec, path: Path) -> None:
    """The state dict fits the spec's DenseNet121 exactly: same keys, same shapes."""
    reference = _reference_shapes(spec.in_channels)
    missing = [k for k in reference if k not in state]
    unexpected = [k for k in state if k not in reference]
    wrong = [
        f"{k}: {tuple(state[k].shape)} instead of {shape}"
        for k, shape in reference.items()
        if k in state and tuple(state[k].shape) != shape
    ]
    problems = []
    if wrong:
        problems.append(f"{len(wrong)} tensors have the wrong shape (e.g. {'; '.join(wrong[:3])})")
    if missing:
        problems.append(f"{len(missing)} tensors missing (e.g. {', '.join(missing[:3])})")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected tensors (e.g. {', '.join(unexpected[:3])})")
    if problems:
        raise CheckpointError(
            f"checkpoint {path} does not fit model {spec.id} (DenseNet121, 3-D, {spec.in_channels} input "
            f"channels, 2 outputs): " + "; ".join(problems)
        )


def verify_sha256(path: Path, actual: str, expected: str | None) -> None:
    if expected is not None and actual.lower() != expected.lower():
        raise ChecksumMismatch(f"checkpoint {path} has sha256 {actual}, expected {expected.lower()}")


def import_checkpoint(
    source: Path, spec: ModelSpec, models_dir: Path, expected_sha256: str | None = None
) -> InstalledModel:
    """Validate `source` as weights for `spec` and install it (atomically) with its manifest.

    The file is copied byte for byte, so its sha256 stays the one the authors published.
    """
    source = Path(source)
    if not source.is_file():
        raise CheckpointError(f"checkpoint {source} does not exist or is not a file")
    actual = sha256_file(source)
    verify_sha256(source, actual, expected_sha256 or spec.expected_sha256)
    state, kind = read_state_dict(source)
    check_state_dict(state, spec, source)
    target_dir = models_dir / spec.id
    target_dir.mkdir(parents=True, exist_ok=True)
    target = target_dir / spec.weights_file
    _atomic_copy(source, target)
    installed = InstalledModel(
        model_id=spec.id,
        path=target,
        sha256=actual,
        size_bytes=target.stat().st_size,
        imported_at=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        source_name=source.name,
        checkpoint_format=kind,
    )
    manifest = {**asdict(installed), "path": target.name}
    manifest_bytes = json.dumps(manifest, indent=2).encode()
    _atomic_write(target_dir / MANIFEST, lambda handle: handle.write(manifest_bytes))
    return installed


def _atomic_write(target: Path, fill: Callable[[IO[bytes]], object]) -> None:
    """`fill` writes the content to a temporary file beside `target`, which replaces it once fsynced."""
    with tempfile.NamedTemporaryFile(dir=target.parent, delete=False, suffix=".part") as handle:
        tmp = Path(handle.name)
        fill(handle)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, target)


def _atomic_copy(source: Path, target: Path) -> None:
    with open(source, "rb") as src:
        _atomic_write(target, lambda handle: shutil.copyfileobj(src, handle, 1 << 20))


def installed_model(models_dir: Path, model_id: str) -> InstalledModel | None:
    """The manifest of an imported model, or None when nothing (usable) is installed."""
    manifest_path = models_dir / model_id / MANIFEST
    if not manifest_path.is_file():
        return None
    try:
        data = json.loads(manifest_path.read_text())
        return InstalledModel(**{**data, "path": manifest_path.parent / data["path"]})
    except (ValueError, TypeError, KeyError) as exc:
        raise CheckpointError(f"model registry entry {manifest_path} is unreadable: {exc}") from exc


def installed_models(models_dir: Path) -> dict[str, InstalledModel]:
    return {
        model_id: found for model_id in SPECS if (found := installed_model(models_dir, model_id)) is not None
    }


def verify_installed(models_dir: Path, spec: ModelSpec) -> InstalledModel:
    """Re-hash and re-read an installed checkpoint: unchanged since import, matches any expected sha."""
    return _verified_state(models_dir, spec)[0]


def _verified_state(models_dir: Path, spec: ModelSpec) -> tuple[InstalledModel, dict[str, torch.Tensor]]:
    installed = installed_model(models_dir, spec.id)
    if installed is None:
        raise WeightsMissing(missing_weights_message(spec.id, models_dir))
    if not installed.path.is_file():
        raise CheckpointError(f"weights file {installed.path} listed in the registry is missing")
    actual = sha256_file(installed.path)
    if actual != installed.sha256:
        raise ChecksumMismatch(
            f"weights file {installed.path} changed since import: sha256 {actual}, "
            f"imported {installed.sha256}"
        )
    verify_sha256(installed.path, actual, spec.expected_sha256)
    state, _ = read_state_dict(installed.path)
    check_state_dict(state, spec, installed.path)
    return installed, state


_CACHE: dict[tuple[str, str], tuple[tuple[str, int, int, str], LoadedModel]] = {}
"""This process's verified networks by (weights file, device), with the file state they were verified on."""


def load_model(models_dir: Path, spec: ModelSpec, device: torch.device) -> LoadedModel:
    """The network with the installed weights, on `device`, in eval mode.

    Hashing the 45 MB file and building the network cost ~1 s, so a process keeps the verified network and
    re-verifies only when the file (size, mtime), its registry sha256 or the expected sha256 changed: a
    replaced or damaged checkpoint is hashed and read again before it is used.
    """
    installed = installed_model(models_dir, spec.id)
    if installed is None or not installed.path.is_file():
        raise WeightsMissing(missing_weights_message(spec.id, models_dir))
    stat = installed.path.stat()
    slot = (str(installed.path), str(device))
    state_key = (f"{installed.sha256}/{spec.expected_sha256 or ''}", stat.st_size, stat.st_mtime_ns,
                 str(spec.in_channels))
    cached = _CACHE.get(slot)
    if cached is not None and cached[0] == state_key:
        return cached[1]
    _CACHE.pop(slot, None)
    installed, state = _verified_state(models_dir, spec)
    net = build_network(spec.in_channels)
    net.load_state_dict(state, strict=True)
    net.to(device).eval()
    loaded = LoadedModel(spec=spec, net=net, sha256=installed.sha256, path=installed.path, device=device)
    _CACHE[slot] = (state_key, loaded)
    return loaded
