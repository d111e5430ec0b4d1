"""`psma-node dashboard hash-password` prints a hash the dashboard accepts for that password only."""

from __future__ import annotations

import subprocess
import sys

from dicom_node.web.auth import verify_password
from tests.support.node import REPO

COMMAND = [
    sys.executable,
    "-m",
    "dicom_node.cli.main",
    "dashboard",
    "hash-password",
    "--iterations",
    "100000",
]


def test_hash_from_stdin_verifies() -> None:
    done = subprocess.run(
        COMMAND, input="a long passphrase\n", capture_output=True, text=True, cwd=REPO, timeout=60
    )
    assert done.returncode == 0, done.stderr
    encoded = done.stdout.strip()
    assert encoded.startswith("pbkdf2_sha256$100000$")
    assert verify_password("a long passphrase", encoded)
    assert not verify_password("a long passphrase\n", encoded)


def test_short_password_is_refused() -> None:
    done = subprocess.run(COMMAND, input="short\n", capture_output=True, text=True, cwd=REPO, timeout=60)
    assert done.returncode == 1
    assert "at least 8 characters" in done.stderr and done.stdout == ""
