"""The README is exercised as written: its two commands, and the walkthrough run step by step."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.node import REPO, NodeProcess, free_port
from tests.support.wait import wait_for

README = (REPO / "README.md").read_text()


def _blocks(text: str) -> list[str]:
    return re.findall(r"```sh\n(.*?)```", text, flags=re.S)


def _commands(block: str) -> list[str]:
    return [line.split("  #")[0].strip() for line in block.splitlines()
            if line.strip() and not line.strip().startswith("#")]


def test_readme_opens_with_exactly_the_two_commands() -> None:
    first = _blocks(README)[0]
    assert _commands(first) == ["make run", "make test"]
    assert README.index("```sh") < README.index("##")


def test_ci_runs_the_readme_test_command_and_nothing_else() -> None:
    script = (REPO / ".ci" / "run").read_text()
    commands = [line for line in script.splitlines()
                if line.strip() and not line.startswith("#") and not line.startswith("set ")
                and not line.startswith("cd ")]
    assert commands == ["make test"]


def test_make_targets_set_up_everything_they_need() -> None:
    makefile = (REPO / "Makefile").read_text()
    assert "torch==2.13.0" in makefile
    assert re.search(r"^run: setup", makefile, flags=re.M)
    assert re.search(r"^test: setup", makefile, flags=re.M)
    packages = (REPO / "deploy" / "install-system-packages.sh").read_text()
    for package in ("dcmtk", "orthanc", "dicom3tools", "dcm2niix", "chromium", "postgresql"):
        assert package in packages
    assert "apt-get update" in packages


def _walkthrough() -> list[str]:
    section = README.split("## Five-minute walkthrough", 1)[1].split("### Pointing", 1)[0]
    return [command for block in _blocks(section) for command in _commands(block)]


def _wait_until_done(env: dict[str, str], cwd: Path, timeout: float = 120.0) -> str:
    listings = [""]

    def settled() -> str | None:
        listings[0] = subprocess.run([".venv/bin/psma-node", "studies", "list"], cwd=cwd, env=env,
                                     capture_output=True, text=True, timeout=60).stdout
        return listings[0] if re.search(r"\b(done|failed|rejected)\b", listings[0]) else None

    return wait_for(settled, timeout=timeout, what="the study to be analysed", log=lambda: listings[0],
                    interval=1.0)


def test_walkthrough_runs_verbatim(tmp_path: Path) -> None:
    """Each walkthrough command runs as a new user would type it, against a node on free ports."""
    for tool in ("dsrdump", "dcmj2pnm", "curl"):
        if shutil.which(tool) is None:
            pytest.fail(f"{tool} missing: `make test` installs it")
    work = tmp_path / "site"
    work.mkdir()
    shutil.copy(REPO / "config.yaml", work / "config.yaml")
    (work / ".venv").symlink_to(Path(sys.prefix))
    dicom_port, web_port = free_port(), free_port()
    demo = tmp_path / "psma-demo"
    env = {**os.environ, "PSMA_NODE_CONFIG": str(work / "config.yaml"),
           "PSMA_NODE_NODE__PORT": str(dicom_port), "PSMA_NODE_DASHBOARD__PORT": str(web_port)}

    def adapt(command: str) -> str:
        return (command.replace("11112", str(dicom_port)).replace("8080", str(web_port))
                .replace("/tmp/psma-demo", str(demo)))

    commands = _walkthrough()
    assert commands[0] == "make run"
    node = NodeProcess(work / "config.yaml", extra_env=env)
    node.port = dicom_port
    with node:
        for command in commands[1:]:
            result = subprocess.run(["bash", "-c", adapt(command)], cwd=work, env=env,
                                    capture_output=True, text=True, timeout=300)
            assert result.returncode == 0, f"{command!r} failed:\n{result.stdout}\n{result.stderr}"
            if "--send" in command:
                listing = _wait_until_done(env, work)
                accession = re.search(r"accession (\S+)", result.stdout)
                assert accession and accession.group(1) in listing
                assert "done" in listing
                assert f"studies show {accession.group(1)}" in README
            if "healthz" in command:
                assert "ok" in result.stdout.lower()
            if command.startswith("dsrdump"):
                assert "Imaging Measurement Report" in result.stdout
                assert "E:" not in result.stderr
    pngs = list((work / "var" / "results").rglob("SC-*.png"))
    assert len(pngs) >= 3
    assert all(p.stat().st_size > 10_000 for p in pngs)
