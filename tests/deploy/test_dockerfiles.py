"""Basic checks of the container recipes (no Docker daemon here): base, user, ports, health, entrypoint,
and that everything they copy exists and survives the .dockerignore next to them."""

from __future__ import annotations

import fnmatch
import json
import re
from pathlib import Path

import pytest

from dicom_node.config import load_settings
from tests.support.node import REPO

DOCKERFILES = {"Dockerfile": "/whl/cpu", "Dockerfile.cuda": "/whl/cu"}


def _instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    joined = re.sub(r"\\\n", " ", path.read_text())
    found = []
    for line in joined.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            found.append((keyword.upper(), rest.strip()))
    return found


def _ignored(relative: str, patterns: list[str]) -> bool:
    """Docker's rule: the last matching pattern wins; `!` re-includes."""
    ignored = False
    for pattern in patterns:
        negated = pattern.startswith("!")
        bare = pattern.lstrip("!")
        if fnmatch.fnmatch(relative, bare) or relative.startswith(bare.rstrip("/") + "/"):
            ignored = not negated
    return ignored


@pytest.mark.parametrize("name", sorted(DOCKERFILES))
def test_dockerfile_runs_the_node_as_a_non_root_user(name: str) -> None:
    steps = _instructions(REPO / "deploy" / name)
    keywords = [keyword for keyword, _ in steps]
    args = dict(reversed(steps))
    assert args["FROM"] == "python:3.11-slim"
    assert any(k == "ARG" and a.startswith("TORCH_INDEX_URL=") and DOCKERFILES[name] in a for k, a in steps)
    user = [a for k, a in steps if k == "USER"]
    assert user and user[-1] not in ("root", "0")
    assert keywords.index("USER") < keywords.index("ENTRYPOINT")
    assert set(args["EXPOSE"].split()) == {"11112", "8080"}
    assert "/var/lib/psma-node" in args["VOLUME"]
    assert "/healthz" in args["HEALTHCHECK"]
    assert json.loads(args["ENTRYPOINT"]) == ["psma-node", "--config", "/etc/psma-node/config.yaml"]
    assert json.loads(args["CMD"]) == ["serve"]


@pytest.mark.parametrize("name", sorted(DOCKERFILES))
def test_everything_copied_exists_and_is_not_ignored(name: str) -> None:
    dockerfile = REPO / "deploy" / name
    patterns = [line.strip() for line in (dockerfile.parent / f"{name}.dockerignore").read_text().splitlines()
                if line.strip() and not line.startswith("#")]
    copies = [arg for keyword, arg in _instructions(dockerfile) if keyword == "COPY"]
    assert copies
    for arg in copies:
        sources = [part for part in arg.split() if not part.startswith("--")][:-1]
        for source in sources:
            assert (REPO / source).exists(), f"{name}: COPY {source} does not exist"
            assert not _ignored(source, patterns), f"{name}: COPY {source} is excluded by the .dockerignore"
    packaged = {"dicom_node", "inference", "db", "pyproject.toml"}
    assert packaged <= {source for arg in copies for source in arg.split()}


def test_image_default_config_is_the_single_box_example_and_valid() -> None:
    copies = [arg for keyword, arg in _instructions(REPO / "deploy" / "Dockerfile") if keyword == "COPY"]
    (config_copy,) = [arg for arg in copies if arg.endswith("/etc/psma-node/config.yaml")]
    source = config_copy.split()[-2]
    settings = load_settings(REPO / source, environ={})
    assert settings.dashboard.port == 8080  # the HEALTHCHECK's port
    assert settings.dashboard.enabled
