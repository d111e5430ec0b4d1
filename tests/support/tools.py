"""The Debian tools (dcmtk, dicom3tools, Orthanc, Chromium) the tests run against, found or failed loudly."""

from __future__ import annotations

import shutil

import pytest


def require_tool(name: str) -> str:
    """The path of a Debian tool the tests use; its absence fails loudly (`make test` installs it)."""
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} not found: run the README's test command (`make test`), which installs it")
    return path
