"""Run the Debian validators the results must pass: dciodvfy (dicom3tools) and dsrdump (dcmtk)."""

from __future__ import annotations

import subprocess
from pathlib import Path

from tests.support.tools import require_tool


def dciodvfy_errors(path: Path) -> list[str]:
    """Lines of dciodvfy's report that start with "Error" (it writes the report on stderr)."""
    run = subprocess.run([require_tool("dciodvfy"), str(path)], capture_output=True, text=True, timeout=60)
    return [line for line in (run.stderr + run.stdout).splitlines() if line.startswith("Error")]


def dsrdump_problems(path: Path) -> tuple[int, list[str], str]:
    """dsrdump's exit status, its "E:" lines, and the rendered document text."""
    run = subprocess.run([require_tool("dsrdump"), str(path)], capture_output=True, text=True, timeout=60)
    lines = (run.stderr + run.stdout).splitlines()
    return run.returncode, [line for line in lines if line.startswith("E:")], run.stdout
