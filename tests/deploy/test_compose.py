"""deploy/docker-compose.yml: the node, PostgreSQL and Orthanc are wired to each other consistently.

`docker compose config` validates the file where the compose plugin exists; the wiring checks parse the
YAML and the files it mounts, so they run everywhere.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from sqlalchemy.engine import make_url

from dicom_node.config import load_settings
from tests.support.node import REPO

DEPLOY = REPO / "deploy"
COMPOSE = DEPLOY / "docker-compose.yml"


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())


def _mounts(service: dict[str, Any]) -> dict[str, str]:
    """Container path -> host source, for bind mounts (relative to deploy/) and named volumes."""
    found = {}
    for entry in service.get("volumes", []):
        source, target = entry.split(":")[:2]
        found[target] = source
    return found


def _host_file(source: str) -> Path:
    return (DEPLOY / source).resolve()


def test_docker_compose_config_accepts_the_file() -> None:
    docker = shutil.which("docker")
    if docker is None or subprocess.run([docker, "compose", "version"], capture_output=True).returncode != 0:
        pytest.skip("the docker compose plugin is not installed here: only the YAML wiring is checked")
    result = subprocess.run([docker, "compose", "-f", str(COMPOSE), "config", "--quiet"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr


def test_services_volumes_and_published_ports(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert set(services) == {"psma-node", "postgres", "orthanc"}
    declared = set(compose["volumes"])
    for service in services.values():
        for target, source in _mounts(service).items():
            if source.startswith("."):
                assert _host_file(source).exists(), f"{source} (mounted at {target}) does not exist"
            else:
                assert source in declared, f"named volume {source} is not declared"
        for port in service.get("ports", []):
            assert port.startswith("127.0.0.1:"), f"{port} is published beyond this machine"
    node = services["psma-node"]
    context = (DEPLOY / node["build"]["context"]).resolve()
    assert context == REPO and (context / node["build"]["dockerfile"]).is_file()
    assert _mounts(node)["/var/lib/psma-node"] == "node-data"
    assert node["depends_on"]["postgres"]["condition"] == "service_healthy"


def _node_settings(compose: dict[str, Any]) -> Any:
    node = compose["services"]["psma-node"]
    config = _host_file(_mounts(node)["/etc/psma-node/config.yaml"])
    environment = {k: re.sub(r"\$\{(\w+):-([^}]*)\}", r"\2", v) for k, v in node["environment"].items()}
    return load_settings(config, environ=environment)


def test_node_config_matches_ports_database_and_volume(compose: dict[str, Any]) -> None:
    settings = _node_settings(compose)
    services = compose["services"]
    published = {int(p.split(":")[-1]) for p in services["psma-node"]["ports"]}
    assert published == {settings.node.port, settings.dashboard.port}
    assert settings.dashboard.bind == "0.0.0.0" and settings.node.bind == "0.0.0.0"
    assert Path("/var/lib/psma-node") in settings.storage.directory.parents

    url = make_url(settings.database.url.get_secret_value())
    postgres = services["postgres"]["environment"]
    assert url.host == "postgres" and url.username == postgres["POSTGRES_USER"]
    assert url.database == postgres["POSTGRES_DB"]
    assert url.password == re.sub(r"\$\{\w+:-([^}]*)\}", r"\1", postgres["POSTGRES_PASSWORD"])


def test_orthanc_routes_to_the_node_and_the_node_sends_back(compose: dict[str, Any]) -> None:
    settings = _node_settings(compose)
    orthanc_service = compose["services"]["orthanc"]
    mounts = _mounts(orthanc_service)
    orthanc = json.loads(_host_file(mounts["/etc/orthanc/orthanc.json"]).read_text())

    ae_title, host, port = orthanc["DicomModalities"]["psma-node"]
    assert (ae_title, host, port) == (settings.node.ae_title, "psma-node", settings.node.port)
    assert orthanc["DicomAet"] in {ae.ae_title for ae in settings.node.allowed_calling_aes}

    (destination,) = settings.results.destinations
    assert destination.kind == "dicom" and destination.host == "orthanc"
    assert (destination.ae_title, destination.port) == (orthanc["DicomAet"], orthanc["DicomPort"])

    (script,) = orthanc["LuaScripts"]
    lua = _host_file(mounts[script]).read_text()
    assert "function OnStableStudy" in lua and "'psma-node'" in lua
    (metadata,) = orthanc["UserMetadata"]
    assert f"'{metadata}'" in lua
    published = {int(p.split(":")[-1]) for p in orthanc_service["ports"]}
    assert published == {orthanc["DicomPort"], orthanc["HttpPort"]}


def test_gpu_override_builds_the_cuda_image_for_the_node_service(compose: dict[str, Any]) -> None:
    override = yaml.safe_load((DEPLOY / "docker-compose.gpu.yml").read_text())
    assert set(override["services"]) == {"psma-node"} <= set(compose["services"])
    node = override["services"]["psma-node"]
    assert (REPO / node["build"]["dockerfile"]).is_file() and node["build"]["dockerfile"].endswith(".cuda")
    (device,) = node["deploy"]["resources"]["reservations"]["devices"]
    assert device["driver"] == "nvidia" and "gpu" in device["capabilities"]
